package audit

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"testing"
	"time"
)

// gateSigner blocks its first Sign until released.
type gateSigner struct {
	*testSigner
	once    sync.Once
	called  chan struct{}
	release chan struct{}
}

func (s *gateSigner) Sign(ctx context.Context, digest []byte) ([]byte, string, error) {
	s.once.Do(func() {
		close(s.called)
		<-s.release
	})
	return s.testSigner.Sign(ctx, digest)
}

// small is a short event: bursts of it cost the race detector less.
var small = Event{Action: "authorize", Outcome: OutcomeOK}

// lostEntries returns the ActionLost lines of es.
func lostEntries(es []Entry) []Entry {
	var out []Entry
	for _, e := range es {
		if e.Action == ActionLost {
			out = append(out, e)
		}
	}
	return out
}

// While the writer is stuck (a slow HSM), Record returns at once: what
// does not fit in the queue is counted, and written as one ActionLost
// entry when the writer goes on.
func TestRecordNeverBlocks(t *testing.T) {
	dir := t.TempDir()
	s := &gateSigner{testSigner: newTestSigner(t, "k1"), called: make(chan struct{}), release: make(chan struct{})}
	l, err := Open(context.Background(), Options{Dir: dir, Signer: s, CheckpointEvery: 1,
		CheckpointInterval: time.Hour, Logger: discard(), Queue: 4})
	if err != nil {
		t.Fatal(err)
	}
	l.Record(event(0))
	<-s.called
	start := time.Now()
	for i := range 1000 {
		l.Record(event(i + 1))
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("1000 Records took %v with the writer stuck", d)
	}
	if n := l.Lost(); n != 1000-4 {
		t.Errorf("Lost = %d, want %d", n, 1000-4)
	}
	close(s.release)
	closeLog(t, l)
	es := dirEntries(t, dir)
	lost := lostEntries(es)
	if len(lost) != 1 || lost[0].Outcome != OutcomeFailed || lost[0].Target[TargetEvents] != "996" ||
		lost[0].Target[TargetFirst] == "" || lost[0].Target[TargetLast] < lost[0].Target[TargetFirst] {
		t.Fatalf("lost entries %+v, want one for 996 events", lost)
	}
	if n := len(eventsOf(es)); n != 1+4+1 {
		t.Fatalf("%d event lines, want the first event, the 4 queued ones and the lost entry", n)
	}
	if rep := verifyDir(t, dir, s.keys()); !rep.OK || len(rep.Notes) != 1 {
		t.Fatalf("verify: %+v, want ok with a note on the lost events", rep)
	}
}

// While the file cannot be written, events beyond what may wait are
// counted, and the count is written once writing works again.
func TestLostWhileWritesFail(t *testing.T) {
	dir := t.TempDir()
	d := &disk{}
	s := newTestSigner(t, "k1")
	l, err := Open(context.Background(), Options{Dir: dir, Signer: s, CheckpointEvery: 1000,
		CheckpointInterval: time.Hour, Logger: discard(), wrapFile: d.wrap, maxPending: 1000})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	d.failing.Store(true)
	for i := range 100 {
		l.Record(event(i))
	}
	if err := l.Flush(ctx); err == nil {
		t.Fatal("Flush on a full disk: want an error")
	}
	lostWhileFailing := l.Lost()
	if lostWhileFailing == 0 || lostWhileFailing >= 100 {
		t.Fatalf("Lost = %d, want some of the 100 events", lostWhileFailing)
	}
	d.failing.Store(false)
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	es := allEntries(t, l)
	lost := lostEntries(es)
	if len(lost) != 1 || lost[0].Target[TargetEvents] != strconv.FormatUint(lostWhileFailing, 10) {
		t.Fatalf("lost entries %+v, want one for %d events", lost, lostWhileFailing)
	}
	if n := uint64(len(eventsOf(es)) - 1); n+lostWhileFailing != 100 {
		t.Fatalf("%d events written and %d lost, want 100 in all", n, lostWhileFailing)
	}
	closeLog(t, l)
	if rep := verifyDir(t, dir, s.keys()); !rep.OK {
		t.Fatalf("verify %+v", rep)
	}
}

// A failing HSM is tried again after a growing wait, not on every event,
// and said once in the log of the daemon, not once per event.
func TestSignFailureIsQuiet(t *testing.T) {
	h := &countingHandler{}
	s := newTestSigner(t, "k1")
	s.fail.Store(true)
	dir := t.TempDir()
	l, err := Open(context.Background(), Options{Dir: dir, Signer: s, CheckpointEvery: 100,
		CheckpointInterval: time.Millisecond, SyncInterval: 10 * time.Millisecond,
		Logger: slog.New(h), Queue: 1 << 17})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 100_000 {
		l.Record(small)
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	elapsed := time.Since(start)
	calls := s.calls.Load()
	// Waits of 1 s, 2 s, 4 s...: a try at the start and one per wait.
	if maxCalls := int64(2 + elapsed/time.Second); calls > maxCalls {
		t.Errorf("%d signatures tried in %v, want at most %d", calls, elapsed, maxCalls)
	}
	if n := h.count(slog.LevelError); n == 0 || n >= 10 {
		t.Errorf("%d error lines (%q), want 1 to 9", n, h.msgs)
	}
	if err := l.Close(context.Background()); err == nil {
		t.Error("Close with a failing signer: want an error")
	}
	if n := h.count(slog.LevelError); n >= 10 {
		t.Errorf("%d error lines after Close, want fewer than 10", n)
	}
	if l.Lost() != 0 {
		t.Errorf("%d events lost", l.Lost())
	}
	if rep := verifyDir(t, dir, s.keys()); !rep.OK || rep.Entries != 100_000 || rep.Checkpoints != 0 {
		t.Fatalf("verify %+v, want 100000 unsigned events", rep)
	}
}

// The same for a disk that fails writes.
func TestWriteFailureIsQuiet(t *testing.T) {
	h := &countingHandler{}
	d := &disk{}
	d.failing.Store(true)
	l, err := Open(context.Background(), Options{Dir: t.TempDir(), Signer: newTestSigner(t, "k1"),
		CheckpointEvery: 100, CheckpointInterval: time.Millisecond, SyncInterval: 10 * time.Millisecond,
		Logger: slog.New(h), wrapFile: d.wrap, maxPending: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	for range 100_000 {
		l.Record(small)
	}
	// Let the writer's own tries run for a while.
	time.Sleep(300 * time.Millisecond)
	if err := l.Flush(context.Background()); err == nil {
		t.Fatal("Flush on a failing disk: want an error")
	}
	elapsed := time.Since(start)
	// Waits of 100 ms, 200 ms, ...: a few tries, plus the Flush.
	if writes, max := d.writes.Load(), int64(3+elapsed/(100*time.Millisecond)); writes > max {
		t.Errorf("%d writes tried in %v, want at most %d", writes, elapsed, max)
	}
	if n := h.count(slog.LevelError); n == 0 || n >= 10 {
		t.Errorf("%d error lines (%q), want 1 to 9", n, h.msgs)
	}
	d.failing.Store(false)
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if n := h.count(slog.LevelError); n >= 10 {
		t.Errorf("%d error lines after Close, want fewer than 10", n)
	}
	if l.Lost() == 0 {
		t.Error("no event lost with 1 MiB allowed to wait")
	}
}
