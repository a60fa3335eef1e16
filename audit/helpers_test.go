package audit

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// fakeClock is a clock that moves only when told.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// faultyFile fails writes and syncs while failing is set, as a full disk
// does.
type faultyFile struct {
	f       *os.File
	failing *atomic.Bool
	writes  *atomic.Int64 // failed writes
}

func (f faultyFile) Write(b []byte) (int, error) {
	if f.failing.Load() {
		f.writes.Add(1)
		return 0, &os.PathError{Op: "write", Path: f.f.Name(), Err: syscall.ENOSPC}
	}
	return f.f.Write(b)
}

func (f faultyFile) Sync() error {
	if f.failing.Load() {
		return &os.PathError{Op: "sync", Path: f.f.Name(), Err: syscall.EIO}
	}
	return f.f.Sync()
}

func (f faultyFile) Close() error { return f.f.Close() }

// disk makes the log's files fail on demand.
type disk struct {
	failing atomic.Bool
	writes  atomic.Int64
}

func (d *disk) wrap(f *os.File) writeFile {
	return faultyFile{f: f, failing: &d.failing, writes: &d.writes}
}

// countingHandler counts the log records at each level.
type countingHandler struct {
	mu     sync.Mutex
	counts map[slog.Level]int
	msgs   []string
}

func (h *countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *countingHandler) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *countingHandler) WithGroup(string) slog.Handler            { return h }
func (h *countingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.counts == nil {
		h.counts = map[slog.Level]int{}
	}
	h.counts[r.Level]++
	h.msgs = append(h.msgs, r.Message)
	return nil
}

func (h *countingHandler) count(level slog.Level) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.counts[level]
}

// allEntries reads every line of the log through Entries.
func allEntries(t testing.TB, l *Log) []Entry {
	t.Helper()
	var out []Entry
	for after := uint64(0); ; {
		page, _, err := l.Entries(context.Background(), after, MaxEntries)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			return out
		}
		for _, raw := range page {
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			out = append(out, e)
			after = e.Seq
		}
	}
}

// dirEntries reads every line of the log in dir (archived files too).
func dirEntries(t testing.TB, dir string) []Entry {
	t.Helper()
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	lr, err := openFiles(files, false)
	if err != nil {
		t.Fatal(err)
	}
	defer lr.Close()
	var out []Entry
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		out = append(out, e)
	}
}

// events keeps the event lines of entries.
func eventsOf(es []Entry) []Entry {
	var out []Entry
	for _, e := range es {
		if e.Type == TypeEvent {
			out = append(out, e)
		}
	}
	return out
}

// changeEvent is a state change with change seq c.
func changeEvent(c uint64) Event {
	e := event(int(c))
	e.Change = c
	return e
}

func changes(cs ...uint64) []Event {
	out := make([]Event, len(cs))
	for i, c := range cs {
		out[i] = changeEvent(c)
	}
	return out
}

// changesIn lists the change seqs of the event lines of entries.
func changesIn(es []Entry) []uint64 {
	var out []uint64
	for _, e := range es {
		if e.Type == TypeEvent && e.Change > 0 {
			out = append(out, e.Change)
		}
	}
	return out
}
