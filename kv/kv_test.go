package kv

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
)

type user struct {
	Name  string `json:"name"`
	Email string `json:"email"`
	N     int    `json:"n"`
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func openTest(t testing.TB, dir string) *Store {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func put(t *testing.T, s *Store, table, id string, v any, ix ...Index) error {
	t.Helper()
	return s.Update(context.Background(), func(tx *Txn) error { return tx.Put(table, id, v, ix...) })
}

func get(t *testing.T, s *Store, table, id string) (user, error) {
	t.Helper()
	var u user
	err := s.View(context.Background(), func(tx *Txn) error { return tx.Get(table, id, &u) })
	return u, err
}

func lookup(t *testing.T, s *Store, table, index, value string) (string, error) {
	t.Helper()
	var id string
	err := s.View(context.Background(), func(tx *Txn) error {
		var err error
		id, err = tx.Lookup(table, index, value)
		return err
	})
	return id, err
}

// list returns the ids and names matched by q.
func list(t *testing.T, s *Store, table string, q Query) ([]string, []string) {
	t.Helper()
	var ids, names []string
	err := s.View(context.Background(), func(tx *Txn) error {
		return tx.List(table, q, func(id string, decode func(any) error) error {
			var u user
			if err := decode(&u); err != nil {
				return err
			}
			ids = append(ids, id)
			names = append(names, u.Name)
			return nil
		})
	})
	if err != nil {
		t.Fatalf("List(%s, %+v): %v", table, q, err)
	}
	return ids, names
}

func count(t *testing.T, s *Store, table string, q Query) int {
	t.Helper()
	var n int
	err := s.View(context.Background(), func(tx *Txn) error {
		var err error
		n, err = tx.Count(table, q)
		return err
	})
	if err != nil {
		t.Fatalf("Count(%s, %+v): %v", table, q, err)
	}
	return n
}

func TestPutGet(t *testing.T) {
	s := openTest(t, "")
	want := user{Name: "alice", Email: "a@example.com", N: 7}
	if err := put(t, s, "users", "01", want); err != nil {
		t.Fatalf("Put: %v", err)
	}
	tests := []struct {
		name, table, id string
		want            user
		wantErr         error
	}{
		{"present", "users", "01", want, nil},
		{"missing id", "users", "02", user{}, ErrNotFound},
		{"other table", "projects", "01", user{}, ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := get(t, s, tt.table, tt.id)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Get err = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Fatalf("Get = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestInvalidNames(t *testing.T) {
	s := openTest(t, "")
	tests := []struct {
		name      string
		table, id string
		ix        []Index
	}{
		{"empty table", "", "1", nil},
		{"slash in table", "a/b", "1", nil},
		{"empty id", "users", "", nil},
		{"slash in id", "users", "1/2", nil},
		{"nul in id", "users", "1\x00", nil},
		{"slash in index name", "users", "1", []Index{{Name: "a/b", Value: "x"}}},
		{"empty index name", "users", "1", []Index{{Name: "", Value: "x"}}},
		{"nul in index value", "users", "1", []Index{{Name: "email", Value: "x\x00y"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := put(t, s, tt.table, tt.id, user{}, tt.ix...)
			if err == nil {
				t.Fatal("Put succeeded, want an error")
			}
		})
	}
	if n := count(t, s, "users", Query{}); n != 0 {
		t.Fatalf("Count after rejected puts = %d, want 0", n)
	}
	// A '/' in an index value is fine.
	if err := put(t, s, "users", "1", user{}, Index{Name: "path", Value: "a/b"}); err != nil {
		t.Fatalf("Put with '/' in value: %v", err)
	}
	if id, err := lookup(t, s, "users", "path", "a/b"); err != nil || id != "1" {
		t.Fatalf("Lookup = %q, %v; want 1", id, err)
	}
}

func TestUniqueIndex(t *testing.T) {
	s := openTest(t, "")
	email := func(v string) Index { return Index{Name: "email", Value: v, Unique: true} }
	if err := put(t, s, "users", "01", user{Name: "alice"}, email("a@x")); err != nil {
		t.Fatalf("Put alice: %v", err)
	}
	tests := []struct {
		name    string
		table   string
		id      string
		v       user
		ix      []Index
		wantErr error
	}{
		{"other id same value", "users", "02", user{Name: "mallory"}, []Index{email("a@x")}, ErrExists},
		{"other id other unique and clash", "users", "02", user{Name: "mallory"}, []Index{email("m@x"), email("a@x")}, ErrExists},
		{"same id same value", "users", "01", user{Name: "alice2"}, []Index{email("a@x")}, nil},
		{"other table same value", "admins", "02", user{Name: "bob"}, []Index{email("a@x")}, nil},
		{"other index same value", "users", "03", user{Name: "carol"}, []Index{{Name: "alias", Value: "a@x", Unique: true}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := put(t, s, tt.table, tt.id, tt.v, tt.ix...)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Put err = %v, want %v", err, tt.wantErr)
			}
		})
	}
	// The first record is intact and still owns the value; the clashing
	// record was not written at all.
	u, err := get(t, s, "users", "01")
	if err != nil || u.Name != "alice2" {
		t.Fatalf("Get 01 = %+v, %v; want alice2", u, err)
	}
	if _, err := get(t, s, "users", "02"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get 02 err = %v, want ErrNotFound", err)
	}
	if id, err := lookup(t, s, "users", "email", "a@x"); err != nil || id != "01" {
		t.Fatalf("Lookup = %q, %v; want 01", id, err)
	}
	if _, err := lookup(t, s, "users", "email", "m@x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup m@x err = %v, want ErrNotFound (rolled back)", err)
	}

	// Once released, the value can be claimed by another id.
	if err := put(t, s, "users", "01", user{Name: "alice"}, email("alice@x")); err != nil {
		t.Fatalf("re-Put alice: %v", err)
	}
	if err := put(t, s, "users", "02", user{Name: "bob"}, email("a@x")); err != nil {
		t.Fatalf("Put bob with released value: %v", err)
	}
	// And after a Delete too.
	if err := s.Update(context.Background(), func(tx *Txn) error { return tx.Delete("users", "01") }); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if err := put(t, s, "users", "04", user{Name: "dave"}, email("alice@x")); err != nil {
		t.Fatalf("Put dave with deleted record's value: %v", err)
	}
}

func TestUniqueConcurrentClaims(t *testing.T) {
	s := openTest(t, "")
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			errs[i] = put(t, s, "users", fmt.Sprintf("%02d", i), user{N: i}, Index{Name: "email", Value: "same@x", Unique: true})
		})
	}
	wg.Wait()
	ok := 0
	for i, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, ErrExists):
			t.Errorf("claim %d: %v", i, err)
		}
	}
	if ok != 1 {
		t.Fatalf("%d concurrent claims succeeded, want 1", ok)
	}
	if c := count(t, s, "users", Query{Index: "email", Value: "same@x"}); c != 1 {
		t.Fatalf("index count = %d, want 1", c)
	}
}

