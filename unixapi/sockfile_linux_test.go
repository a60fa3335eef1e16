package unixapi

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCheckPrivateSocketDir: a private socket's directory must be writable
// by root and the daemon's user only; a sticky /tmp-like one is refused too.
func TestCheckPrivateSocketDir(t *testing.T) {
	base := t.TempDir()
	for _, c := range []struct {
		mode os.FileMode
		want string // "" ok, else part of the error
	}{
		{0o700, ""},
		{0o755, ""}, // /run/coffer under systemd
		{0o775, "writable by its group or by others (mode 0775)"},
		{0o757, "writable by its group or by others"},
		{0o777 | os.ModeSticky, "(mode 01777)"},
	} {
		dir := filepath.Join(base, c.mode.String())
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(dir, c.mode); err != nil {
			t.Fatal(err)
		}
		err := CheckPrivateSocketDir(dir)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("mode %v: %v", c.mode, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("mode %v: %v, want an error with %q", c.mode, err, c.want)
		}
		// Listening there follows the check.
		l, err := ListenUnixPlain(filepath.Join(dir, "kms.sock"), SocketOptions{Mode: 0o600, GID: -1, Private: true})
		if (err == nil) != (c.want == "") {
			t.Errorf("mode %v: listen: %v", c.mode, err)
		}
		if err == nil {
			l.Close()
		}
	}
	if os.Geteuid() != 0 {
		t.Skip("the owner checks need root (chown)")
	}
	other := filepath.Join(base, "other")
	if err := os.Mkdir(other, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(other, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	if err := CheckPrivateSocketDir(other); err == nil || !strings.Contains(err.Error(), "owned by uid 4242") {
		t.Errorf("a directory of another uid: %v", err)
	}
}

// TestPrivateSocketOfAnotherUID: a socket file of another uid is never
// replaced, and a live one is reported with its uid, not as a coffer daemon.
func TestPrivateSocketOfAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown)")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "kms.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 4242, 4242); err != nil {
		t.Fatal(err)
	}
	_, err = ListenUnixPlain(path, SocketOptions{Mode: 0o600, GID: -1, Private: true})
	if err == nil || !strings.Contains(err.Error(), "a process of uid 4242") || strings.Contains(err.Error(), "coffer daemon") {
		t.Fatalf("a live socket of another uid: %v", err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // stale now
	_, err = ListenUnixPlain(path, SocketOptions{Mode: 0o600, GID: -1, Private: true})
	if err == nil || !strings.Contains(err.Error(), "stale socket file of uid 4242") {
		t.Fatalf("a stale socket of another uid: %v", err)
	}
	if _, err := os.Lstat(path); err != nil {
		t.Fatalf("the other uid's socket was removed: %v", err)
	}
}

// TestSetSocketFileFollowsNoSymlink: the mode is set on the socket bound,
// never through a symlink that took its name.
func TestSetSocketFileFollowsNoSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "target")
	if err := os.WriteFile(target, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "kms.sock")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	if err := setSocketFile(link, -1, 0o666); err == nil {
		t.Fatal("a symlink's target was given the socket's mode")
	}
	if fi, _ := os.Stat(target); fi.Mode().Perm() != 0o600 {
		t.Fatalf("the target's mode changed to %v", fi.Mode())
	}
	path := filepath.Join(dir, "real.sock")
	l, err := ListenUnixPlain(path, SocketOptions{Mode: 0o600, GID: -1, Private: true})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if fi, err := os.Lstat(path); err != nil || fi.Mode().Perm() != 0o600 || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("socket file %v %v", fi.Mode(), err)
	}
}
