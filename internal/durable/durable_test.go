package durable

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestConfirm(t *testing.T) {
	dir := t.TempDir()
	if err := Confirm(dir); err != nil {
		t.Fatalf("a writable directory: %v", err)
	}
	if err := Confirm(filepath.Join(dir, "gone")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("a missing directory: %v, want ENOENT", err)
	}
	if os.Geteuid() != 0 {
		t.Skip("mounting a read-only filesystem needs root")
	}
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", ro, "tmpfs", unix.MS_RDONLY, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(ro, 0) })
	if err := Confirm(ro); !errors.Is(err, unix.EROFS) {
		t.Errorf("a read-only filesystem: %v, want EROFS", err)
	}
}
