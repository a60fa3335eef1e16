package kv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestReopen(t *testing.T) {
	dir := t.TempDir()
	ctx := context.Background()
	s, err := Open(ctx, Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := put(t, s, "users", "01", user{Name: "alice"}, Index{Name: "email", Value: "a@x", Unique: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openTest(t, dir)
	if u, err := get(t, s, "users", "01"); err != nil || u.Name != "alice" {
		t.Fatalf("Get after reopen = %+v, %v", u, err)
	}
	if id, err := lookup(t, s, "users", "email", "a@x"); err != nil || id != "01" {
		t.Fatalf("Lookup after reopen = %q, %v", id, err)
	}
}

func TestOpenLocked(t *testing.T) {
	dir := t.TempDir()
	openTest(t, dir)
	s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger()})
	if err == nil {
		s.Close()
		t.Fatal("second Open succeeded")
	}
	want := fmt.Sprintf("kv: store %s is in use by another process (pid %d)", dir, os.Getpid())
	var le *LockedError
	if !errors.Is(err, ErrLocked) || !errors.As(err, &le) || le.PID != os.Getpid() || err.Error() != want {
		t.Fatalf("second Open err = %q, want ErrLocked as %q", err, want)
	}
}

func TestOpenErrors(t *testing.T) {
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	file := t.TempDir() + "/file"
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ctx  context.Context
		dir  string
	}{
		{"empty dir", context.Background(), ""},
		{"canceled", canceled, t.TempDir()},
		{"dir is a file", context.Background(), file},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(tt.ctx, Options{Dir: tt.dir, Logger: quietLogger()})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
		})
	}
}

// recordingHandler keeps every slog record it is given.
type recordingHandler struct {
	mu   sync.Mutex
	recs []slog.Record
}

func (h *recordingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *recordingHandler) Handle(_ context.Context, r slog.Record) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.recs = append(h.recs, r)
	return nil
}
func (h *recordingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordingHandler) WithGroup(string) slog.Handler      { return h }

func (h *recordingHandler) records() []slog.Record {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]slog.Record(nil), h.recs...)
}

func TestBadgerLogging(t *testing.T) {
	t.Run("open and close log nothing below warning", func(t *testing.T) {
		h := &recordingHandler{}
		var buf bytes.Buffer
		text := slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})
		dir := t.TempDir()
		for range 2 { // the second Open replays the value log
			s, err := Open(context.Background(), Options{Dir: dir, Logger: slog.New(multiHandler{h, text})})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := s.db.Opts().Logger.(*badgerLogger); !ok {
				t.Fatalf("badger logger is %T, want badgerLogger", s.db.Opts().Logger)
			}
			if err := put(t, s, "users", "01", user{Name: "alice"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
		}
		for _, r := range h.records() {
			if r.Level < slog.LevelWarn {
				t.Errorf("badger line below warning reached slog: %s", buf.String())
				break
			}
		}
	})

	tests := []struct {
		name      string
		log       func(*badgerLogger)
		wantLevel slog.Level
		wantMsg   string
	}{
		{"error", func(l *badgerLogger) { l.Errorf("disk %s\n", "full") }, slog.LevelError, "disk full"},
		{"warning", func(l *badgerLogger) { l.Warningf("slow %d", 3) }, slog.LevelWarn, "slow 3"},
		{"info dropped", func(l *badgerLogger) { l.Infof("opened") }, 0, ""},
		{"debug dropped", func(l *badgerLogger) { l.Debugf("detail") }, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &recordingHandler{}
			tt.log(newBadgerLogger(slog.New(h)))
			recs := h.records()
			if tt.wantMsg == "" {
				if len(recs) != 0 {
					t.Fatalf("got %d records, want none", len(recs))
				}
				return
			}
			if len(recs) != 1 || recs[0].Level != tt.wantLevel || recs[0].Message != tt.wantMsg {
				t.Fatalf("got %+v, want one %v %q", recs, tt.wantLevel, tt.wantMsg)
			}
		})
	}
}

type multiHandler []slog.Handler

func (m multiHandler) Enabled(context.Context, slog.Level) bool { return true }
func (m multiHandler) Handle(ctx context.Context, r slog.Record) error {
	for _, h := range m {
		if err := h.Handle(ctx, r.Clone()); err != nil {
			return err
		}
	}
	return nil
}
func (m multiHandler) WithAttrs([]slog.Attr) slog.Handler { return m }
func (m multiHandler) WithGroup(string) slog.Handler      { return m }

func TestGCLoopRunsAndStops(t *testing.T) {
	s, err := Open(context.Background(), Options{Dir: t.TempDir(), Logger: quietLogger(), GCInterval: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		if err := put(t, s, "users", fmt.Sprintf("%02d", i), user{N: i}); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(20 * time.Millisecond) // let a few GC ticks run alongside writes
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.gcDone:
	default:
		t.Fatal("GC loop still running after Close")
	}
}

const helperDirEnv = "COFFER_KV_HELPER_DIR"

// TestHelperProcess is not a test: TestKill9Durability runs the test binary
// with helperDirEnv set, and this writes records until it is killed.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestKill9Durability")
	}
	ctx := context.Background()
	s, err := Open(ctx, Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	for i := 0; i < 100000; i++ {
		err := s.Update(ctx, func(tx *Txn) error {
			return tx.Put("records", fmt.Sprintf("%08d", i), user{N: i}, Index{Name: "n", Value: strconv.Itoa(i), Unique: true})
		})
		if err != nil {
			fmt.Println("update failed:", err)
			os.Exit(2)
		}
		fmt.Printf("acked %d\n", i)
	}
	os.Exit(3) // never killed: the parent fails
}

func TestKill9Durability(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a subprocess")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperDirEnv+"="+dir)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const killAfter = 200
	acked := -1
	killed := false
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, "acked ")
		if !ok {
			t.Logf("helper: %s", line)
			continue
		}
		n, err := strconv.Atoi(rest)
		if err != nil || n != acked+1 {
			t.Fatalf("helper printed %q after acked %d", line, acked)
		}
		acked = n
		if !killed && acked >= killAfter {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited (%v) after %d acks before being killed", cmd.ProcessState, acked+1)
	}
	t.Logf("helper killed after %d acknowledged writes", acked+1)

	h := &recordingHandler{}
	s, err := Open(context.Background(), Options{Dir: dir, Logger: slog.New(h)})
	if err != nil {
		t.Fatalf("Open after kill -9: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	if n := uncleanWarnings(h, cmd.Process.Pid); n != 1 {
		t.Errorf("Open after kill -9 logged %d unclean-shutdown warnings naming pid %d, want 1: %+v", n, cmd.Process.Pid, h.records())
	}
	for i := 0; i <= acked; i++ {
		id := fmt.Sprintf("%08d", i)
		u, err := get(t, s, "records", id)
		if err != nil || u.N != i {
			t.Fatalf("acknowledged record %s after kill -9: %+v, %v", id, u, err)
		}
		if got, err := lookup(t, s, "records", "n", strconv.Itoa(i)); err != nil || got != id {
			t.Fatalf("index of acknowledged record %s after kill -9: %q, %v", id, got, err)
		}
	}
	if n := count(t, s, "records", Query{}); n < acked+1 {
		t.Fatalf("Count = %d, want >= %d", n, acked+1)
	}
	// The store is still writable after recovery.
	if err := put(t, s, "records", "zz", user{}); err != nil {
		t.Fatalf("Put after recovery: %v", err)
	}
}
