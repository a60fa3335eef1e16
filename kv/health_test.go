package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/diskspace"
)

// fastProbes shortens the watcher's timing for the test.
func fastProbes(t *testing.T) {
	t.Helper()
	saved := []time.Duration{spaceCheckEvery, witnessEvery, probeFirst, probeMax}
	spaceCheckEvery, witnessEvery, probeFirst, probeMax = 10*time.Millisecond, 20*time.Millisecond, 10*time.Millisecond, 50*time.Millisecond
	t.Cleanup(func() {
		spaceCheckEvery, witnessEvery, probeFirst, probeMax = saved[0], saved[1], saved[2], saved[3]
	})
}

// waitHealth waits up to 10 s for s to reach want.
func waitHealth(t *testing.T, s *Store, want State) Health {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		h := s.Health()
		if h.State == want {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("store health %v (%v), want %v", h.State, h.Err, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fakeSpace makes spaceOf report avail bytes free (of 1 GiB) until the
// test ends.
type fakeSpace struct{ avail atomic.Int64 }

func useFakeSpace(t *testing.T, avail int64) *fakeSpace {
	t.Helper()
	f := &fakeSpace{}
	f.avail.Store(avail)
	saved := spaceOf
	spaceOf = func(string) (diskspace.Space, error) {
		return diskspace.Space{Total: 1 << 30, Avail: f.avail.Load()}, nil
	}
	t.Cleanup(func() { spaceOf = saved })
	return f
}

// linesSaying counts h's records whose message contains s.
func linesSaying(h *recordingHandler, s string) int {
	n := 0
	for _, r := range h.records() {
		if strings.Contains(r.Message, s) {
			n++
		}
	}
	return n
}

// TestFullRefusesWrites runs a store's filesystem below the reserve and
// back: writes are refused with a FullError while reads go on, the log
// says so once each way however many writes were refused, and writes
// resume by themselves.
func TestFullRefusesWrites(t *testing.T) {
	fastProbes(t)
	space := useFakeSpace(t, 900<<20)
	h := &recordingHandler{}
	s, err := Open(context.Background(), Options{Dir: t.TempDir(), Logger: slog.New(h), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := put(t, s, "users", "before", user{Name: "before"}); err != nil {
		t.Fatal(err)
	}
	reserve := s.Health().Reserve
	if want := reserveFor(s.bopts, 0, 0); reserve < want || reserve > want+1<<20 {
		t.Errorf("reserve %d, want about %d", reserve, want)
	}

	space.avail.Store(reserve - 1)
	hf := waitHealth(t, s, StateFull)
	var full *FullError
	for i := range 50 {
		err := put(t, s, "users", fmt.Sprint("refused", i), user{})
		if !errors.As(err, &full) || !errors.Is(err, ErrFull) {
			t.Fatalf("write while full: %v, want a *FullError", err)
		}
	}
	if full.Avail != reserve-1 || full.Reserve != reserve || hf.Err == nil {
		t.Errorf("FullError %+v (health %+v), want avail %d, reserve %d", full, hf, reserve-1, reserve)
	}
	if _, err := get(t, s, "users", "before"); err != nil {
		t.Errorf("read while full: %v", err)
	}
	if err := s.Check(context.Background()); err != nil {
		t.Errorf("Check while full: %v", err)
	}

	// Just above the reserve is not enough: writes resume with a margin.
	space.avail.Store(reserve + 1)
	time.Sleep(50 * time.Millisecond)
	if got := s.Health().State; got != StateFull {
		t.Errorf("state just above the reserve: %v, want full", got)
	}
	space.avail.Store(2 * reserve)
	waitHealth(t, s, StateOK)
	if err := put(t, s, "users", "after", user{}); err != nil {
		t.Fatalf("write after room came back: %v", err)
	}
	if n := count(t, s, "users", Query{}); n != 2 {
		t.Errorf("%d records, want 2 (the refused writes left nothing)", n)
	}
	if n := linesSaying(h, "short of room"); n != 1 {
		t.Errorf("%d lines saying the store is short of room, want 1", n)
	}
	if n := linesSaying(h, "accepts writes again"); n != 1 {
		t.Errorf("%d lines saying writes resume, want 1", n)
	}
}

// TestFullByEstimate: the write path estimates what it writes, and a
// commit that takes the estimate past the reserve checks the space at
// once instead of waiting for the watcher (a second away).
func TestFullByEstimate(t *testing.T) {
	space := useFakeSpace(t, 900<<20)
	s, err := Open(context.Background(), Options{Dir: t.TempDir(), Logger: quietLogger(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	reserve := s.Health().Reserve
	space.avail.Store(reserve + 10<<10) // the watcher's next look is a second away
	s.checkSpace()
	big := user{Name: strings.Repeat("x", 20<<10)}
	if err := put(t, s, "users", "1", big); err != nil {
		t.Fatal(err) // accepted: the estimate was below the reserve before
	}
	space.avail.Store(reserve - 1)
	// Accepted too (the check comes after the commit that takes the
	// estimate past the reserve, which has room for it), and it finds
	// the filesystem short of room.
	if err := put(t, s, "users", "2", big); err != nil {
		t.Fatal(err)
	}
	if err := put(t, s, "users", "3", big); !errors.Is(err, ErrFull) {
		t.Fatalf("write after the estimate passed the reserve: %v, want ErrFull", err)
	}
}

// TestOpenNeedsRoom: a filesystem without room to replay and restart the
// write-ahead log refuses Open with ErrFull, before Badger writes a thing.
func TestOpenNeedsRoom(t *testing.T) {
	useFakeSpace(t, 1<<20)
	dir := t.TempDir()
	_, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1})
	if !errors.Is(err, ErrFull) || !strings.Contains(err.Error(), "opening it needs") {
		t.Fatalf("Open with 1 MiB free: %v, want ErrFull", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("Open wrote %d files", len(entries))
	}
}

// TestWALPreallocated: the write-ahead log Badger writes, and the next
// one, have their blocks allocated; Close removes the unused next one.
func TestWALPreallocated(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	fids, sizes, err := memFids(dir)
	if err != nil || len(fids) != 2 {
		t.Fatalf("write-ahead logs %v (%v), want the active one and the next", fids, err)
	}
	if sizes[fids[1]] != 0 {
		t.Errorf("next log is %d bytes, want 0 (Badger sizes it)", sizes[fids[1]])
	}
	for _, fid := range fids {
		var st syscall.Stat_t
		if err := syscall.Stat(memPath(dir, fid), &st); err != nil {
			t.Fatal(err)
		}
		if got := st.Blocks * 512; got < s.walSpan {
			t.Errorf("log %d has %d bytes allocated, want at least %d", fid, got, s.walSpan)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if fids, _, _ := memFids(dir); len(fids) != 0 {
		t.Errorf("logs %v after Close, want none", fids)
	}
	s2, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1})
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	s2.Close()
}

// TestWitness: Open writes the witness, the watcher keeps it up with the
// commits (one per batch of Updates), Close writes the last count, and a
// witness file that is not one stops Open.
func TestWitness(t *testing.T) {
	fastProbes(t)
	dir := t.TempDir()
	wit := filepath.Join(t.TempDir(), "store.witness")
	s, err := Open(context.Background(), Options{Dir: dir, Witness: wit, Logger: quietLogger(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	if w, err := readWitness(wit); err != nil || w == nil || w.Commits != 0 {
		t.Fatalf("witness after the first Open: %+v %v, want 0 commits", w, err)
	}
	for i := range 5 {
		if err := put(t, s, "users", fmt.Sprint(i), user{}); err != nil {
			t.Fatal(err)
		}
	}
	if s.Commits() != 5 {
		t.Errorf("Commits %d after 5 sequential Updates, want 5", s.Commits())
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		w, _ := readWitness(wit)
		if w != nil && w.Commits == 5 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness %+v, want 5 commits", w)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := put(t, s, "users", "last", user{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if w, _ := readWitness(wit); w == nil || w.Commits != 6 {
		t.Errorf("witness after Close: %+v, want 6 commits", w)
	}
	if err := os.WriteFile(wit, []byte("not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), Options{Dir: dir, Witness: wit, Logger: quietLogger(), GCInterval: -1}); err == nil || !strings.Contains(err.Error(), "is not a store witness") {
		t.Errorf("Open with a garbled witness: %v", err)
	}
}

// TestLogEvery checks the rate limit of repeated log lines.
func TestLogEvery(t *testing.T) {
	t0 := time.Unix(1000, 0)
	l := logEvery{min: 10 * time.Second, max: 40 * time.Second}
	for i, tc := range []struct {
		at     time.Duration
		wantN  int
		wantOK bool
	}{
		{0, 1, true},
		{time.Second, 0, false},
		{2 * time.Second, 0, false},
		{10 * time.Second, 3, true}, // the two suppressed and this one; interval now 20 s
		{25 * time.Second, 0, false},
		{30 * time.Second, 2, true}, // interval now 40 s
		{69 * time.Second, 0, false},
		{70 * time.Second, 2, true}, // capped at 40 s
		{300 * time.Second, 1, true},
		{311 * time.Second, 1, true}, // quiet: back to 10 s
	} {
		n, ok := l.tick(t0.Add(tc.at))
		if n != tc.wantN || ok != tc.wantOK {
			t.Errorf("tick %d at %v: (%d, %v), want (%d, %v)", i, tc.at, n, ok, tc.wantN, tc.wantOK)
		}
	}
}

// TestReadOnlyUpdateWhileFull: an Update that only reads succeeds while
// writes are refused (the daemon's start-up checks are such Updates).
func TestReadOnlyUpdateWhileFull(t *testing.T) {
	fastProbes(t)
	space := useFakeSpace(t, 900<<20)
	s, err := Open(context.Background(), Options{Dir: t.TempDir(), Logger: quietLogger(), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := put(t, s, "users", "a", user{Name: "a"}); err != nil {
		t.Fatal(err)
	}
	space.avail.Store(1 << 20)
	waitHealth(t, s, StateFull)
	var got user
	if err := s.Update(context.Background(), func(tx *Txn) error { return tx.Get("users", "a", &got) }); err != nil || got.Name != "a" {
		t.Errorf("read-only Update while full: %v %+v", err, got)
	}
	if err := put(t, s, "users", "b", user{}); !errors.Is(err, ErrFull) {
		t.Errorf("writing Update while full: %v, want ErrFull", err)
	}
}