func TestIndexReplacement(t *testing.T) {
	s := openTest(t, "")
	ix := func(role, email string) []Index {
		return []Index{{Name: "role", Value: role}, {Name: "email", Value: email, Unique: true}}
	}
	if err := put(t, s, "users", "01", user{Name: "alice"}, ix("admin", "old@x")...); err != nil {
		t.Fatal(err)
	}
	if err := put(t, s, "users", "01", user{Name: "alice"}, ix("viewer", "new@x")...); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		index, value string
		wantIDs      []string
	}{
		{"role", "admin", nil},
		{"email", "old@x", nil},
		{"role", "viewer", []string{"01"}},
		{"email", "new@x", []string{"01"}},
	}
	for _, tt := range tests {
		t.Run(tt.index+"="+tt.value, func(t *testing.T) {
			id, err := lookup(t, s, "users", tt.index, tt.value)
			if tt.wantIDs == nil {
				if !errors.Is(err, ErrNotFound) {
					t.Fatalf("Lookup = %q, %v; want ErrNotFound", id, err)
				}
			} else if err != nil || id != tt.wantIDs[0] {
				t.Fatalf("Lookup = %q, %v; want %s", id, err, tt.wantIDs[0])
			}
			ids, _ := list(t, s, "users", Query{Index: tt.index, Value: tt.value})
			if !slices.Equal(ids, tt.wantIDs) {
				t.Fatalf("List ids = %v, want %v", ids, tt.wantIDs)
			}
		})
	}
	// The old unique value is free again.
	if err := put(t, s, "users", "02", user{Name: "bob"}, ix("admin", "old@x")...); err != nil {
		t.Fatalf("claim released value: %v", err)
	}
	// Dropping all indexes removes them.
	if err := put(t, s, "users", "01", user{Name: "alice"}); err != nil {
		t.Fatal(err)
	}
	if _, err := lookup(t, s, "users", "email", "new@x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup after dropping indexes err = %v, want ErrNotFound", err)
	}
}

