// Package ext4test makes small ext4 filesystems in image files and mounts
// them, for tests that need the real thing: a journal that aborts, a
// filesystem that turns read-only, an fsck that repairs. It needs root
// and e2fsprogs; a test that cannot have them is skipped, not failed.
package ext4test

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Image is an ext4 filesystem in a file, and where it is mounted.
type Image struct {
	Path    string // the image file
	Dir     string // its mount point
	t       testing.TB
	mounted bool
}

// New makes an ext4 filesystem of size bytes with mkfs.ext4's extra
// arguments args (features, say) in a file of the test's, and mounts it
// with options (beside loop) on a new directory; the test's cleanup
// unmounts it. The test is skipped unless it runs as root with mkfs.ext4,
// mount and e2fsck, and where a loop device cannot be mounted.
func New(t testing.TB, size int64, options string, args ...string) *Image {
	t.Helper()
	return NewAt(t, filepath.Join(t.TempDir(), "fs.img"), t.TempDir(), size, options, args...)
}

// NewAt is New with the image file img and the mount point dir (made if
// missing) chosen by the caller.
func NewAt(t testing.TB, img, dir string, size int64, options string, args ...string) *Image {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a filesystem needs root")
	}
	for _, tool := range []string{"mkfs.ext4", "mount", "e2fsck"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed", tool)
		}
	}
	im := &Image{Path: img, Dir: dir, t: t}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(im.Path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(im.Path, size); err != nil {
		t.Fatal(err)
	}
	mkfs := append([]string{"-q", "-F"}, args...)
	if out, err := exec.Command("mkfs.ext4", append(mkfs, im.Path)...).CombinedOutput(); err != nil {
		t.Fatalf("mkfs.ext4: %v: %s", err, out)
	}
	t.Cleanup(func() {
		if im.mounted {
			if err := unix.Unmount(im.Dir, 0); err != nil {
				unix.Unmount(im.Dir, unix.MNT_DETACH) // something still holds it
			}
		}
	})
	if err := im.mount(options); err != nil {
		t.Skipf("cannot loop-mount an ext4 image here: %v", err)
	}
	return im
}

func (im *Image) mount(options string) error {
	o := "loop"
	if options != "" {
		o += "," + options
	}
	if out, err := exec.Command("mount", "-o", o, im.Path, im.Dir).CombinedOutput(); err != nil {
		return errors.New(strings.TrimSpace(err.Error() + ": " + string(out)))
	}
	im.mounted = true
	return nil
}

// Trigger makes ext4 record an error, as a failing disk does: its journal
// aborts, and with errors=remount-ro it turns read-only at once.
func (im *Image) Trigger() {
	im.t.Helper()
	if err := os.WriteFile(im.TriggerPath(), []byte("1"), 0); err != nil {
		im.t.Fatalf("make ext4 fail: %v", err)
	}
}

// TriggerPath is the file whose write makes ext4 fail (for a process of
// the test's own to write).
func (im *Image) TriggerPath() string {
	return filepath.Join("/sys/fs/ext4", filepath.Base(Source(im.t, im.Dir)), "trigger_fs_error")
}

// Repair unmounts the filesystem (nothing may hold files on it), repairs
// it with e2fsck and mounts it again with options.
func (im *Image) Repair(options string) {
	im.t.Helper()
	if err := unix.Unmount(im.Dir, 0); err != nil {
		im.t.Fatalf("unmount: %v", err)
	}
	im.mounted = false
	// e2fsck exits 1 when it fixed something, which it does after an error.
	if out, err := exec.Command("e2fsck", "-f", "-y", im.Path).CombinedOutput(); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() > 1 {
			im.t.Fatalf("e2fsck: %v: %s", err, out)
		}
	}
	if err := im.mount(options); err != nil {
		im.t.Fatalf("mount after the repair: %v", err)
	}
}

// Unmount unmounts the filesystem.
func (im *Image) Unmount() {
	im.t.Helper()
	if err := unix.Unmount(im.Dir, 0); err != nil {
		im.t.Fatalf("unmount: %v", err)
	}
	im.mounted = false
}

// Source returns the device mounted on dir.
func Source(t testing.TB, dir string) string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	dev := ""
	for sc.Scan() {
		if fields := strings.Fields(sc.Text()); len(fields) > 1 && fields[1] == dir {
			dev = fields[0] // the last mount on dir is the one seen there
		}
	}
	if dev == "" {
		t.Fatalf("%s is not a mount point", dir)
	}
	return dev
}

// Close unmounts the filesystem if it is mounted and deletes its image
// (a test making many keeps the disk it uses bounded).
func (im *Image) Close() {
	im.t.Helper()
	if im.mounted {
		im.Unmount()
	}
	if err := os.Remove(im.Path); err != nil {
		im.t.Fatal(err)
	}
}
