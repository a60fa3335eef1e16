package kv

import (
	"context"
	"errors"
	"testing"
)

// TestLookupUnique: the point read answers as Lookup does, through puts
// that move a unique value, deletes, and indexes that are not unique.
func TestLookupUnique(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	email := func(v string) Index { return Index{Name: "email", Value: v, Unique: true} }
	steps := []func(tx *Txn) error{
		func(tx *Txn) error {
			return tx.Put("users", "01", user{Name: "alice"}, email("a@x"), Index{Name: "team", Value: "t"})
		},
		func(tx *Txn) error {
			return tx.Put("users", "02", user{Name: "bob"}, email("b@x"), Index{Name: "team", Value: "t"})
		},
		func(tx *Txn) error { return tx.Put("users", "01", user{Name: "alice"}, email("c@x")) }, // a@x released
		func(tx *Txn) error { return tx.Delete("users", "02") },
	}
	queries := [][2]string{{"email", "a@x"}, {"email", "b@x"}, {"email", "c@x"}, {"email", "zz"}, {"team", "t"}}
	for i, step := range steps {
		if err := s.Update(ctx, step); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		for _, q := range queries {
			err := s.View(ctx, func(tx *Txn) error {
				want, wantErr := tx.Lookup("users", q[0], q[1])
				got, err := tx.LookupUnique("users", q[0], q[1])
				if got != want || errors.Is(err, ErrNotFound) != errors.Is(wantErr, ErrNotFound) {
					t.Errorf("step %d %s=%s: LookupUnique = %q, %v; Lookup = %q, %v", i, q[0], q[1], got, err, want, wantErr)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	err := s.View(ctx, func(tx *Txn) error {
		if id, err := tx.LookupUnique("users", "email", "c@x"); err != nil || id != "01" {
			t.Errorf("LookupUnique c@x = %q, %v; want 01", id, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
