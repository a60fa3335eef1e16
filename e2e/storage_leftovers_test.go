package e2e

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestStorageLeftoversRemoved leaves in a state directory what interrupted
// restores, atomic writes and backups leave, and starts the daemon: each
// is removed with one line saying what it was, while an unfinished
// restore (its marker there) keeps everything and the daemon refuses to
// start. A backup removes the stale partial files of its target.
func TestStorageLeftoversRemoved(t *testing.T) {
	requireHSM(t)
	dir := workDir(t)
	d := startDaemon(t, dir)
	d.Stop(t)
	state := d.stateDir
	leftovers := []string{".restore-1234", ".replaced-5678", ".store.key.tmp-42", ".coffer.backup.partial-7"}
	plant := func() {
		t.Helper()
		for _, p := range []string{".restore-1234/data", ".replaced-5678/data"} {
			if err := os.MkdirAll(filepath.Join(state, p), 0o700); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{".replaced-5678/data/MANIFEST", ".store.key.tmp-42", ".coffer.backup.partial-7"} {
			if err := os.WriteFile(filepath.Join(state, f), []byte("left over"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
	}
	left := func() []string {
		var out []string
		for _, l := range leftovers {
			if _, err := os.Stat(filepath.Join(state, l)); err == nil {
				out = append(out, l)
			}
		}
		return out
	}

	// An unfinished restore: nothing is touched, the start is refused.
	plant()
	marker := filepath.Join(state, "restore.incomplete")
	if err := os.WriteFile(marker, []byte("coffer restore started\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d2 := launchDaemon(t, dir, "daemon", "--dev")
	if code := d2.waitExit(t); code == 0 || len(logLines(d2.stderr.String(), "did not finish")) != 1 {
		t.Fatalf("start during an unfinished restore: exit %d\n%s", code, d2.stderr)
	}
	if got := left(); !slices.Equal(got, leftovers) {
		t.Errorf("during an unfinished restore, leftovers %v, want all of %v", got, leftovers)
	}

	// Finished: they go.
	mustRemove(t, marker)
	d3 := startDaemon(t, dir)
	if got := left(); len(got) != 0 {
		t.Errorf("leftovers %v after a start, want none", got)
	}
	log := d3.stderr.String()
	for _, l := range leftovers {
		if n := len(logLines(log, "removed a leftover", filepath.Join(state, l))); n != 1 {
			t.Errorf("%d lines saying %s was removed, want 1", n, l)
		}
	}

	// A backup removes the stale partial files of its target.
	target := filepath.Join(dir, "coffer.backup")
	stale := filepath.Join(dir, ".coffer.backup.partial-123")
	if err := os.WriteFile(stale, []byte("cut short"), 0o600); err != nil {
		t.Fatal(err)
	}
	d3.mustCLI(t, "", "backup", target)
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("stale partial backup %s after a backup: %v", stale, err)
	}
}