func TestDelete(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	ix := []Index{{Name: "role", Value: "admin"}, {Name: "email", Value: "a@x", Unique: true}}
	if err := put(t, s, "users", "01", user{Name: "alice"}, ix...); err != nil {
		t.Fatal(err)
	}
	if err := put(t, s, "users", "02", user{Name: "bob"}, Index{Name: "role", Value: "admin"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Update(ctx, func(tx *Txn) error { return tx.Delete("users", "01") }); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := get(t, s, "users", "01"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get deleted err = %v, want ErrNotFound", err)
	}
	if _, err := lookup(t, s, "users", "email", "a@x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup deleted err = %v, want ErrNotFound", err)
	}
	if ids, _ := list(t, s, "users", Query{Index: "role", Value: "admin"}); !slices.Equal(ids, []string{"02"}) {
		t.Fatalf("List role=admin = %v, want [02]", ids)
	}
	err := s.Update(ctx, func(tx *Txn) error { return tx.Delete("users", "01") })
	if !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete err = %v, want ErrNotFound", err)
	}
}

func TestListAndCount(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	// Insert out of order; List must return id order.
	err := s.Update(ctx, func(tx *Txn) error {
		for _, i := range []int{3, 1, 5, 2, 4, 6} {
			role := "odd"
			if i%2 == 0 {
				role = "even"
			}
			if err := tx.Put("users", fmt.Sprintf("id%d", i), user{Name: fmt.Sprintf("u%d", i)}, Index{Name: "role", Value: role}); err != nil {
				return err
			}
		}
		// A neighbouring table with a common name prefix must not leak in.
		return tx.Put("users2", "id0", user{Name: "other"})
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		q         Query
		wantIDs   []string
		wantCount int
	}{
		{"all", Query{}, []string{"id1", "id2", "id3", "id4", "id5", "id6"}, 6},
		{"limit", Query{Limit: 2}, []string{"id1", "id2"}, 6},
		{"after", Query{After: "id2", Limit: 2}, []string{"id3", "id4"}, 6},
		{"after missing id", Query{After: "id2a"}, []string{"id3", "id4", "id5", "id6"}, 6},
		{"after last", Query{After: "id6"}, nil, 6},
		{"index", Query{Index: "role", Value: "even"}, []string{"id2", "id4", "id6"}, 3},
		{"index after limit", Query{Index: "role", Value: "odd", After: "id1", Limit: 1}, []string{"id3"}, 3},
		{"index no match", Query{Index: "role", Value: "none"}, nil, 0},
		{"index value prefix no match", Query{Index: "role", Value: "ev"}, nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ids, names := list(t, s, "users", tt.q)
			if !slices.Equal(ids, tt.wantIDs) {
				t.Fatalf("List ids = %v, want %v", ids, tt.wantIDs)
			}
			for i, id := range ids {
				if names[i] != "u"+id[2:] {
					t.Fatalf("record %s decoded name %q", id, names[i])
				}
			}
			if n := count(t, s, "users", tt.q); n != tt.wantCount {
				t.Fatalf("Count = %d, want %d", n, tt.wantCount)
			}
		})
	}

	t.Run("fn error stops", func(t *testing.T) {
		stop := errors.New("stop")
		seen := 0
		err := s.View(ctx, func(tx *Txn) error {
			return tx.List("users", Query{}, func(string, func(any) error) error {
				seen++
				if seen == 2 {
					return stop
				}
				return nil
			})
		})
		if !errors.Is(err, stop) || seen != 2 {
			t.Fatalf("List err = %v after %d records, want stop after 2", err, seen)
		}
	})
}

