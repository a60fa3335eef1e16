package audit

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestAppend(t *testing.T) {
	tests := []struct {
		name    string
		batches [][]uint64
		errs    []string // per batch: "" or a part of the error
		want    []uint64 // change seqs in the log, in order
	}{
		{"in order", [][]uint64{{1, 2, 3}}, []string{""}, []uint64{1, 2, 3}},
		{"one by one", [][]uint64{{1}, {2}, {3}}, []string{"", "", ""}, []uint64{1, 2, 3}},
		{"a batch delivered again", [][]uint64{{1, 2, 3}, {1, 2, 3}}, []string{"", ""}, []uint64{1, 2, 3}},
		{"overlapping batches", [][]uint64{{1, 2, 3}, {2, 3, 4, 5}}, []string{"", ""}, []uint64{1, 2, 3, 4, 5}},
		{"gaps are the store's business", [][]uint64{{1, 2}, {5, 9}}, []string{"", ""}, []uint64{1, 2, 5, 9}},
		{"an older batch is skipped", [][]uint64{{4, 5}, {1, 2}}, []string{"", ""}, []uint64{4, 5}},
		{"empty", [][]uint64{{}}, []string{""}, nil},
		{"change 0", [][]uint64{{1}, {0}}, []string{"", "event 0 has change seq 0"}, []uint64{1}},
		{"not increasing", [][]uint64{{3, 2}}, []string{"event 1 has change seq 2"}, nil},
		{"repeated", [][]uint64{{1, 2, 2}}, []string{"event 2 has change seq 2"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := newTestSigner(t, "k1")
			l := openLog(t, dir, s, 100, 0)
			ctx := context.Background()
			for i, b := range tt.batches {
				err := l.Append(ctx, changes(b...))
				switch {
				case tt.errs[i] == "" && err != nil:
					t.Fatalf("batch %d %v: %v", i, b, err)
				case tt.errs[i] != "" && (err == nil || !strings.Contains(err.Error(), tt.errs[i])):
					t.Fatalf("batch %d %v: error %v, want one with %q", i, b, err, tt.errs[i])
				}
			}
			var want uint64
			if n := len(tt.want); n > 0 {
				want = tt.want[n-1]
			}
			if got := l.LastChange(); got != want {
				t.Errorf("LastChange = %d, want %d", got, want)
			}
			if got := changesIn(allEntries(t, l)); !slices.Equal(got, tt.want) {
				t.Errorf("changes in the log %v, want %v", got, tt.want)
			}
			closeLog(t, l)
			rep := verifyDir(t, dir, s.keys())
			if !rep.OK || rep.LastChange != want {
				t.Errorf("verify: %+v, want ok with last change %d", rep, want)
			}
		})
	}
}

// Append's events come after the events recorded before it, and are on
// disk when it returns.
func TestAppendAfterRecordAndSynced(t *testing.T) {
	dir := t.TempDir()
	d := &disk{}
	l, err := Open(context.Background(), Options{Dir: dir, Signer: newTestSigner(t, "k1"),
		CheckpointEvery: 100, CheckpointInterval: time.Hour, SyncInterval: time.Hour,
		Logger: discard(), wrapFile: d.wrap})
	if err != nil {
		t.Fatal(err)
	}
	defer closeLog(t, l)
	l.Record(event(1))
	l.Record(event(2))
	if err := l.Append(context.Background(), changes(7)); err != nil {
		t.Fatal(err)
	}
	if l.unsyncedForTest() {
		t.Error("Append returned with the file not synced")
	}
	es := allEntries(t, l)
	if len(es) != 3 || es[0].Target["secret"] != "id-001" || es[1].Target["secret"] != "id-002" || es[2].Change != 7 {
		t.Fatalf("entries %+v, want the two recorded events, then change 7", es)
	}
}

// unsyncedForTest asks the writer whether it has unsynced lines.
func (l *Log) unsyncedForTest() bool {
	// Flush goes through the writer: after it, reading its state races
	// with nothing but the tick, which SyncInterval keeps away.
	if err := l.Flush(context.Background()); err != nil {
		panic(err)
	}
	return l.unsynced
}

// Append after a failed write or sync: the events stay in the log and
// are written once; when too much waits, they are not taken at all.
func TestAppendRetryAfterFailure(t *testing.T) {
	ctx := context.Background()
	for _, pending := range []int{0, 1} {
		t.Run(map[int]string{0: "kept", 1: "refused"}[pending], func(t *testing.T) {
			dir := t.TempDir()
			d := &disk{}
			s := newTestSigner(t, "k1")
			l, err := Open(ctx, Options{Dir: dir, Signer: s, CheckpointEvery: 100, CheckpointInterval: time.Hour,
				Logger: discard(), wrapFile: d.wrap, maxPending: pending})
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Append(ctx, changes(1, 2)); err != nil {
				t.Fatal(err)
			}
			d.failing.Store(true)
			if err := l.Append(ctx, changes(3, 4)); err == nil || !strings.Contains(err.Error(), "no space left") {
				t.Fatalf("Append on a full disk: %v, want ENOSPC", err)
			}
			err = l.Append(ctx, changes(3, 4, 5))
			switch {
			case pending == 0 && (err == nil || !strings.Contains(err.Error(), "no space left")):
				t.Fatalf("Append again on a full disk: %v, want ENOSPC", err)
			case pending == 1 && !errors.Is(err, errBehind):
				t.Fatalf("Append again with a byte allowed to wait: %v, want errBehind", err)
			}
			if got := l.LastChange(); got != 2 {
				t.Fatalf("LastChange on a full disk = %d, want 2", got)
			}
			d.failing.Store(false)
			if err := l.Append(ctx, changes(3, 4, 5)); err != nil {
				t.Fatal(err)
			}
			if got := l.LastChange(); got != 5 {
				t.Fatalf("LastChange = %d, want 5", got)
			}
			if got := changesIn(allEntries(t, l)); !slices.Equal(got, []uint64{1, 2, 3, 4, 5}) {
				t.Fatalf("changes in the log %v, want 1..5 once each", got)
			}
			closeLog(t, l)
			if rep := verifyDir(t, dir, s.keys()); !rep.OK || rep.LastChange != 5 {
				t.Fatalf("verify %+v", rep)
			}
		})
	}
}

