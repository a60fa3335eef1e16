package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// testSigner is an in-memory P-256 key standing in for the HSM.
type testSigner struct {
	key   *ecdsa.PrivateKey
	kid   string
	fail  atomic.Bool
	calls atomic.Int64
}

func newTestSigner(t testing.TB, kid string) *testSigner {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &testSigner{key: k, kid: kid}
}

func (s *testSigner) Sign(_ context.Context, digest []byte) ([]byte, string, error) {
	s.calls.Add(1)
	if s.fail.Load() {
		return nil, "", errors.New("hsm unavailable")
	}
	r, ss, err := ecdsa.Sign(rand.Reader, s.key, digest)
	if err != nil {
		return nil, "", err
	}
	if ss.Cmp(p256HalfOrder) > 0 { // low-S, as the daemon's SignAudit writes
		ss.Sub(elliptic.P256().Params().N, ss)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	return sig, s.kid, nil
}

func (s *testSigner) keys() Keys { return Keys{s.kid: &s.key.PublicKey} }

// openLog opens a log in dir that checkpoints every `every` events and
// never on its own clock.
func openLog(t testing.TB, dir string, s Signer, every int, maxSize int64) *Log {
	t.Helper()
	l, err := Open(context.Background(), Options{
		Dir: dir, Signer: s, CheckpointEvery: every, CheckpointInterval: time.Hour,
		MaxFileSize: maxSize, Logger: discard(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func closeLog(t testing.TB, l *Log) {
	t.Helper()
	if err := l.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func event(i int) Event {
	uid := uint32(1000)
	return Event{Action: "secret.create", Outcome: OutcomeOK, Status: 201,
		Principal: &Principal{Channel: "unix", UID: &uid},
		Target:    map[string]string{"secret": fmt.Sprintf("id-%03d", i)}}
}

func verifyDir(t testing.TB, dir string, keys KeySource) Report {
	t.Helper()
	rep, err := VerifyDir(context.Background(), dir, keys)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func TestChainAcrossRestartsAndFiles(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	// Small files: rotation after nearly every checkpoint.
	for run := range 3 {
		l := openLog(t, dir, s, 4, 600)
		for i := range 10 {
			l.Record(event(run*10 + i))
		}
		closeLog(t, l)
		rep := verifyDir(t, dir, s.keys())
		if !rep.OK {
			t.Fatalf("run %d: verify failed: %+v", run, rep)
		}
		if rep.Unsigned != 0 || rep.LastCheckpoint != rep.LastSeq {
			t.Errorf("run %d: the log should end with a checkpoint: %+v", run, rep)
		}
	}
	files, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 3 {
		t.Fatalf("want rotated files, got %d", len(files))
	}
	// 30 events, a checkpoint after every 4 and one at each close
	// (7+1, 7+1, 7+1: the closes follow 2 events each).
	rep := verifyDir(t, dir, s.keys())
	if rep.Entries != 30+3*3 || rep.Checkpoints != 9 || rep.FirstSeq != 1 {
		t.Errorf("report %+v, want 39 entries of which 9 checkpoints", rep)
	}
	// Every event is there once, in order.
	l := openLog(t, dir, s, 4, 600)
	defer closeLog(t, l)
	var got []string
	for after := uint64(0); ; {
		page, last, err := l.Entries(context.Background(), after, 7)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			if last != after {
				t.Errorf("last seq %d, read up to %d", last, after)
			}
			break
		}
		for _, raw := range page {
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatal(err)
			}
			if e.Seq != after+1 {
				t.Fatalf("entries: seq %d after %d", e.Seq, after)
			}
			after = e.Seq
			if e.Type == TypeEvent {
				got = append(got, e.Target["secret"])
			}
		}
	}
	if len(got) != 30 || got[0] != "id-000" || got[29] != "id-029" {
		t.Errorf("events read back: %v", got)
	}
}

func TestConcurrentRecord(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 100, 0)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 250 {
				l.Record(event(g*1000 + i))
			}
		})
	}
	wg.Wait()
	closeLog(t, l)
	rep := verifyDir(t, dir, s.keys())
	if !rep.OK || rep.Entries-rep.Checkpoints != 2000 {
		t.Fatalf("report %+v, want 2000 events", rep)
	}
}

func TestRecordAfterCloseIsDropped(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 100, 0)
	l.Record(event(1))
	closeLog(t, l)
	l.Record(event(2)) // must neither block nor panic
	if err := l.Close(context.Background()); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if rep := verifyDir(t, dir, s.keys()); !rep.OK || rep.Entries != 2 {
		t.Fatalf("report %+v, want 1 event and 1 checkpoint", rep)
	}
}

