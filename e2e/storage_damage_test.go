package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestStorageDamageRefused damages a stopped (or killed) daemon's store
// the ways disks, power cuts and people do, and starts it again: each
// start is refused with one line naming the damaged file, never a Go
// stack dump, nothing is served, and no file is deleted (Badger would
// delete the tables of a store without its MANIFEST; coffer keeps what
// it changes in data/kept). Then store check says the same, and coffer
// restore of the backup taken before is the way back.
func TestStorageDamageRefused(t *testing.T) {
	requireHSM(t)
	for _, tc := range []struct {
		name   string
		kill   bool // kill -9 (a write-ahead log with data), else a clean stop (tables)
		damage func(t *testing.T, data string)
		want   string // in the refusal
	}{
		{"MANIFEST removed", false, func(t *testing.T, data string) {
			mustRemove(t, filepath.Join(data, "MANIFEST"))
		}, "MANIFEST is missing while"},
		{"MANIFEST truncated", false, func(t *testing.T, data string) {
			if err := os.Truncate(filepath.Join(data, "MANIFEST"), 8); err != nil {
				t.Fatal(err)
			}
		}, "committed changes are missing"},
		{"KEYREGISTRY removed", false, func(t *testing.T, data string) {
			mustRemove(t, filepath.Join(data, "KEYREGISTRY"))
		}, "KEYREGISTRY is missing"},
		{"table bit flipped", false, func(t *testing.T, data string) {
			p := largestFile(t, data, ".sst")
			fi, _ := os.Stat(p)
			flipAt(t, p, fi.Size()/4)
		}, ".sst is damaged"},
		{"write-ahead log damaged after kill -9", true, func(t *testing.T, data string) {
			p := largestFile(t, data, ".mem")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			end := len(bytes.TrimRight(b, "\x00"))
			flipAt(t, p, int64(end/3))
		}, ".mem is damaged at offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := workDir(t)
			d := startDaemon(t, dir)
			before := make([]secret, 0, 150)
			for i := range 150 {
				before = append(before, d.createSecret(t, "default", fmt.Sprintf("s%03d", i), bytes.Repeat([]byte{byte(i)}, 512), nil))
			}
			backup := filepath.Join(dir, "before.backup")
			d.mustCLI(t, "", "backup", backup)
			if tc.kill {
				waitWitness(t, d.stateDir)
				d.Kill(t)
			} else {
				d.Stop(t)
			}
			data := filepath.Join(d.stateDir, "data")
			tc.damage(t, data)
			files := sizes(t, data)

			d2 := launchDaemon(t, dir, "daemon", "--dev")
			if code := d2.waitExit(t); code == 0 {
				t.Fatalf("the daemon started on a damaged store\n%s", d2.stderr)
			}
			log := d2.stderr.String()
			noCrashIn(t, "a damaged store", log)
			lines := logLines(log, tc.want)
			if len(lines) != 1 || !strings.Contains(lines[0], "coffer restore") {
				t.Errorf("%d lines saying %q (and what to do), want 1:\n%s", len(lines), tc.want, log)
			}
			if _, err := os.Stat(d2.socket); d2.socket != "" && err == nil {
				t.Errorf("the refused daemon left its socket: it served")
			}
			kept := sizes(t, filepath.Join(data, "kept"))
			after := sizes(t, data)
			for name, size := range files {
				switch got, ok := after[name]; {
				case strings.HasSuffix(name, ".mem") && size == 0:
				case ok && got == size:
				case strings.HasSuffix(name, ".vlog"): // Badger trims its zeroed tail
				case kept[name] > 0:
				default:
					t.Errorf("file %s (%d bytes) is gone or changed (now %d bytes) and not kept in data/kept", name, size, got)
				}
			}

			if r := runCLI(t, "", "", "store", "check", "--dev", "--state-dir", d.stateDir); r.code != 1 || len(logLines(r.stderr, tc.want)) != 1 {
				t.Errorf("store check of the damaged store:\n%s", r)
			}
			if r := restoreCLI(t, backup, dir, "--force"); r.code != 0 {
				t.Fatalf("restore over the damaged store:\n%s", r)
			}
			if r := runCLI(t, "", "", "store", "check", "--dev", "--state-dir", d.stateDir); r.code != 0 || !strings.Contains(r.stdout, "whole") {
				t.Errorf("store check of the restored store:\n%s", r)
			}
			d3 := startDaemon(t, dir)
			checkAllPresent(t, d3, before)
		})
	}
}

func mustRemove(t *testing.T, path string) {
	t.Helper()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// sizes lists a directory's files (not LOCK) with their sizes; none when
// it does not exist.
func sizes(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	entries, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if fi, err := e.Info(); err == nil && fi.Mode().IsRegular() && e.Name() != "LOCK" {
			out[e.Name()] = fi.Size()
		}
	}
	return out
}

// largestFile returns the path of dir's largest file ending in ext.
func largestFile(t *testing.T, dir, ext string) string {
	t.Helper()
	best, size := "", int64(-1)
	for name, n := range sizes(t, dir) {
		if strings.HasSuffix(name, ext) && n > size {
			best, size = name, n
		}
	}
	if best == "" {
		t.Fatalf("no %s file in %s", ext, dir)
	}
	return filepath.Join(dir, best)
}

func flipAt(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// waitWitness waits until the store's witness file has caught up with
// the writes made (its count stops moving for longer than the interval
// it is written at).
func waitWitness(t *testing.T, stateDir string) {
	t.Helper()
	read := func() uint64 {
		var w struct {
			Commits uint64 `json:"commits"`
		}
		b, err := os.ReadFile(filepath.Join(stateDir, "store.witness"))
		if err != nil || json.Unmarshal(b, &w) != nil {
			t.Fatalf("store.witness: %v %s", err, b)
		}
		return w.Commits
	}
	last, since := read(), time.Now()
	for time.Since(since) < 3*time.Second {
		time.Sleep(100 * time.Millisecond)
		if c := read(); c != last {
			last, since = c, time.Now()
		}
	}
}
