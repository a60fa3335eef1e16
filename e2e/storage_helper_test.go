package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/ext4test"
	"golang.org/x/sys/unix"
)

// Storage faults are made on real filesystems mounted for the test (root
// only): a small tmpfs to fill, a loop-mounted ext4 to turn read-only.

// requireRoot skips t unless it runs as root.
func requireRoot(t *testing.T) {
	t.Helper()
	requireHSM(t)
	if os.Geteuid() != 0 {
		t.Skip("storage fault tests mount filesystems: they need root")
	}
}

// mountTmpfs mounts a tmpfs of size bytes on dir (created), unmounted at
// the end of the test (before workDir removes it: cleanups run last
// first).
func mountTmpfs(t *testing.T, dir string, size int64) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount tmpfs on %s: %v", dir, err)
	}
	t.Cleanup(func() { unmount(t, dir) })
}

// unmount unmounts dir, lazily if something still holds it.
func unmount(t *testing.T, dir string) {
	t.Helper()
	if err := unix.Unmount(dir, 0); err != nil && !errors.Is(err, unix.EINVAL) {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) {
			t.Errorf("unmount %s: %v", dir, err)
		}
	}
}

// ext4Image is an ext4 filesystem in a file, loop-mounted on a directory.
type ext4Image struct{ im *ext4test.Image }

// newExt4 makes an ext4 filesystem of size bytes and mounts it on dir
// with errors=remount-ro: an error it records (fail) turns it read-only
// at once, the way ext4 reacts to a failing disk.
func newExt4(t *testing.T, dir string, size int64) *ext4Image {
	t.Helper()
	e := &ext4Image{im: ext4test.NewAt(t, filepath.Join(workDir(t), "fs.img"), dir, size, "errors=remount-ro")}
	e.private(t)
	return e
}

// private makes the mount point the daemon's state directory's mode.
func (e *ext4Image) private(t *testing.T) {
	t.Helper()
	if err := os.Chmod(e.im.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
}

// fail makes ext4 record an error: it turns read-only (emergency_ro).
func (e *ext4Image) fail(t *testing.T) { e.im.Trigger() }

// repair unmounts, checks and mounts the filesystem again, as an
// operator does after a disk error.
func (e *ext4Image) repair(t *testing.T) {
	t.Helper()
	e.im.Repair("errors=remount-ro")
	e.private(t)
}

// avail returns the room on dir's filesystem, as the daemon sees it.
func avail(t *testing.T, dir string) int64 {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Bavail) * st.Bsize
}

// ballast allocates n bytes in a new file at path (as another program
// filling the disk would); n < 0 takes everything left, to ENOSPC.
func ballast(t *testing.T, path string, n int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if n >= 0 {
		if err := unix.Fallocate(int(f.Fd()), 0, 0, n); err != nil {
			t.Fatalf("ballast of %d bytes: %v", n, err)
		}
		return
	}
	var off int64
	for chunk := int64(1 << 20); chunk >= 4096; chunk /= 2 {
		for unix.Fallocate(int(f.Fd()), 0, off, chunk) == nil {
			off += chunk
		}
	}
	if _, err := f.WriteAt([]byte{1}, off+1<<20); !errors.Is(err, unix.ENOSPC) {
		t.Fatalf("the filesystem still takes writes after the ballast (%v)", err)
	}
}

// storeStatus reads the store part of the daemon's status.
func storeStatus(t *testing.T, d *daemonProc) status {
	t.Helper()
	var st status
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	return st
}

// waitStoreState waits for the store's status to reach state.
func waitStoreState(t *testing.T, d *daemonProc, state string) status {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := storeStatus(t, d)
		if st.Store.State == state {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("store state %q (%s), want %q\ndaemon log (end):\n%s", st.Store.State, st.Store.Error, state, logTail(d.stderr.String(), 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// noCrashIn fails t when a daemon log shows a panic or a Go stack dump.
func noCrashIn(t *testing.T, what, log string) {
	t.Helper()
	for _, s := range []string{"panic", "goroutine ", "fatal error", "SIGBUS"} {
		if strings.Contains(log, s) {
			t.Errorf("%s: the daemon log has %q:\n%s", what, s, logTail(log, 40))
			return
		}
	}
}

// writers creates secrets from n goroutines until each is refused with
// one of the stop codes; it returns the secrets acknowledged (by id, with
// their display names) and fails t on any other answer.
func writers(t *testing.T, d *daemonProc, n int, payload []byte, stop ...string) map[string]string {
	t.Helper()
	var mu sync.Mutex
	acked := map[string]string{}
	var wg sync.WaitGroup
	for w := range n {
		wg.Go(func() {
			for i := 0; ; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				res, err := d.do("POST", "/v1/projects/default/secrets", nil, map[string]any{"display_name": name, "payload": b64(payload)})
				if err != nil {
					t.Errorf("writer %d: %v (has the daemon died?)\n%s", w, err, logTail(d.stderr.String(), 30))
					return
				}
				if res.status == http.StatusCreated {
					var s secret
					if err := decodeJSON(res.body, &s); err != nil {
						t.Errorf("writer %d: %v", w, err)
						return
					}
					mu.Lock()
					acked[s.ID] = name
					mu.Unlock()
					continue
				}
				var e errorBody
				_ = decodeJSON(res.body, &e)
				for _, code := range stop {
					if e.Error == code {
						return
					}
				}
				t.Errorf("writer %d: status %d %s, want 201 or one of %v", w, res.status, res.body, stop)
				return
			}
		})
	}
	wg.Wait()
	return acked
}

func decodeJSON(b []byte, out any) error { return json.Unmarshal(b, out) }

// checkAcked asserts that every acknowledged secret is there, by name.
func checkAcked(t *testing.T, d *daemonProc, acked map[string]string) {
	t.Helper()
	for id, name := range acked {
		var s secret
		res := d.api(t, "GET", "/v1/secrets/"+id, nil)
		if res.status != http.StatusOK {
			t.Errorf("acknowledged secret %s (%s) lost: %d %s", id, name, res.status, res.body)
			continue
		}
		if err := decodeJSON(res.body, &s); err != nil || s.DisplayName != name {
			t.Errorf("acknowledged secret %s: %+v %v, want display name %s", id, s, err, name)
		}
	}
}

// waitFlushed waits until Badger has no memtable waiting to be flushed:
// at most one write-ahead log file holds data (the active memtable's).
func waitFlushed(t *testing.T, dataDir string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		entries, err := os.ReadDir(dataDir)
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, e := range entries {
			if fi, err := e.Info(); err == nil && strings.HasSuffix(e.Name(), ".mem") && fi.Size() > 0 {
				n++
			}
		}
		if n <= 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d write-ahead logs hold data after 30 s: a flush does not finish", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