func TestSignFailureRetries(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 2, 0)
	s.fail.Store(true)
	for i := range 3 {
		l.Record(event(i))
	}
	if err := l.Checkpoint(context.Background()); err == nil {
		t.Fatal("Checkpoint with a failing signer: want an error")
	}
	s.fail.Store(false)
	closeLog(t, l)
	rep := verifyDir(t, dir, s.keys())
	if !rep.OK || rep.Checkpoints != 1 || rep.Entries != 4 {
		t.Fatalf("report %+v, want 3 events and the closing checkpoint", rep)
	}
}

func TestTornLastLineIsRecovered(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 100, 0)
	l.Record(event(1))
	closeLog(t, l)
	appendFile(t, filepath.Join(dir, currentName), `{"seq":3,"time":"2026`)
	if rep := verifyDir(t, dir, s.keys()); rep.OK || rep.FirstBadSeq != 3 {
		t.Fatalf("torn line before restart: %+v, want first bad 3", rep)
	}
	l = openLog(t, dir, s, 100, 0)
	l.Record(event(2))
	closeLog(t, l)
	rep := verifyDir(t, dir, s.keys())
	if !rep.OK || len(rep.Notes) != 1 || !strings.Contains(rep.Notes[0], "incomplete") {
		t.Fatalf("report %+v, want ok with a note on the removed line", rep)
	}
}

func TestEntriesSkipsNothingWhileWriting(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 50, 2000)
	defer closeLog(t, l)
	for i := range 120 {
		l.Record(event(i))
	}
	page, last, err := l.Entries(context.Background(), 0, MaxEntries)
	if err != nil {
		t.Fatal(err)
	}
	if uint64(len(page)) != last || last < 120 {
		t.Fatalf("got %d entries, last seq %d: want all written entries", len(page), last)
	}
	if rep, err := l.Verify(context.Background()); err == nil {
		t.Fatalf("Verify without keys: %+v, want an error", rep)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

func appendFile(t testing.TB, path, s string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString(s); err != nil {
		t.Fatal(err)
	}
}

func TestChainHashes(t *testing.T) {
	// The format is a contract with external verifiers: the first line's
	// prev is 64 zeros and each prev is the SHA-256 of the line before.
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 100, 0)
	l.Record(event(1))
	l.Record(event(2))
	closeLog(t, l)
	data, err := os.ReadFile(filepath.Join(dir, currentName))
	if err != nil {
		t.Fatal(err)
	}
	lines := bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
	prev := strings.Repeat("0", 64)
	for i, line := range lines {
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		if e.Seq != uint64(i+1) || e.Prev != prev {
			t.Fatalf("line %d: seq %d prev %s, want %d %s", i, e.Seq, e.Prev, i+1, prev)
		}
		prev = fmt.Sprintf("%x", sha256.Sum256(line))
	}
	head, err := readHead(dir)
	if err != nil || !bytes.Equal(head, lines[len(lines)-1]) {
		t.Fatalf("head = %q (%v), want the last checkpoint line", head, err)
	}
}

func TestEntriesFromAnywhere(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 500, 0)
	defer closeLog(t, l)
	for i := range 3000 {
		l.Record(event(i))
	}
	ctx := context.Background()
	if err := l.Flush(ctx); err != nil {
		t.Fatal(err)
	}
	l.marksMu.Lock()
	marks := len(l.marks)
	l.marksMu.Unlock()
	if marks < 2 {
		t.Fatalf("want the reader index to have marks, got %d", marks)
	}
	// 3000 events and a checkpoint after every 500: 3006 lines.
	for _, after := range []uint64{0, 1, 999, 1700, 2500, 3004, 3005, 3006} {
		page, last, err := l.Entries(ctx, after, 3)
		if err != nil {
			t.Fatal(err)
		}
		want := min(3, int(last-min(last, after)))
		if len(page) != want {
			t.Fatalf("after %d: %d entries, want %d (last %d)", after, len(page), want, last)
		}
		for i, raw := range page {
			if seq, _ := peekSeq(raw); seq != after+1+uint64(i) {
				t.Fatalf("after %d: entry %d has seq %d", after, i, seq)
			}
		}
	}
	page, last, err := l.Tail(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(page) != 2 || last != 3006 {
		t.Fatalf("tail: %d entries, last %d; want 2, 3006", len(page), last)
	}
	if seq, _ := peekSeq(page[1]); seq != last {
		t.Fatalf("tail ends at %d, want %d", seq, last)
	}
}
