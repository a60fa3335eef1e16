// Package durable closes a gap between a successful fsync and data that
// is really on disk.
//
// Linux answers fsync (and msync) with success for a moment after ext4
// aborted its journal on an I/O error: a transaction the aborted journal
// retired without writing is not waited for, and the filesystem is marked
// read-only only a few milliseconds later (ext4_handle_error aborts the
// journal, writes the superblock, then sets the emergency read-only
// flag). Data synced in that moment may need that transaction (an extent
// allocated or converted) and is gone after the repair.
//
// The journal is marked aborted before any transaction is retired, and
// from then on every operation that opens a journal handle fails at once.
// So an operation that needs a handle and reports its failure, made after
// the fsync returned, tells whether the fsync could be trusted. Not every
// change does: a timestamp update (utimensat) checks only the read-only
// flags, which come milliseconds later, and ext4 drops the error of the
// inode update it journals (ext4_dirty_inode). fallocate does: it opens a
// handle for every range it maps, already allocated or not, and returns
// the handle's error. A Checker keeps one small file per directory for it.
//
// No library does this: it is a property of one kernel's filesystem that
// the callers of fsync must check themselves (seen on Linux 6.18; cheap
// everywhere else: one fallocate of an allocated block, or one utimensat
// where fallocate is not supported).
package durable

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"
)

// WitnessName is the file a Checker keeps in its directory.
const WitnessName = ".sync-witness"

// ErrWeak says that a Checker falls back to the weaker check (utimensat):
// the filesystem has no fallocate (an ext4 without extents, an old
// ext3), or no room yet for the witness's block.
var ErrWeak = errors.New("syncs are confirmed by a timestamp change only, which misses the moment after an ext4 journal abort")

// A Checker confirms the fsyncs of files in one directory. It is not safe
// for concurrent use: each of coffer's writers (the store's committer, the
// audit log's writer) has its own.
type Checker struct {
	dir       string
	f         *os.File
	allocated bool // the witness's block is allocated: no space needed
	noAlloc   bool // the filesystem has no fallocate: utimensat it is
}

// NewChecker returns a Checker for dir. It opens its witness file at the
// first Prepare or Confirm.
func NewChecker(dir string) *Checker { return &Checker{dir: dir} }

// Prepare creates the witness file and allocates its block, so that
// Confirm needs no free space later. Call it at open, where a failure can
// be reported calmly; Confirm works without it. An error wrapping ErrWeak
// says Confirm will use the weaker check.
func (c *Checker) Prepare() error {
	done, err := c.allocate()
	if err == nil && !done {
		err = ErrWeak
	}
	if err != nil {
		return fmt.Errorf("prepare the sync witness in %s: %w", c.dir, err)
	}
	return nil
}

// Confirm makes a journaled change in the directory after an fsync of a
// file there succeeded, and returns its error: an error means the fsync's
// success cannot be trusted (the filesystem's journal was aborted, or it
// is read-only).
func (c *Checker) Confirm() error {
	done, err := c.allocate()
	if err == nil && !done {
		// UTIME_NOW: write permission is enough, ownership is not needed.
		now := unix.Timespec{Nsec: unix.UTIME_NOW}
		err = unix.UtimesNanoAt(unix.AT_FDCWD, c.dir, []unix.Timespec{now, now}, 0)
	}
	if err != nil {
		// The next Confirm opens the witness again: the directory may be
		// on another filesystem by then (a repair, a remount).
		c.Close()
		return fmt.Errorf("the filesystem of %s no longer takes changes after a sync: %w", c.dir, err)
	}
	return nil
}

// allocate maps the witness file's first block: allocated already after
// the first success, so it needs no space, but a journal handle all the
// same. done is false when it could not try: no fallocate on this
// filesystem, or no room yet for the first allocation (utimensat does
// then, the weaker check).
func (c *Checker) allocate() (done bool, err error) {
	if c.noAlloc {
		return false, nil
	}
	if c.f == nil {
		if c.f, err = openWitness(c.dir); err != nil {
			return false, err
		}
	}
	err = unix.Fallocate(int(c.f.Fd()), unix.FALLOC_FL_KEEP_SIZE, 0, 1)
	switch {
	case err == nil:
		c.allocated = true
		return true, nil
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS):
		c.noAlloc = true
		c.Close()
		return false, nil
	case (errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)) && !c.allocated:
		return false, nil
	}
	return false, err
}

// openWitness opens (or creates) dir's witness file, owned by the
// directory's owner: a witness another user left (root running an
// offline command on the daemon's store) is replaced, not failed on at
// every commit.
func openWitness(dir string) (*os.File, error) {
	path := filepath.Join(dir, WitnessName)
	const flags = os.O_RDWR | os.O_CREATE | unix.O_NOFOLLOW | unix.O_CLOEXEC
	f, err := os.OpenFile(path, flags, 0o600)
	if errors.Is(err, fs.ErrPermission) || errors.Is(err, unix.ELOOP) {
		// The directory is ours to write (the store's files are in it):
		// the name is too.
		if rerr := os.Remove(path); rerr != nil {
			return nil, err
		}
		f, err = os.OpenFile(path, flags|os.O_EXCL, 0o600)
	}
	if err != nil {
		return nil, err
	}
	if os.Geteuid() == 0 {
		var st unix.Stat_t
		if err := unix.Stat(dir, &st); err == nil && st.Uid != 0 {
			if err := f.Chown(int(st.Uid), int(st.Gid)); err != nil {
				f.Close()
				return nil, err
			}
		}
	}
	return f, nil
}

// Close closes the witness file (which stays: the next Checker reuses it).
func (c *Checker) Close() error {
	if c.f == nil {
		return nil
	}
	err := c.f.Close()
	c.f = nil
	return err
}
