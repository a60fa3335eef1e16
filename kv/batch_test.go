package kv

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/dgraph-io/badger/v4"
)

// holdCommitter blocks the committer in the fn of an Update until release
// is called, so that the Updates queued meanwhile form the next batch, in
// the order they were queued.
func holdCommitter(t *testing.T, s *Store) (release func()) {
	t.Helper()
	started, unblock := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(context.Background(), func(*Txn) error {
			close(started)
			<-unblock
			return nil
		})
	}()
	<-started
	return func() {
		t.Helper()
		close(unblock)
		if err := <-done; err != nil {
			t.Fatalf("holding Update: %v", err)
		}
	}
}

// outcome is what a queued Update returned, or the panic it raised.
type outcome struct {
	err      error
	panicked any
}

func (o outcome) String() string {
	if o.panicked != nil {
		return fmt.Sprintf("panic %v", o.panicked)
	}
	return fmt.Sprintf("error %v", o.err)
}

// enqueue starts Update(ctx, fn) and returns once the request is queued
// behind the held committer.
func enqueue(t *testing.T, s *Store, ctx context.Context, fn func(tx *Txn) error) <-chan outcome {
	t.Helper()
	before := len(s.writes)
	out := make(chan outcome, 1)
	go func() {
		defer func() {
			if v := recover(); v != nil {
				out <- outcome{panicked: v}
			}
		}()
		out <- outcome{err: s.Update(ctx, fn)}
	}()
	for len(s.writes) == before {
		runtime.Gosched()
	}
	return out
}

func putFn(id string, v user, ix ...Index) func(tx *Txn) error {
	return func(tx *Txn) error { return tx.Put("users", id, v, ix...) }
}

func email(v string) Index { return Index{Name: "email", Value: v, Unique: true} }

// TestBatchIsolation runs one batch of Updates where some fail or panic:
// those leave no write behind, the others commit, and each caller gets its
// own outcome.
func TestBatchIsolation(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	boom := errors.New("boom")
	release := holdCommitter(t, s)
	a := enqueue(t, s, ctx, putFn("01", user{Name: "a"}, email("a@x")))
	b := enqueue(t, s, ctx, func(tx *Txn) error {
		if err := tx.Put("users", "02", user{Name: "b"}, email("b@x")); err != nil {
			return err
		}
		if err := tx.Delete("users", "01"); err != nil {
			return err
		}
		return boom
	})
	c := enqueue(t, s, ctx, func(tx *Txn) error {
		if err := tx.Put("users", "03", user{Name: "c"}, email("c@x")); err != nil {
			return err
		}
		panic("fn bug")
	})
	d := enqueue(t, s, ctx, func(tx *Txn) error {
		// b's and c's writes are gone, a's is there.
		for _, id := range []string{"02", "03"} {
			if err := tx.Get("users", id, &user{}); !errors.Is(err, ErrNotFound) {
				return fmt.Errorf("get %s: %v, want ErrNotFound", id, err)
			}
		}
		if err := tx.Get("users", "01", &user{}); err != nil {
			return err
		}
		if !tx.sawBelow {
			return errors.New("did not read a's write from the batch")
		}
		// The values b and c claimed are free.
		if err := tx.Put("users", "04", user{Name: "d"}, email("b@x"), email("c@x")); err != nil {
			return err
		}
		return nil
	})
	release()

	if o := <-a; o.err != nil || o.panicked != nil {
		t.Errorf("a: %v, want success", o)
	}
	if o := <-b; !errors.Is(o.err, boom) {
		t.Errorf("b: %v, want boom", o)
	}
	if o := <-c; o.panicked != "fn bug" {
		t.Errorf("c: %v, want the panic re-raised in the caller", o)
	}
	if o := <-d; o.err != nil || o.panicked != nil {
		t.Errorf("d: %v, want success", o)
	}
	ids, _ := list(t, s, "users", Query{})
	if want := []string{"01", "04"}; !slices.Equal(ids, want) {
		t.Fatalf("committed ids = %v, want %v", ids, want)
	}
	for v, want := range map[string]string{"a@x": "01", "b@x": "04", "c@x": "04"} {
		if id, err := lookup(t, s, "users", "email", v); err != nil || id != want {
			t.Errorf("Lookup %s = %q, %v; want %s", v, id, err, want)
		}
	}
	// The committer survived the panic.
	if err := put(t, s, "users", "05", user{}); err != nil {
		t.Fatalf("Update after a panic: %v", err)
	}
}

