package kv

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// ErrLocked means another process has the store open.
var ErrLocked = errors.New("store is in use by another process")

// lockFileName is Badger's pid file. Badger's lock is a flock(2) on the
// store directory, which the kernel drops when its process dies; the pid
// file is written after taking the lock and removed only by a clean Close.
// So a pid file found before Open, with Open then getting the lock, was
// left by a process that died holding the store (kill -9, a crash, power
// loss).
const lockFileName = "LOCK"

// lockHolder reads the pid in dir's lock file: found reports whether the
// file exists, pid is 0 when its content is not a pid.
func lockHolder(dir string) (pid int, found bool) {
	b, err := os.ReadFile(filepath.Join(dir, lockFileName))
	if err != nil {
		return 0, !errors.Is(err, os.ErrNotExist)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n <= 0 {
		return 0, true
	}
	return n, true
}

// LockedError is Open's error for a store another process has open. It
// matches ErrLocked.
type LockedError struct {
	Dir string
	PID int // the holder, from its pid file; 0 when unknown
}

func (e *LockedError) Error() string {
	if e.PID > 0 {
		return fmt.Sprintf("kv: store %s is in use by another process (pid %d)", e.Dir, e.PID)
	}
	return fmt.Sprintf("kv: store %s is in use by another process", e.Dir)
}

func (e *LockedError) Is(target error) bool { return target == ErrLocked }

// lockedError says who holds the store, as far as its pid file tells.
func lockedError(dir string) error {
	pid, _ := lockHolder(dir)
	return &LockedError{Dir: dir, PID: pid}
}

// LockDir takes the lock Badger takes when it opens dir (an exclusive flock
// on the directory itself), so it fails with ErrLocked while any process
// has the store open, and no Badger can open dir until release is called.
// Use it to work on a store's files from outside (restore).
func LockDir(dir string) (release func() error, err error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, fmt.Errorf("kv: lock store %s: %w", dir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, lockedError(dir)
		}
		return nil, fmt.Errorf("kv: lock store %s: %w", dir, err)
	}
	return f.Close, nil
}