// copyDir copies the regular files of src into a new directory: the
// state a crash would leave of a running log whose writes are synced.
func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		in, err := os.Open(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out, err := os.Create(filepath.Join(dst, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(out, in); err != nil {
			t.Fatal(err)
		}
		in.Close()
		out.Close()
	}
	return dst
}

// LastChange after Open is the highest change seq in the files, however
// the last run ended.
func TestLastChangeAfterRestart(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name    string
		every   int
		maxSize int64
		run     func(t *testing.T, l *Log) // then the directory is copied (a crash)
		want    uint64
		gz      bool // the last checkpoint is in an archived file
	}{
		{"empty", 100, 0, func(t *testing.T, l *Log) {}, 0, false},
		{"events only, no change", 100, 0, func(t *testing.T, l *Log) {
			l.Record(event(1))
			if err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}, 0, false},
		{"changes after the last checkpoint", 100, 0, func(t *testing.T, l *Log) {
			mustAppend(t, l, 1, 2, 3)
			if err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			mustAppend(t, l, 4, 5)
			l.Record(event(9))
			if err := l.Flush(ctx); err != nil {
				t.Fatal(err)
			}
		}, 5, false},
		{"the last checkpoint carries it", 100, 0, func(t *testing.T, l *Log) {
			mustAppend(t, l, 1, 2, 3)
			if err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				l.Record(event(i))
			}
			if err := l.Checkpoint(ctx); err != nil {
				t.Fatal(err)
			}
		}, 3, false},
		{"no checkpoint at all", 1000, 0, func(t *testing.T, l *Log) {
			mustAppend(t, l, 1, 2)
			for i := range 50 {
				l.Record(event(i))
			}
			mustAppend(t, l, 3)
		}, 3, false},
		{"the last checkpoint is in an archived file", 3, 1, func(t *testing.T, l *Log) {
			mustAppend(t, l, 10, 11, 12) // a checkpoint after 12, then rotation
			if err := l.archiveOnce(); err != nil {
				t.Fatal(err)
			}
		}, 12, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := newTestSigner(t, "k1")
			l, err := Open(ctx, Options{Dir: dir, Signer: s, CheckpointEvery: tt.every, CheckpointInterval: time.Hour,
				MaxFileSize: tt.maxSize, MaxTotalSize: -1, Logger: discard()})
			if err != nil {
				t.Fatal(err)
			}
			tt.run(t, l)
			crashed := copyDir(t, dir)
			closeLog(t, l)
			if tt.gz {
				files, err := listFiles(crashed)
				if err != nil || len(files) != 2 || !files[0].gz || files[1].firstSeq != 0 {
					t.Fatalf("want an archived file and an empty audit.log, got %+v (%v)", files, err)
				}
			}
			l, err = Open(ctx, Options{Dir: crashed, Signer: s, CheckpointEvery: tt.every, CheckpointInterval: time.Hour,
				MaxFileSize: tt.maxSize, MaxTotalSize: -1, Logger: discard()})
			if err != nil {
				t.Fatal(err)
			}
			if got := l.LastChange(); got != tt.want {
				t.Errorf("LastChange after restart = %d, want %d", got, tt.want)
			}
			// Redelivery after the crash writes only what is new.
			mustAppend(t, l, tt.want, tt.want+1)
			closeLog(t, l)
			rep := verifyDir(t, crashed, s.keys())
			if !rep.OK || rep.LastChange != tt.want+1 {
				t.Fatalf("verify: %+v, want ok with last change %d", rep, tt.want+1)
			}
			got := changesIn(dirEntries(t, crashed))
			if n := len(got); n == 0 || got[n-1] != tt.want+1 || slices.Contains(got[:n-1], tt.want+1) {
				t.Fatalf("changes in the log %v: want %d once, at the end", got, tt.want+1)
			}
		})
	}
}

func mustAppend(t testing.TB, l *Log, cs ...uint64) {
	t.Helper()
	var evs []Event
	for _, c := range cs {
		if c > 0 {
			evs = append(evs, changeEvent(c))
		}
	}
	if err := l.Append(context.Background(), evs); err != nil {
		t.Fatal(err)
	}
}