// TestBatchReadsPredecessors checks that a fn sees the writes of the fns
// before it in its batch through every read: Get, Lookup, List with After and
// Limit, Count, and table and index scans, merged with committed records.
func TestBatchReadsPredecessors(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	team := func(v string) Index { return Index{Name: "team", Value: v} }
	for _, id := range []string{"01", "03", "05", "07"} {
		if err := put(t, s, "users", id, user{Name: "old" + id}, team("x")); err != nil {
			t.Fatal(err)
		}
	}
	release := holdCommitter(t, s)
	var results []<-chan outcome
	results = append(results,
		enqueue(t, s, ctx, putFn("02", user{Name: "new02"}, team("x"))),
		enqueue(t, s, ctx, func(tx *Txn) error { return tx.Delete("users", "03") }),
		enqueue(t, s, ctx, putFn("05", user{Name: "new05"})), // leaves team x
		enqueue(t, s, ctx, putFn("06", user{Name: "new06"}, team("x"))),
	)
	type seen struct {
		ids, names []string
		after      []string
		byTeam     []string
		count      int
		teamCount  int
		first      string
		get05      user
	}
	var got seen
	results = append(results, enqueue(t, s, ctx, func(tx *Txn) error {
		err := tx.List("users", Query{}, func(id string, decode func(any) error) error {
			var u user
			if err := decode(&u); err != nil {
				return err
			}
			got.ids, got.names = append(got.ids, id), append(got.names, u.Name)
			return nil
		})
		if err != nil {
			return err
		}
		if err := tx.List("users", Query{After: "02", Limit: 2}, func(id string, _ func(any) error) error {
			got.after = append(got.after, id)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.List("users", Query{Index: "team", Value: "x"}, func(id string, decode func(any) error) error {
			var u user
			if err := decode(&u); err != nil {
				return err
			}
			got.byTeam = append(got.byTeam, id+"="+u.Name)
			return nil
		}); err != nil {
			return err
		}
		if got.count, err = tx.Count("users", Query{}); err != nil {
			return err
		}
		if got.teamCount, err = tx.Count("users", Query{Index: "team", Value: "x"}); err != nil {
			return err
		}
		if got.first, err = tx.Lookup("users", "team", "x"); err != nil {
			return err
		}
		return tx.Get("users", "05", &got.get05)
	}))
	release()
	for i, r := range results {
		if o := <-r; o.err != nil || o.panicked != nil {
			t.Fatalf("request %d: %v", i, o)
		}
	}
	want := seen{
		ids:       []string{"01", "02", "05", "06", "07"},
		names:     []string{"old01", "new02", "new05", "new06", "old07"},
		after:     []string{"05", "06"},
		byTeam:    []string{"01=old01", "02=new02", "06=new06", "07=old07"},
		count:     5,
		teamCount: 4,
		first:     "01",
		get05:     user{Name: "new05"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("last fn of the batch saw\n%+v\nwant\n%+v", got, want)
	}
	// What it saw is what was committed.
	ids, names := list(t, s, "users", Query{})
	if !slices.Equal(ids, want.ids) || !slices.Equal(names, want.names) {
		t.Fatalf("committed %v %v, want %v %v", ids, names, want.ids, want.names)
	}
}

// TestBatchUniqueClaims checks unique index claims between requests of one
// batch and across batches: the second claim fails with the same ErrExists
// as it would one commit later.
func TestBatchUniqueClaims(t *testing.T) {
	s := openTest(t, "")
	ctx := context.Background()
	if err := put(t, s, "users", "00", user{Name: "old"}, email("old@x")); err != nil {
		t.Fatal(err)
	}
	fail := errors.New("fail")
	release := holdCommitter(t, s)
	steps := []struct {
		name    string
		fn      func(tx *Txn) error
		wantErr error
		wantMsg string
	}{
		{"first claim", putFn("01", user{Name: "a"}, email("same@x")), nil, ""},
		{"second claim in batch", putFn("02", user{Name: "b"}, email("same@x")), ErrExists,
			`kv: put users/02: unique index email="same@x" is held by 01: already exists`},
		{"claim of a committed value", putFn("03", user{Name: "c"}, email("old@x")), ErrExists, ""},
		{"release committed value", putFn("00", user{Name: "old"}, email("moved@x")), nil, ""},
		{"claim released value", putFn("04", user{Name: "d"}, email("old@x")), nil, ""},
		{"failed claim", func(tx *Txn) error {
			if err := tx.Put("users", "05", user{Name: "e"}, email("ghost@x")); err != nil {
				return err
			}
			return fail
		}, fail, ""},
		{"claim after a failed claim", putFn("06", user{Name: "f"}, email("ghost@x")), nil, ""},
		{"claim after a delete", func(tx *Txn) error {
			if err := tx.Delete("users", "01"); err != nil {
				return err
			}
			return tx.Put("users", "07", user{Name: "g"}, email("same@x"))
		}, nil, ""},
	}
	outs := make([]<-chan outcome, len(steps))
	for i, st := range steps {
		outs[i] = enqueue(t, s, ctx, st.fn)
	}
	release()
	for i, st := range steps {
		o := <-outs[i]
		if o.panicked != nil || !errors.Is(o.err, st.wantErr) || (st.wantErr == nil) != (o.err == nil) {
			t.Errorf("%s: %v, want %v", st.name, o, st.wantErr)
		}
		if st.wantMsg != "" && (o.err == nil || o.err.Error() != st.wantMsg) {
			t.Errorf("%s: message %v, want %q", st.name, o.err, st.wantMsg)
		}
	}
	for v, want := range map[string]string{"same@x": "07", "old@x": "04", "moved@x": "00", "ghost@x": "06"} {
		if id, err := lookup(t, s, "users", "email", v); err != nil || id != want {
			t.Errorf("Lookup %s = %q, %v; want %s", v, id, err, want)
		}
	}
	// Across batches: the committed claim holds.
	if err := put(t, s, "users", "08", user{}, email("same@x")); !errors.Is(err, ErrExists) {
		t.Fatalf("claim in a later batch: %v, want ErrExists", err)
	}
	ids, _ := list(t, s, "users", Query{})
	if want := []string{"00", "04", "06", "07"}; !slices.Equal(ids, want) {
		t.Fatalf("committed ids = %v, want %v", ids, want)
	}
}

// TestUpdateCanceledWhileQueued: an Update whose ctx ends while it waits for
// the committer returns at once and its fn never runs; one whose fn has
// started commits and returns nil.
func TestUpdateCanceledWhileQueued(t *testing.T) {
	s := openTest(t, "")
	release := holdCommitter(t, s)
	ctx, cancel := context.WithCancel(context.Background())
	ran := make(chan struct{}, 1)
	q := enqueue(t, s, ctx, func(tx *Txn) error {
		ran <- struct{}{}
		return tx.Put("users", "01", user{})
	})
	cancel()
	o := <-q // the committer is still held
	if !errors.Is(o.err, context.Canceled) {
		t.Fatalf("canceled queued Update: %v, want context.Canceled", o)
	}
	release()
	if err := put(t, s, "users", "02", user{}); err != nil {
		t.Fatalf("Update after a canceled one: %v", err)
	}
	select {
	case <-ran:
		t.Fatal("fn of the canceled Update ran")
	default:
	}
	if _, err := get(t, s, "users", "01"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("record of the canceled Update: %v, want ErrNotFound", err)
	}

	// Canceled after fn started: the write stands and is reported.
	ctx, cancel = context.WithCancel(context.Background())
	started, unblock := make(chan struct{}), make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Update(ctx, func(tx *Txn) error {
			close(started)
			<-unblock
			return tx.Put("users", "03", user{N: 3})
		})
	}()
	<-started
	cancel()
	close(unblock)
	if err := <-done; err != nil {
		t.Fatalf("Update canceled after its fn started: %v, want nil", err)
	}
	if u, err := get(t, s, "users", "03"); err != nil || u.N != 3 {
		t.Fatalf("record of that Update: %+v, %v", u, err)
	}
}

// TestBatchTooBigSplits queues more data than one Badger transaction takes:
// the batch commits in several transactions, each request reading the state
// its predecessors left, and a request too big on its own fails alone.
func TestBatchTooBigSplits(t *testing.T) {
	s := openSized(t, batchTestMemTable)
	ctx := context.Background()
	// Records just below the value threshold count in full against
	// MaxBatchSize (bigger ones go to the value log and count as pointers).
	const blob = 60 << 10
	const n, per, bigPer = 10, 10, 50
	if max := s.db.MaxBatchSize(); n*per*blob < 2*max || per*blob*2 > max || bigPer*blob < max {
		t.Fatalf("MaxBatchSize %d: test sizes need adjusting", max)
	}
	if err := put(t, s, "chain", "c", user{}); err != nil {
		t.Fatal(err)
	}
	// Each request bumps a counter it reads and adds per records.
	step := func(i int) func(tx *Txn) error {
		return func(tx *Txn) error {
			var c user
			if err := tx.Get("chain", "c", &c); err != nil {
				return err
			}
			if c.N != i {
				return fmt.Errorf("request %d read counter %d", i, c.N)
			}
			// After a split the records of the requests before are in
			// the group in flight, not in this group's snapshot.
			if got, err := tx.Count("blobs", Query{}); err != nil || got != i*per {
				return fmt.Errorf("request %d counted %d blobs (%v), want %d", i, got, err, i*per)
			}
			c.N++
			if err := tx.Put("chain", "c", c); err != nil {
				return err
			}
			for j := range per {
				if err := tx.Put("blobs", fmt.Sprintf("%02d-%02d", i, j), user{Name: strings.Repeat("x", blob), N: i}); err != nil {
					return err
				}
			}
			return nil
		}
	}
	const bigAt = 3
	release := holdCommitter(t, s)
	var outs []<-chan outcome
	for i := range n {
		outs = append(outs, enqueue(t, s, ctx, step(i)))
		if i == bigAt-1 {
			// Too big alone: fails at a Put, as in a Badger txn of its own.
			outs = append(outs, enqueue(t, s, ctx, func(tx *Txn) error {
				for j := range bigPer {
					if err := tx.Put("big", fmt.Sprint(j), user{Name: strings.Repeat("y", blob)}); err != nil {
						return err
					}
				}
				return nil
			}))
		}
	}
	release()
	for i, o := range outs {
		got := <-o
		if i == bigAt {
			if !errors.Is(got.err, badger.ErrTxnTooBig) {
				t.Errorf("too-big request: %v, want ErrTxnTooBig", got)
			}
			continue
		}
		if got.err != nil || got.panicked != nil {
			t.Errorf("request %d: %v", i, got)
		}
	}
	c, err := get(t, s, "chain", "c")
	if err != nil || c.N != n {
		t.Fatalf("counter = %+v, %v; want %d", c, err, n)
	}
	if got := count(t, s, "blobs", Query{}); got != n*per {
		t.Fatalf("%d blobs, want %d", got, n*per)
	}
	if got := count(t, s, "big", Query{}); got != 0 {
		t.Fatalf("%d records of the too-big request, want 0", got)
	}
}

// TestBatchCommitFailure makes the commit of a group fail: its requests,
// and the one whose writes started the next group after reading the failed
// group's, get the error and leave nothing behind. The failure stops all
// writes (health.go): the next group's requests are refused with
// ErrFailed, reads go on, and once the watcher has probed the directory
// and reopened the store, writes resume on what is really stored.
func TestBatchCommitFailure(t *testing.T) {
	fastProbes(t)
	s := openSized(t, batchTestMemTable)
	ctx := context.Background()
	if err := put(t, s, "users", "old", user{Name: "old"}); err != nil {
		t.Fatal(err)
	}
	errDisk := errors.New("injected commit failure")
	orig := commit
	var calls atomic.Int32
	commit = func(btx *badger.Txn) error {
		if calls.Add(1) == 1 {
			return errDisk
		}
		return orig(btx)
	}
	t.Cleanup(func() { commit = orig })

	const blob = 60 << 10
	if max := s.db.MaxBatchSize(); 35*blob >= max || 45*blob < max {
		t.Fatalf("MaxBatchSize %d: test sizes need adjusting", max)
	}
	bulk := func(tx *Txn, table string, n int) error {
		for j := range n {
			if err := tx.Put(table, fmt.Sprint(j), user{Name: strings.Repeat("z", blob)}); err != nil {
				return err
			}
		}
		return nil
	}
	release := holdCommitter(t, s)
	// a fills most of a Badger transaction, so b's writes do not fit with
	// a's: a's group commits (and fails) before b's writes are taken.
	a := enqueue(t, s, ctx, func(tx *Txn) error { return bulk(tx, "a", 35) })
	b := enqueue(t, s, ctx, func(tx *Txn) error {
		if err := tx.Get("a", "0", &user{}); err != nil {
			return err
		}
		return bulk(tx, "b", 10)
	})
	c := enqueue(t, s, ctx, putFn("c", user{Name: "c"}))
	d := enqueue(t, s, ctx, func(tx *Txn) error { return tx.Get("a", "1", &user{}) })
	release()
	for name, ch := range map[string]<-chan outcome{"a": a, "b": b} {
		if o := <-ch; !errors.Is(o.err, errDisk) {
			t.Errorf("%s: %v, want the injected failure", name, o)
		}
	}
	if o := <-c; !errors.Is(o.err, ErrFailed) || !errors.Is(o.err, errDisk) {
		t.Errorf("c: %v, want ErrFailed caused by the injected failure", o)
	}
	if o := <-d; !errors.Is(o.err, ErrNotFound) {
		t.Errorf("d: %v, want ErrNotFound (a's records were never stored)", o)
	}
	for _, table := range []string{"a", "b"} {
		if n := count(t, s, table, Query{}); n != 0 {
			t.Errorf("%d records in %s after a failed commit, want 0", n, table)
		}
	}
	if _, err := get(t, s, "users", "old"); err != nil {
		t.Errorf("read after a failed commit: %v", err)
	}
	if h := s.Health(); h.State != StateFailed && h.State != StateOK {
		t.Errorf("health after a failed commit: %v", h.State)
	}
	waitHealth(t, s, StateOK)
	if err := put(t, s, "users", "after", user{}); err != nil {
		t.Fatalf("Update after the reopen: %v", err)
	}
	if _, err := get(t, s, "users", "old"); err != nil {
		t.Errorf("record stored before the failure, after the reopen: %v", err)
	}
	if _, err := get(t, s, "users", "c"); !errors.Is(err, ErrNotFound) {
		t.Errorf("record of the refused c after the reopen: %v, want ErrNotFound", err)
	}
}

// batchTestMemTable is the memtable size the batch tests' record sizes are
// chosen for: its transactions take up to 2.4 MiB.
const batchTestMemTable = 16 << 20

// openSized opens a store in a temporary directory with the given memtable
// size, and so the given transaction limit.
func openSized(t testing.TB, memTable int64) *Store {
	t.Helper()
	s, err := Open(context.Background(), Options{Dir: t.TempDir(), Logger: quietLogger(), GCInterval: -1, MemTableSize: memTable})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}
