// Package diskspace tells how much room a filesystem has left and claims
// room ahead of time.
//
// A program that writes through memory-mapped files (Badger's write-ahead
// log and tables) learns that a filesystem is full from a SIGBUS, not from
// an error: the page fault that needs a new block cannot fail any other
// way. Two habits avoid it: check the free space (statfs) before accepting
// work that needs room, and allocate a file's blocks (fallocate) before
// writing into its mapping, so that ENOSPC comes back from fallocate as an
// error instead.
package diskspace

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// ErrUnsupported: the filesystem cannot preallocate (fallocate(2) is not
// implemented there).
var ErrUnsupported = errors.New("the filesystem does not support preallocation")

// Space is a filesystem's size and room, in bytes.
type Space struct {
	Total int64 // the filesystem's size
	// Avail is what an unprivileged process may still allocate: the free
	// blocks less the ones reserved for root (ext4 keeps 5% by default).
	// coffer runs as its own user, so this is its room.
	Avail int64
}

// Of returns the space of the filesystem holding path.
func Of(path string) (Space, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return Space{}, fmt.Errorf("diskspace: statfs %s: %w", path, err)
	}
	bsize := st.Bsize
	if st.Frsize > 0 {
		bsize = st.Frsize
	}
	return Space{Total: int64(st.Blocks) * bsize, Avail: int64(st.Bavail) * bsize}, nil
}

// Preallocate allocates the blocks of f's byte range [off, off+n), so that
// writes there (through a mapping too) need no new block. Data already in
// the range is kept. With keepSize the file's size does not change, even
// for blocks allocated past its end (they become the file's when it grows
// over them); without, the file grows to off+n if it was smaller. A full
// filesystem answers an error matching unix.ENOSPC; one that cannot
// preallocate, ErrUnsupported.
func Preallocate(f *os.File, off, n int64, keepSize bool) error {
	if n <= 0 {
		return nil
	}
	mode := uint32(0)
	if keepSize {
		mode = unix.FALLOC_FL_KEEP_SIZE
	}
	for {
		err := unix.Fallocate(int(f.Fd()), mode, off, n)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
			return fmt.Errorf("diskspace: preallocate %s: %w", f.Name(), ErrUnsupported)
		default:
			return fmt.Errorf("diskspace: preallocate %d bytes of %s: %w", n, f.Name(), err)
		}
	}
}

// PreallocateFile is Preallocate on the file at path, which must exist.
func PreallocateFile(path string, off, n int64, keepSize bool) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("diskspace: preallocate: %w", err)
	}
	err = Preallocate(f, off, n, keepSize)
	if cerr := f.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("diskspace: preallocate: %w", cerr)
	}
	return err
}

// IsFull reports whether err says the filesystem (or the user's quota) is
// full.
func IsFull(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT)
}

// Bytes renders n as a short human size ("12.5 MiB").
func Bytes(n int64) string {
	const unit = 1024
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	v, suffix := float64(n), ""
	for _, s := range []string{"KiB", "MiB", "GiB", "TiB"} {
		v /= unit
		suffix = s
		if v < unit && v > -unit {
			break
		}
	}
	return fmt.Sprintf("%.1f %s", v, suffix)
}