func TestUpdateRollback(t *testing.T) {
	s := openTest(t, "")
	boom := errors.New("boom")
	err := s.Update(context.Background(), func(tx *Txn) error {
		if err := tx.Put("users", "01", user{Name: "alice"}, Index{Name: "email", Value: "a@x", Unique: true}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Update err = %v, want boom", err)
	}
	if _, err := get(t, s, "users", "01"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after rollback err = %v, want ErrNotFound", err)
	}
	if _, err := lookup(t, s, "users", "email", "a@x"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Lookup after rollback err = %v, want ErrNotFound", err)
	}
	if n := count(t, s, "users", Query{}); n != 0 {
		t.Fatalf("Count after rollback = %d, want 0", n)
	}
}

func TestTxnMisuse(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	var leaked *Txn
	if err := s.View(ctx, func(tx *Txn) error {
		leaked = tx
		if err := tx.Put("users", "01", user{}); err == nil {
			t.Error("Put in View succeeded")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := leaked.Get("users", "01", &user{}); !errors.Is(err, errTxnDone) {
		t.Fatalf("Get on ended txn err = %v, want errTxnDone", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	called := false
	err := s.Update(canceled, func(*Txn) error { called = true; return nil })
	if !errors.Is(err, context.Canceled) || called {
		t.Fatalf("Update on canceled ctx err = %v, called %v", err, called)
	}
}

func TestConcurrentUpdates(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	if err := put(t, s, "counters", "c", user{}); err != nil {
		t.Fatal(err)
	}
	const workers, each = 16, 20
	var wg sync.WaitGroup
	errs := make(chan error, workers*each)
	for range workers {
		wg.Go(func() {
			for range each {
				errs <- s.Update(ctx, func(tx *Txn) error {
					var c user
					if err := tx.Get("counters", "c", &c); err != nil {
						return err
					}
					c.N++
					return tx.Put("counters", "c", c)
				})
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("Update: %v", err)
		}
	}
	c, err := get(t, s, "counters", "c")
	if err != nil {
		t.Fatal(err)
	}
	if c.N != workers*each {
		t.Fatalf("counter = %d, want %d", c.N, workers*each)
	}
}

func TestCloseAndCheck(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	if err := s.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	tests := []struct {
		name string
		fn   func() error
	}{
		{"Check", func() error { return s.Check(ctx) }},
		{"View", func() error { return s.View(ctx, func(*Txn) error { return nil }) }},
		{"Update", func() error { return s.Update(ctx, func(*Txn) error { return nil }) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.fn(); !errors.Is(err, ErrClosed) {
				t.Fatalf("err = %v, want ErrClosed", err)
			}
		})
	}
}

func TestEnvelopeRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		ix   []Index
		data string
	}{
		{"none", nil, `{}`},
		{"some", []Index{{Name: "a", Value: "", Unique: true}, {Name: "b", Value: "x/y"}}, `{"k":1}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := decodeEnvelope(encodeEnvelope(tt.ix, []byte(tt.data)))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(e.indexes, tt.ix) && len(tt.ix) > 0 || string(e.data) != tt.data {
				t.Fatalf("got %+v %q", e.indexes, e.data)
			}
		})
	}
	for _, bad := range []string{"", "\x02", "\x01", "\x01\x05", "\x01\x01\x00\x09a"} {
		if _, err := decodeEnvelope([]byte(bad)); err == nil {
			t.Errorf("decodeEnvelope(%q) succeeded", bad)
		}
	}
}

// A View's snapshot is taken at its first read, and every later read of
// the View sees that snapshot, not writes committed after it.
func TestViewSnapshotFromFirstRead(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	if err := put(t, s, "users", "a", user{Name: "a1"}); err != nil {
		t.Fatal(err)
	}
	err := s.View(ctx, func(tx *Txn) error {
		// Committed after the View began, before its first read: seen.
		if err := put(t, s, "users", "a", user{Name: "a2"}); err != nil {
			return err
		}
		var u user
		if err := tx.Get("users", "a", &u); err != nil || u.Name != "a2" {
			return fmt.Errorf("first read: %+v %v, want a2", u, err)
		}
		// Committed after the first read: not seen by this View.
		if err := put(t, s, "users", "a", user{Name: "a3"}); err != nil {
			return err
		}
		if err := put(t, s, "users", "b", user{Name: "b"}); err != nil {
			return err
		}
		if err := tx.Get("users", "a", &u); err != nil || u.Name != "a2" {
			return fmt.Errorf("second read: %+v %v, want a2 still", u, err)
		}
		if err := tx.Get("users", "b", &u); !errors.Is(err, ErrNotFound) {
			return fmt.Errorf("a record created after the first read: %+v %v, want not found", u, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A View that reads nothing is fine too.
	if err := s.View(ctx, func(*Txn) error { return nil }); err != nil {
		t.Fatal(err)
	}
}
