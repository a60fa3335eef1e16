package kv

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/ext4test"
	"golang.org/x/sys/unix"
)

// Faults on real filesystems: a tmpfs filled to the brim, an ext4 that
// turns read-only. Root only (they mount); skipped otherwise.

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a filesystem needs root")
	}
}

// mountTmpfs mounts a tmpfs of size bytes on a new directory, unmounted
// (lazily: a store left open by a test still holds files) at the end.
func mountTmpfs(t *testing.T, size int64) string {
	t.Helper()
	requireRoot(t)
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, fmt.Sprintf("size=%d,mode=0700", size)); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(dir, unix.MNT_DETACH) })
	return dir
}

// mountExt4 makes an ext4 filesystem of size bytes in a file and mounts
// it (errors=remount-ro) on a new directory. trigger makes ext4 record an
// error, which turns it read-only at once, as a failing disk does.
func mountExt4(t *testing.T, size int64) (dir string, trigger func()) {
	t.Helper()
	im := ext4test.New(t, size, "errors=remount-ro")
	return im.Dir, im.Trigger
}

// TestFilesystemFills fills a small tmpfs with 8 concurrent writers:
// no crash (Badger writes through mappings: on a full tmpfs that is a
// SIGBUS), writes refused with ErrFull before the filesystem is full,
// reads served, and once a ballast file goes, writes resume by themselves
// with every acknowledged write there.
func TestFilesystemFills(t *testing.T) {
	fastProbes(t)
	mnt := mountTmpfs(t, 128<<20)
	ballast := filepath.Join(mnt, "ballast")
	if err := os.WriteFile(ballast, make([]byte, 16<<20), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := Open(context.Background(), Options{Dir: filepath.Join(mnt, "data"), Logger: quietLogger(), GCInterval: -1, EncryptionKey: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var acked sync.Map
	var full atomic.Int32
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			for i := 0; full.Load() == 0; i++ {
				id := fmt.Sprintf("%d-%06d", w, i)
				err := s.Update(context.Background(), func(tx *Txn) error {
					return tx.Put("d", id, user{Name: damagePayload, N: i})
				})
				switch {
				case err == nil:
					acked.Store(id, i)
				case errors.Is(err, ErrFull):
					full.Add(1)
				default:
					t.Errorf("writer %d: %v", w, err)
					return
				}
			}
		})
	}
	wg.Wait()
	h := s.Health()
	if h.State != StateFull || h.Avail >= h.Reserve {
		t.Fatalf("health after the writers stopped: %+v, want full below the reserve", h)
	}
	n := 0
	acked.Range(func(any, any) bool { n++; return true })
	if got := count(t, s, "d", Query{}); got != n {
		t.Errorf("%d records readable while full, want the %d acknowledged", got, n)
	}
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	waitHealth(t, s, StateOK)
	if err := put(t, s, "users", "after", user{}); err != nil {
		t.Fatalf("write after room came back: %v", err)
	}
	acked.Range(func(k, v any) bool {
		var u user
		if err := s.View(context.Background(), func(tx *Txn) error { return tx.Get("d", k.(string), &u) }); err != nil || u.N != v.(int) {
			t.Errorf("acknowledged record %s: %v %+v", k, err, u)
		}
		return true
	})
	t.Logf("%d writes acknowledged before the reserve (%d MiB) was reached", n, h.Reserve>>20)
}

// TestFilesystemTurnsReadOnly makes ext4 fail under a writer: the first
// failed commit stops the writes (no panic, however many writes come
// after: Badger is never left without a memtable), reads go on, and Close
// returns at once without flushing into the read-only filesystem.
func TestFilesystemTurnsReadOnly(t *testing.T) {
	fastProbes(t)
	mnt, trigger := mountExt4(t, 256<<20)
	s, err := Open(context.Background(), Options{Dir: filepath.Join(mnt, "data"), Logger: quietLogger(), GCInterval: -1, EncryptionKey: newKey(t), MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, s, 0, 100)
	trigger()
	var failedAt int
	for i := 100; i < 20000; i++ { // 20× a 1 MiB memtable's worth
		err := s.Update(context.Background(), func(tx *Txn) error {
			return tx.Put("d", fmt.Sprintf("%06d", i), user{Name: damagePayload, N: i})
		})
		if err == nil {
			continue
		}
		if failedAt == 0 {
			failedAt = i
			continue // the failing commit's own error
		}
		if !errors.Is(err, ErrFailed) {
			t.Fatalf("write %d after the failure: %v, want ErrFailed", i, err)
		}
	}
	if failedAt == 0 {
		t.Fatal("no write failed on a read-only filesystem")
	}
	h := s.Health()
	if h.State != StateFailed || !errors.Is(h.Err, unix.EROFS) {
		t.Errorf("health %+v, want failed with EROFS", h)
	}
	if got := count(t, s, "d", Query{}); got < 100 || got > failedAt+1 {
		t.Errorf("%d records readable, want the 100 written before the failure and at most the failed batch", got)
	}
	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close hangs on a read-only filesystem")
	}
}

