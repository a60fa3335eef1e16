package e2e

import (
	"bytes"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestUnixUIDBindsUser runs the CLI as other uids: a uid bound to a user
// acts as that user (its roles, nothing more); an unbound uid is anonymous.
// It needs root to switch uids.
func TestUnixUIDBindsUser(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the CLI as other uids")
	}
	t.Parallel()
	// A socket and a binary that other uids can reach.
	pub, err := os.MkdirTemp("", "cofpub-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(pub) })
	if err := os.Chmod(pub, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(pub, "coffer")
	copyFile(t, cofferBin, bin, 0o755)
	sock := filepath.Join(pub, "c.sock")
	d := startDaemon(t, workDir(t), "--socket", sock, "--socket-mode", "0666")

	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "peer", "unix_uids": []int{4242}}, http.StatusCreated, nil)
	d.setRole(t, "default", "peer", "reader")
	sec := d.createSecret(t, "default", "bound", []byte("x"), nil)

	as := func(uid uint32, args ...string) (int, string, string) {
		cmd := exec.Command(bin, append([]string{"--socket", sock}, args...)...)
		cmd.Env = cleanEnv("HOME=" + pub)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("run as uid %d: %v", uid, err)
		}
		return code, out.String(), errb.String()
	}

	if code, out, errs := as(4242, "secret", "list", "--project", "default"); code != 0 || !strings.Contains(out, sec.ID) {
		t.Fatalf("bound uid lists secrets: exit %d\n%s%s", code, out, errs)
	}
	if code, _, errs := as(4242, "secret", "get", sec.ID); code != 0 {
		t.Fatalf("bound uid reads a secret: exit %d %s", code, errs)
	}
	for _, args := range [][]string{
		{"project", "create", "nope"},
		{"secret", "revoke", sec.ID},
		{"user", "list"},
	} {
		if code, _, errs := as(4242, args...); code != 1 || !strings.Contains(errs, "(forbidden)") {
			t.Errorf("bound reader %v: exit %d %s, want 1 forbidden", args, code, errs)
		}
	}
	if code, _, errs := as(4343, "secret", "list", "--project", "default"); code != 1 || !strings.Contains(errs, "(forbidden)") {
		t.Errorf("unbound uid: exit %d %s, want 1 forbidden", code, errs)
	}
	// Disabling the user makes the uid anonymous.
	d.mustAPI(t, "PATCH", "/v1/users/peer", map[string]any{"disabled": true}, http.StatusOK, nil)
	if code, _, errs := as(4242, "secret", "list", "--project", "default"); code != 1 || !strings.Contains(errs, "(forbidden)") {
		t.Errorf("disabled user's uid: exit %d %s, want 1 forbidden", code, errs)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode: %v %v", fi.Mode(), err)
	}
}

func copyFile(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
}
