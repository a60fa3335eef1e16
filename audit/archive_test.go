package audit

import (
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/durable"
)

// dirFiles lists the names in dir.
func dirFiles(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// logSize is the size of the log files in dir, and of the largest one.
func logSize(t testing.TB, dir string) (total, largest int64) {
	t.Helper()
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		st, err := os.Stat(f.path)
		if err != nil {
			t.Fatal(err)
		}
		total += st.Size()
		largest = max(largest, st.Size())
	}
	return total, largest
}

// Rotated files are compressed; every reader reads them.
func TestArchive(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l, err := Open(context.Background(), Options{Dir: dir, Signer: s, CheckpointEvery: 4, CheckpointInterval: time.Hour,
		MaxFileSize: 600, MaxTotalSize: -1, Logger: discard()})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 40 {
		l.Record(event(i))
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.archiveOnce(); err != nil {
		t.Fatal(err)
	}
	var archived int
	for _, name := range dirFiles(t, dir) {
		switch {
		case strings.HasSuffix(name, ".log"+gzSuffix):
			archived++
		case name == currentName || name == headName || name == durable.WitnessName:
		default:
			t.Errorf("unexpected file %s", name)
		}
	}
	if archived < 5 {
		t.Fatalf("%d archived files, want at least 5", archived)
	}
	es := allEntries(t, l)
	var got []string
	for i, e := range es {
		if e.Seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, e.Seq)
		}
		if e.Type == TypeEvent {
			got = append(got, e.Target["secret"])
		}
	}
	if len(got) != 40 || got[0] != "id-000" || got[39] != "id-039" {
		t.Fatalf("events read back: %v", got)
	}
	page, last, err := l.Tail(context.Background(), 3)
	if err != nil || len(page) != 3 || last != es[len(es)-1].Seq {
		t.Fatalf("tail: %d entries, last %d, %v", len(page), last, err)
	}
	closeLog(t, l) // the last line is a checkpoint (40 events, one after every 4): nothing more
	rep := verifyDir(t, dir, s.keys())
	if !rep.OK || rep.FirstSeq != 1 || rep.Entries != uint64(len(es)) {
		t.Fatalf("verify %+v, want ok from entry 1", rep)
	}
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	one, err := VerifyFile(context.Background(), files[1].path, s.keys())
	if err != nil || !one.OK || one.FirstSeq != files[1].firstSeq || !files[1].gz {
		t.Fatalf("VerifyFile(%s) = %+v, %v", files[1].path, one, err)
	}
	// A restart goes on from the archived files.
	l = openLog(t, dir, s, 4, 600)
	l.Record(event(99))
	closeLog(t, l)
	if rep := verifyDir(t, dir, s.keys()); !rep.OK || rep.FirstSeq != 1 {
		t.Fatalf("after a restart: %+v", rep)
	}
}

// A crash while archiving leaves both forms of a file, or a partial
// archive: the next pass finishes the work, and readers read meanwhile.
func TestArchiveAfterCrash(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	opts := Options{Dir: dir, Signer: s, CheckpointEvery: 4, CheckpointInterval: time.Hour,
		MaxFileSize: 600, MaxTotalSize: -1, Logger: discard()}
	l, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 30 {
		l.Record(event(i))
	}
	closeLog(t, l)
	l, err = Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.archiveOnce(); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)
	files, err := listFiles(dir)
	if err != nil || len(files) < 4 || !files[0].gz || !files[1].gz {
		t.Fatalf("files %+v, %v", files, err)
	}
	// Both forms of the first file; only a partial archive of the second.
	unzip(t, files[0].path)
	unzip(t, files[1].path)
	if err := os.Rename(files[1].path, strings.TrimSuffix(files[1].path, gzSuffix)+gzSuffix+".tmp"); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(strings.TrimSuffix(files[1].path, gzSuffix)+gzSuffix+".tmp", 20); err != nil {
		t.Fatal(err)
	}
	if rep := verifyDir(t, dir, s.keys()); !rep.OK || rep.FirstSeq != 1 {
		t.Fatalf("before the pass: %+v", rep)
	}
	l, err = Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.archiveOnce(); err != nil {
		t.Fatal(err)
	}
	for _, name := range dirFiles(t, dir) {
		if _, gz, ok := parseRotated(name); (ok && !gz) || strings.HasSuffix(name, ".tmp") {
			t.Errorf("left after the pass: %s", name)
		}
	}
	closeLog(t, l)
	if rep := verifyDir(t, dir, s.keys()); !rep.OK || rep.FirstSeq != 1 {
		t.Fatalf("after the pass: %+v", rep)
	}
}

