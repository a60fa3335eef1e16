package kv

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// uncleanWarnings counts the warnings of Open about a store left open by
// the process pid.
func uncleanWarnings(h *recordingHandler, pid int) int {
	n := 0
	for _, r := range h.records() {
		if r.Level != slog.LevelWarn || !strings.Contains(r.Message, "not closed cleanly") {
			continue
		}
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "previous_pid" && a.Value.Int64() == int64(pid) {
				n++
			}
			return true
		})
	}
	return n
}

// TestOpenUncleanShutdown: a pid file left without its flock (what a killed
// process leaves) is recovered with one warning; a clean Close leaves
// nothing to warn about.
func TestOpenUncleanShutdown(t *testing.T) {
	tests := []struct {
		name     string
		leftover string // content of a LOCK file left behind; "" = none
		wantPID  int    // previous_pid in the warning; -1 = no warning
	}{
		{"clean close", "", -1},
		{"pid left behind", "4242\n", 4242},
		{"garbage pid file", "not a pid", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openTest(t, dir)
			if err := put(t, s, "users", "01", user{Name: "alice"}); err != nil {
				t.Fatal(err)
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			lock := filepath.Join(dir, lockFileName)
			if _, err := os.Stat(lock); !errors.Is(err, os.ErrNotExist) {
				t.Fatalf("a clean Close left %s behind (%v): Open cannot tell a crash from a clean stop", lock, err)
			}
			if tc.leftover != "" {
				if err := os.WriteFile(lock, []byte(tc.leftover), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			h := &recordingHandler{}
			s, err := Open(context.Background(), Options{Dir: dir, Logger: slog.New(h)})
			if err != nil {
				t.Fatalf("Open over a stale pid file: %v", err)
			}
			defer s.Close()
			warned := 0
			for _, r := range h.records() {
				if strings.Contains(r.Message, "not closed cleanly") {
					warned++
				}
			}
			switch {
			case tc.wantPID < 0 && warned != 0:
				t.Errorf("clean reopen logged %d unclean-shutdown warnings", warned)
			case tc.wantPID >= 0 && (warned != 1 || uncleanWarnings(h, tc.wantPID) != 1):
				t.Errorf("got %d unclean-shutdown warnings (%+v), want one with previous_pid %d", warned, h.records(), tc.wantPID)
			}
			if u, err := get(t, s, "users", "01"); err != nil || u.Name != "alice" {
				t.Errorf("record after recovery: %+v, %v", u, err)
			}
			if pid, found := lockHolder(dir); !found || pid != os.Getpid() {
				t.Errorf("pid file after Open names %d (found %v), want this process %d", pid, found, os.Getpid())
			}
		})
	}
}
