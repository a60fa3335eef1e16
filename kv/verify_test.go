package kv

import (
	"context"
	"strings"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// TestVerify damages a sound store's keys one way each, behind kv's back,
// and checks that Verify names exactly that damage.
func TestVerify(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func(txn *badger.Txn) error
		want   string // "" = no problem
	}{
		{"sound", nil, ""},
		{"index entry missing", func(txn *badger.Txn) error {
			return txn.Delete(indexKey("users", "team", "red", "a"))
		}, `record users/a: its index entry team="red" is missing`},
		{"index entry without record", func(txn *badger.Txn) error {
			return txn.Set(indexKey("users", "team", "red", "ghost"), nil)
		}, `index entry users/team="red" points to ghost, which does not exist`},
		{"index entry the record does not declare", func(txn *badger.Txn) error {
			return txn.Set(indexKey("users", "team", "blue", "a"), nil)
		}, `index entry users/team="blue" points to a, which does not declare it`},
		{"unique claim held by another", func(txn *badger.Txn) error {
			return txn.Set(uniqueKey("users", "email", "a@x"), []byte("b"))
		}, `is held by "b"`},
		{"unique claim missing", func(txn *badger.Txn) error {
			return txn.Delete(uniqueKey("users", "email", "b@x"))
		}, `record users/b: its unique claim email="b@x" is missing`},
		{"envelope garbled", func(txn *badger.Txn) error {
			return txn.Set(recordKey("users", "c"), []byte{9, 9, 9})
		}, `record users/c: kv: corrupt record envelope: unknown version`},
		{"JSON garbled", func(txn *badger.Txn) error {
			return txn.Set(recordKey("users", "c"), encodeEnvelope(nil, []byte("{not json")))
		}, `record users/c: its JSON does not parse`},
		{"stray key", func(txn *badger.Txn) error {
			return txn.Set([]byte("x/stray"), nil)
		}, `key "x/stray": not a record, index entry or unique claim`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := openTest(t, "")
			for _, r := range []struct {
				id, email string
			}{{"a", "a@x"}, {"b", "b@x"}, {"c", "c@x"}} {
				if err := put(t, s, "users", r.id, user{Name: r.id}, Index{Name: "email", Value: r.email, Unique: true}, Index{Name: "team", Value: "red"}); err != nil {
					t.Fatal(err)
				}
			}
			if tc.damage != nil {
				if err := s.db.Update(tc.damage); err != nil {
					t.Fatal(err)
				}
			}
			rep, err := s.Verify(context.Background(), 10)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Records != 3 {
				t.Errorf("%d records, want 3", rep.Records)
			}
			if tc.want == "" {
				if len(rep.Problems) != 0 {
					t.Errorf("problems in a sound store: %q", rep.Problems)
				}
				if rep.Indexes != 6 || rep.Uniques != 3 { // every entry has an i/ key; unique ones a u/ key too
					t.Errorf("%d index entries and %d unique claims, want 6 and 3", rep.Indexes, rep.Uniques)
				}
				return
			}
			found := false
			for _, p := range rep.Problems {
				found = found || strings.Contains(p, tc.want)
			}
			if !found {
				t.Errorf("problems %q, want one saying %q", rep.Problems, tc.want)
			}
		})
	}
}
