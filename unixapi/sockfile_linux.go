package unixapi

import (
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"
)

// CheckPrivateSocketDir refuses dir as the home of a socket meant for root
// and the daemon's user only: another user who can create names in dir
// could bind the socket's path before the daemon, and the clients (root's
// kube-apiserver) would talk to them. dir must be owned by root or the
// daemon's uid and be writable by neither its group nor others; a sticky
// bit (/tmp) does not help, since anyone may still create the name first.
// The daemon's state directory in --dev (0700) and /run/coffer (owned by
// coffer, 0755) pass.
func CheckPrivateSocketDir(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("socket directory: %w", err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("socket directory %s is not a directory", dir)
	}
	owner, ours := fileOwner(fi)
	if !ours && owner != 0 {
		return fmt.Errorf("socket directory %s is owned by uid %d, neither root nor this daemon's uid %d: its owner could bind the socket's path first; "+
			"use a directory of the daemon's own (such as /run/coffer)", dir, owner, os.Geteuid())
	}
	if perm := fi.Mode() & (fs.ModePerm | fs.ModeSticky); perm&0o022 != 0 {
		return fmt.Errorf("socket directory %s is writable by its group or by others (mode %s): another user could bind the socket's path first; "+
			"use a directory only root and the daemon's user can write (such as /run/coffer, mode 0755)", dir, fmtMode(perm))
	}
	return nil
}

// fmtMode writes a mode as octal permission bits with the sticky bit (1777).
func fmtMode(m fs.FileMode) string {
	bits := uint32(m.Perm())
	if m&fs.ModeSticky != 0 {
		bits |= 0o1000
	}
	return "0" + strconv.FormatUint(uint64(bits), 8)
}

// fileOwner returns fi's owner and whether it is this process's uid.
func fileOwner(fi fs.FileInfo) (uint32, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return st.Uid, int(st.Uid) == os.Geteuid()
}

// setSocketFile gives the socket file just bound at path its group (unless
// gid is -1) and mode without following a symlink at path: it opens the
// name itself (O_PATH|O_NOFOLLOW), checks that it is a socket, and changes
// that inode. (fchmod on the listening socket's own descriptor would change
// the socket, not the file in the directory.)
func setSocketFile(path string, gid int, mode os.FileMode) error {
	fd, err := unix.Open(path, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open socket file %s: %w", path, err)
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return fmt.Errorf("stat socket file %s: %w", path, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		return fmt.Errorf("%s is no longer a socket after listening: refusing to change its mode", path)
	}
	if gid >= 0 {
		if err := unix.Fchownat(fd, "", -1, gid, unix.AT_EMPTY_PATH); err != nil {
			return fmt.Errorf("set group of %s to %d: %w", path, gid, err)
		}
	}
	// chmod through /proc/self/fd changes the inode fd holds (what glibc
	// does for fchmodat(AT_SYMLINK_NOFOLLOW)).
	if err := unix.Chmod("/proc/self/fd/"+strconv.Itoa(fd), uint32(mode.Perm())); err != nil {
		return fmt.Errorf("set mode of %s: %w", path, err)
	}
	return nil
}