// unzip writes the uncompressed form of an archived file next to it.
func unzip(t testing.TB, path string) {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	zr, err := gzip.NewReader(in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := os.Create(strings.TrimSuffix(path, gzSuffix))
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	if _, err := io.Copy(out, zr); err != nil {
		t.Fatal(err)
	}
}

// retentionOptions rotate after about 2 KB and keep about 6 KB.
func retentionOptions(dir string, s Signer) Options {
	return Options{Dir: dir, Signer: s, CheckpointEvery: 5, CheckpointInterval: time.Hour,
		MaxFileSize: 2000, MaxTotalSize: 6000, Logger: discard()}
}

// prunedLog writes a log under a tight budget, archiving as it goes.
func prunedLog(t *testing.T) (string, *testSigner) {
	t.Helper()
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l, err := Open(context.Background(), retentionOptions(dir, s))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 600 {
		l.Record(event(i))
		if i%50 == 49 {
			if err := l.Flush(context.Background()); err != nil {
				t.Fatal(err)
			}
			if err := l.archiveOnce(); err != nil {
				t.Fatal(err)
			}
			if total, largest := logSize(t, dir); total > 6000+largest {
				t.Fatalf("after %d events: %d bytes of log files, want at most the budget and one file (%d)", i+1, total, 6000+largest)
			}
		}
	}
	closeLog(t, l)
	return dir, s
}

// Under a tight budget the oldest files go, each recorded and signed
// first; the log verifies from where it starts now.
func TestRetention(t *testing.T) {
	dir, s := prunedLog(t)
	rep := verifyDir(t, dir, s.keys())
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !rep.OK || rep.FirstSeq != files[0].firstSeq || rep.Pruned != rep.FirstSeq-1 || rep.Pruned == 0 {
		t.Fatalf("verify %+v, want ok from entry %d", rep, files[0].firstSeq)
	}
	if n := len(rep.Notes); n == 0 || !strings.Contains(rep.Notes[n-1], fmt.Sprintf("entries 1 to %d were deleted by retention", rep.Pruned)) {
		t.Fatalf("notes %q", rep.Notes)
	}
	es := dirEntries(t, dir)
	var pruned []Entry
	for _, e := range es {
		if e.Action == ActionPruned {
			pruned = append(pruned, e)
		}
	}
	if len(pruned) == 0 {
		t.Fatal("no audit.pruned entry in the log")
	}
	p := pruned[len(pruned)-1]
	name := rotatedName(mustUint(t, p.Target[TargetFirstSeq]))
	if p.Target[TargetLastSeq] != fmt.Sprint(rep.Pruned) || p.Target[TargetPrev] != es[0].Prev ||
		(p.Target[TargetFile] != name && p.Target[TargetFile] != name+gzSuffix) || p.Outcome != OutcomeOK {
		t.Fatalf("the last pruned entry %+v; the log starts with %+v", p, es[0])
	}
	// A restart goes on.
	l, err := Open(context.Background(), retentionOptions(dir, s))
	if err != nil {
		t.Fatal(err)
	}
	l.Record(event(1000))
	closeLog(t, l)
	if rep := verifyDir(t, dir, s.keys()); !rep.OK {
		t.Fatalf("after a restart: %+v", rep)
	}
}

func mustUint(t testing.TB, s string) uint64 {
	t.Helper()
	var n uint64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}

// Deleting files without a signed record is a gap verification reports.
func TestVerifyFindsUnrecordedDeletion(t *testing.T) {
	t.Run("a file more than retention deleted", func(t *testing.T) {
		dir, s := prunedLog(t)
		files, err := listFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(files[0].path); err != nil {
			t.Fatal(err)
		}
		rep := verifyDir(t, dir, s.keys())
		if rep.OK || rep.FirstBadSeq != files[0].firstSeq ||
			!strings.Contains(rep.Reason, fmt.Sprintf("the log starts at entry %d: entries %d to %d were deleted and no signed audit.pruned entry records it", files[1].firstSeq, files[0].firstSeq, files[1].firstSeq-1)) {
			t.Fatalf("report %+v, want entries from %d missing", rep, files[0].firstSeq)
		}
	})
	t.Run("the first file of a log never pruned", func(t *testing.T) {
		dir := t.TempDir()
		s := newTestSigner(t, "k1")
		l := openLog(t, dir, s, 4, 600)
		for i := range 20 {
			l.Record(event(i))
		}
		closeLog(t, l)
		files, err := listFiles(dir)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Remove(files[0].path); err != nil {
			t.Fatal(err)
		}
		rep := verifyDir(t, dir, s.keys())
		if rep.OK || rep.FirstBadSeq != 1 || !strings.Contains(rep.Reason, "entries 1 to") {
			t.Fatalf("report %+v, want entries from 1 missing", rep)
		}
	})
}

// Files are deleted only once a checkpoint signs their record: while the
// HSM fails, the directory stays over budget.
func TestPruneWaitsForTheSignature(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	opts := retentionOptions(dir, s)
	opts.MaxTotalSize = -1
	l, err := Open(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 200 {
		l.Record(event(i))
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.archiveOnce(); err != nil {
		t.Fatal(err)
	}
	before := dirFiles(t, dir)
	l.archMu.Lock()
	l.opts.MaxTotalSize = 3000
	l.archMu.Unlock()
	s.fail.Store(true)
	if err := l.archiveOnce(); err == nil || !strings.Contains(err.Error(), "hsm unavailable") {
		t.Fatalf("archive with a failing signer: %v", err)
	}
	if after := dirFiles(t, dir); !slices.Equal(after, before) {
		t.Fatalf("files %v, want %v: nothing deleted", after, before)
	}
	s.fail.Store(false)
	if err := l.archiveOnce(); err != nil {
		t.Fatal(err)
	}
	closeLog(t, l)
	if total, largest := logSize(t, dir); total > 3000+largest {
		t.Fatalf("%d bytes of log files, want at most %d", total, 3000+largest)
	}
	if rep := verifyDir(t, dir, s.keys()); !rep.OK || rep.Pruned == 0 {
		t.Fatalf("verify %+v", rep)
	}
}

// TestArchivePaces checks that the archiver's reader waits pace times as
// long as its caller worked on each chunk before handing out the next:
// the archive of a rotated file takes at most a quarter of a CPU.
func TestArchivePaces(t *testing.T) {
	const chunks, work = 5, 20 * time.Millisecond
	r := &stopReader{r: strings.NewReader(strings.Repeat("x", chunks)), stop: make(chan struct{}), pace: archivePace}
	buf := make([]byte, 1)
	start := time.Now()
	for {
		n, err := r.Read(buf)
		if n == 0 || err != nil {
			break
		}
		time.Sleep(work) // compressing the chunk
	}
	// chunks reads after work each; each read but the first waited
	// pace*work (the read that finds EOF waits too).
	want := chunks*work + chunks*archivePace*work
	if got := time.Since(start); got < want {
		t.Errorf("archiving %d chunks of %v work took %v, want at least %v", chunks, work, got, want)
	}
}
