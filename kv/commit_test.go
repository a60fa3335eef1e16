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

// PutUnindexed and DeleteUnindexed write a record without reading it; Get
// and List read it like any other, and OnCommit reports the table changed.
func TestUnindexedWrites(t *testing.T) {
	s := openTest(t, t.TempDir())
	ctx := context.Background()
	var last Commit
	s.OnCommit(func(c Commit) { last = c })
	if err := s.Update(ctx, func(tx *Txn) error {
		for _, id := range []string{"1", "2", "3"} {
			if err := tx.PutUnindexed("box", id, "v"+id); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !last.Touched("box", false) {
		t.Errorf("commit %+v does not name the table as changed", last)
	}
	if err := s.Update(ctx, func(tx *Txn) error {
		if err := tx.DeleteUnindexed("box", "2"); err != nil {
			return err
		}
		return tx.DeleteUnindexed("box", "9") // not there: no error
	}); err != nil {
		t.Fatal(err)
	}
	var got []string
	if err := s.View(ctx, func(tx *Txn) error {
		return tx.List("box", Query{}, func(id string, decode func(any) error) error {
			var v string
			if err := decode(&v); err != nil {
				return err
			}
			got = append(got, id+"="+v)
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got, []string{"1=v1", "3=v3"}) {
		t.Errorf("records %v", got)
	}
}
