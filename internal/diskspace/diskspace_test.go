package diskspace

import (
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestBytes(t *testing.T) {
	for _, tc := range []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{1023, "1023 B"},
		{1024, "1.0 KiB"},
		{1536, "1.5 KiB"},
		{64 << 20, "64.0 MiB"},
		{3 << 30, "3.0 GiB"},
		{-2048, "-2.0 KiB"},
	} {
		if got := Bytes(tc.n); got != tc.want {
			t.Errorf("Bytes(%d) = %q, want %q", tc.n, got, tc.want)
		}
	}
}

func TestOf(t *testing.T) {
	sp, err := Of(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if sp.Total <= 0 || sp.Avail < 0 || sp.Avail > sp.Total {
		t.Errorf("Of = %+v: want 0 <= Avail <= Total, Total > 0", sp)
	}
	if _, err := Of(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Error("Of on a missing path: no error")
	}
}

func allocated(t *testing.T, path string) (size, blocks int64) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size(), fi.Sys().(*syscall.Stat_t).Blocks * 512
}

func TestPreallocate(t *testing.T) {
	const n = 1 << 20
	for _, tc := range []struct {
		name     string
		keepSize bool
		wantSize int64
	}{
		{"keep size", true, 0},
		{"grow", false, n},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "f")
			if err := os.WriteFile(path, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			err := PreallocateFile(path, 0, n, tc.keepSize)
			if err != nil {
				t.Fatal(err)
			}
			size, blocks := allocated(t, path)
			if size != tc.wantSize {
				t.Errorf("size %d, want %d", size, tc.wantSize)
			}
			if blocks < n {
				t.Errorf("%d bytes allocated, want at least %d", blocks, n)
			}
		})
	}
	if err := PreallocateFile(filepath.Join(t.TempDir(), "missing"), 0, n, true); err == nil {
		t.Error("PreallocateFile on a missing file: no error")
	}
}

// TestPreallocateFull preallocates more than a 1 MiB tmpfs holds: an
// ENOSPC error that IsFull recognises, not a fault.
func TestPreallocateFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	dir := t.TempDir()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	path := filepath.Join(dir, "f")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	err := PreallocateFile(path, 0, 8<<20, true)
	if !IsFull(err) {
		t.Fatalf("preallocate 8 MiB on a 1 MiB tmpfs: %v, want ENOSPC", err)
	}
	sp, err := Of(dir)
	if err != nil {
		t.Fatal(err)
	}
	if sp.Total != 1<<20 {
		t.Errorf("Total %d, want %d", sp.Total, 1<<20)
	}
}
