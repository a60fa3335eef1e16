package kv

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
)

// OnCommit tells which tables a commit wrote records of, as replaced or
// deleted (Changed) or new (Created), before the commit's Updates return;
// a failed fn tells nothing.
func TestOnCommit(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	var mu sync.Mutex
	var got []Commit
	s.OnCommit(func(c Commit) {
		mu.Lock()
		got = append(got, c)
		mu.Unlock()
	})
	last := func() Commit {
		mu.Lock()
		defer mu.Unlock()
		if len(got) == 0 {
			return Commit{}
		}
		c := got[len(got)-1]
		got = nil
		return c
	}
	update := func(fn func(tx *Txn) error) error { return s.Update(ctx, fn) }

	if err := update(func(tx *Txn) error {
		if err := tx.Put("a", "1", "x"); err != nil {
			return err
		}
		return tx.Put("b", "1", "x")
	}); err != nil {
		t.Fatal(err)
	}
	if c := last(); !slices.Equal(c.Created, []string{"a", "b"}) || len(c.Changed) != 0 {
		t.Errorf("two new records: %+v", c)
	}
	if err := update(func(tx *Txn) error {
		if err := tx.Put("a", "1", "y"); err != nil {
			return err
		}
		return tx.Delete("b", "1")
	}); err != nil {
		t.Fatal(err)
	}
	if c := last(); !slices.Equal(c.Changed, []string{"a", "b"}) || len(c.Created) != 0 || !c.Touched("a", false) || c.Touched("c", true) {
		t.Errorf("a replaced, b deleted: %+v", c)
	}
	boom := errors.New("boom")
	if err := update(func(tx *Txn) error {
		if err := tx.Put("c", "1", "x"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if c := last(); len(c.Changed)+len(c.Created) != 0 {
		t.Errorf("a failed update told %+v", c)
	}
	if err := update(func(tx *Txn) error {
		var v string
		return tx.Get("a", "1", &v)
	}); err != nil {
		t.Fatal(err)
	}
	if c := last(); len(c.Changed)+len(c.Created) != 0 {
		t.Errorf("a read-only update told %+v", c)
	}
}
