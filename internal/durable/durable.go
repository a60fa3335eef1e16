// Package durable closes a gap between a successful fsync and data that
// is really on disk.
//
// Linux answers fsync (and msync) with success for a moment after ext4
// aborted its journal on an I/O error: a transaction the aborted journal
// retired without writing is not waited for, and the filesystem is marked
// read-only only a few milliseconds later (ext4_handle_error aborts the
// journal, writes the superblock, then sets the emergency read-only
// flag). Data synced in that moment may need that transaction (an extent
// allocated or converted) and is gone after the repair. From the abort
// on, every change that needs the journal fails, so one made after the
// fsync tells whether the fsync could be trusted: if the journal was
// aborted before the fsync returned, the change fails too.
//
// No library does this: it is a property of one kernel's filesystem that
// the callers of fsync must check themselves (seen on Linux 6.18; cheap
// everywhere else: one utimensat).
package durable

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Confirm makes a journaled change in dir (its modification time), after
// an fsync of a file there succeeded, and returns its error: an error
// means the fsync's success cannot be trusted (the filesystem's journal
// was aborted, or it is read-only).
func Confirm(dir string) error {
	// UTIME_NOW: write permission is enough, ownership is not needed.
	now := unix.Timespec{Nsec: unix.UTIME_NOW}
	if err := unix.UtimesNanoAt(unix.AT_FDCWD, dir, []unix.Timespec{now, now}, 0); err != nil {
		return fmt.Errorf("the filesystem of %s no longer takes changes after a sync: %w", dir, err)
	}
	return nil
}