// abortHelperEnv makes the test binary TestHelperAbort: it names the
// store's directory, the key (hex) and the trigger file.
const abortHelperEnv = "COFFER_KV_ABORT_HELPER"

// abortWrites is how many writes the helper acknowledges; every 20th from
// the 8th goes to the value log.
const abortWrites = 200

var abortBig = strings.Repeat("v", 70<<10) // over ValueThreshold

// TestHelperAbort is not a test: TestAcknowledgedWritesSurviveJournalAbort
// runs the test binary with abortHelperEnv set, and this acknowledges
// abortWrites writes, makes ext4 fail and exits without closing the store
// (as a daemon that dies with its disk).
func TestHelperAbort(t *testing.T) {
	args := strings.Split(os.Getenv(abortHelperEnv), "\n")
	if len(args) != 3 {
		t.Skip("helper process for TestAcknowledgedWritesSurviveJournalAbort")
	}
	key, err := hex.DecodeString(args[1])
	if err != nil {
		fmt.Println("bad key:", err)
		os.Exit(2)
	}
	s, err := Open(context.Background(), Options{Dir: args[0], Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	for i := range abortWrites {
		name := damagePayload
		if i%20 == 7 {
			name = abortBig
		}
		err := s.Update(context.Background(), func(tx *Txn) error {
			return tx.Put("d", fmt.Sprintf("%06d", i), user{Name: name, N: i})
		})
		if err != nil {
			fmt.Printf("write %d failed: %v\n", i, err)
			os.Exit(2)
		}
	}
	if err := os.WriteFile(args[2], []byte("1"), 0); err != nil {
		fmt.Println("make ext4 fail:", err)
		os.Exit(2)
	}
	fmt.Println("acked all")
	os.Exit(0)
}

// TestAcknowledgedWritesSurviveJournalAbort has a process acknowledge
// writes, small ones and some that go to the value log, and then make
// ext4 fail (its journal aborts, as on a disk error: nothing more reaches
// the disk) and exit. After a repair of the filesystem, every
// acknowledged write is in the store. Unsynced (SyncWrites off), they
// were only in the page cache and all 200 are lost; synced, none is. The
// value-log records check that the value log is synced too.
func TestAcknowledgedWritesSurviveJournalAbort(t *testing.T) {
	im := ext4test.New(t, 256<<20, "errors=remount-ro")
	mnt, trigger := im.Dir, im.TriggerPath()
	dir, key := filepath.Join(mnt, "data"), newKey(t)

	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperAbort$")
	cmd.Env = append(os.Environ(), abortHelperEnv+"="+dir+"\n"+hex.EncodeToString(key)+"\n"+trigger)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "acked all") {
		t.Fatalf("helper: %v: %s", err, out)
	}
	im.Repair("")
	s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
	if err != nil {
		t.Fatalf("open after the repair: %v", err)
	}
	defer s.Close()
	if got := count(t, s, "d", Query{}); got != abortWrites {
		t.Fatalf("%d of %d acknowledged writes after the journal aborted", got, abortWrites)
	}
	for i := 7; i < abortWrites; i += 20 {
		var u user
		err := s.View(context.Background(), func(tx *Txn) error { return tx.Get("d", fmt.Sprintf("%06d", i), &u) })
		if err != nil || u.Name != abortBig {
			t.Fatalf("value-log record %d: %v (%d bytes)", i, err, len(u.Name))
		}
	}
}
