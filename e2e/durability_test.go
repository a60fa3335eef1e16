package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// tokenDirs lists the SoftHSM token directories of a dev state dir.
func tokenDirs(t *testing.T, stateDir string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(stateDir, "hsm", "tokens"))
	if err != nil {
		t.Fatalf("read dev token store: %v", err)
	}
	var out []string
	for _, e := range entries {
		if e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// checkAllPresent asserts that every secret in want is served unchanged.
func checkAllPresent(t *testing.T, d *daemonProc, want []secret) {
	t.Helper()
	for _, w := range want {
		var got secret
		res := d.api(t, "GET", "/v1/secrets/"+w.ID, nil)
		if res.status != http.StatusOK {
			t.Errorf("secret %s (%s) lost: %d %s", w.ID, w.DisplayName, res.status, res.body)
			continue
		}
		decodeOutput(t, "json", string(res.body), &got)
		sameJSON(t, "secret "+w.ID, got, w)
	}
}

// TestRestartKeepsData stops the daemon with SIGTERM and starts it again on
// the same directory: the same token is reused, all data is there, and
// rotation (which unseals the old version to keep its key_values) works,
// which proves the KEK was found again.
func TestRestartKeepsData(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir)
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "kept"}, http.StatusCreated, nil)
	var want []secret
	for i := range 3 {
		want = append(want, d.createSecret(t, "kept", fmt.Sprintf("kept %d", i), []byte(fmt.Sprintf("payload %d", i)), map[string]string{"user": fmt.Sprintf("u%d", i)}))
	}
	want[2] = d.rotateSecret(t, want[2].ID, []byte("payload 2 v2"), 1)
	var st1 status
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st1)
	tokens1 := tokenDirs(t, d.stateDir)
	pin1 := readFile(t, filepath.Join(d.stateDir, "hsm", "hsm-pin"))
	d.Stop(t)
	if _, err := os.Lstat(d.socket); err == nil {
		t.Errorf("socket %s still exists after a clean shutdown", d.socket)
	}
	if !strings.Contains(d.stderr.String(), "stopped") {
		t.Logf("no 'stopped' line in the log:\n%s", d.stderr)
	}

	d2 := startDaemon(t, dir)
	d2.waitLog(t, "start-up", "coffer is serving")
	for _, line := range []string{"not closed cleanly", "removed stale socket file"} {
		if l := logLines(d2.stderr.String(), line); len(l) > 0 {
			t.Errorf("restart after a clean stop logs %q:\n%s", line, l[0])
		}
	}
	if d2.socket != d.socket {
		t.Errorf("socket moved from %s to %s", d.socket, d2.socket)
	}
	if tokens2 := tokenDirs(t, d2.stateDir); len(tokens2) != 1 || len(tokens1) != 1 || tokens2[0] != tokens1[0] {
		t.Errorf("token store: before %v, after %v; want the same single token", tokens1, tokens2)
	}
	if pin2 := readFile(t, filepath.Join(d2.stateDir, "hsm", "hsm-pin")); pin2 != pin1 {
		t.Errorf("the dev PIN changed across a restart")
	}
	var st2 status
	d2.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st2)
	sameJSON(t, "key labels after restart", st2.HSM.KeyLabels, st1.HSM.KeyLabels)
	if st2.Counts != st1.Counts {
		t.Errorf("counts after restart %+v, before %+v", st2.Counts, st1.Counts)
	}
	if !st2.StartedAt.After(st1.StartedAt) {
		t.Errorf("started_at did not move: %v then %v", st1.StartedAt, st2.StartedAt)
	}
	checkAllPresent(t, d2, want)
	var l list[secret]
	d2.mustAPI(t, "GET", "/v1/projects/kept/secrets", nil, http.StatusOK, &l)
	sameJSON(t, "list after restart", l.Items, want)

	// rotate without key_values: needs the old version unsealed by the KEK
	for _, w := range want {
		s := d2.rotateSecret(t, w.ID, []byte("after restart"), w.Version)
		if s.Version != w.Version+1 {
			t.Errorf("rotate %s after restart: version %d, want %d", w.ID, s.Version, w.Version+1)
		}
	}
	// and new secrets can be made
	d2.createSecret(t, "kept", "after restart", []byte("x"), nil)
}

// TestKillKeepsAcknowledgedWrites kills the daemon with SIGKILL after every
// write was acknowledged and checks that a restart (over the stale socket
// file) serves all of them.
func TestKillKeepsAcknowledgedWrites(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir)
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "acked"}, http.StatusCreated, nil)
	const n = 25
	var want []secret
	for i := range n {
		want = append(want, d.createSecret(t, "acked", fmt.Sprintf("acked %d", i), []byte(fmt.Sprintf("p%d", i)), map[string]string{"i": fmt.Sprint(i)}))
	}
	// acknowledged rotations, revocations and deletions count too
	want[0] = d.rotateSecret(t, want[0].ID, []byte("p0 v2"), 1)
	d.mustAPI(t, "POST", "/v1/secrets/"+want[1].ID+"/revoke", nil, http.StatusOK, &want[1])
	d.mustAPI(t, "DELETE", "/v1/secrets/"+want[2].ID, nil, http.StatusNoContent, nil)
	deleted := want[2]
	want = append(want[:2], want[3:]...)

	d.Kill(t)
	if fi, err := os.Lstat(d.socket); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Errorf("after SIGKILL the socket file is not left behind (%v); the stale-socket path is not exercised", err)
	}
	if pid, err := os.ReadFile(filepath.Join(d.stateDir, "data", "LOCK")); err != nil || strings.TrimSpace(string(pid)) != fmt.Sprint(d.cmd.Process.Pid) {
		t.Errorf("after SIGKILL the store's LOCK file holds %q (%v), want the killed pid %d", pid, err, d.cmd.Process.Pid)
	}

	d2 := startDaemon(t, dir)
	checkRecoveryLog(t, d2, d)
	checkAllPresent(t, d2, want)
	wantError(t, d2.api(t, "GET", "/v1/secrets/"+deleted.ID, nil), 404, "not_found")
	var l list[secret]
	d2.mustAPI(t, "GET", "/v1/projects/acked/secrets", nil, http.StatusOK, &l)
	if len(l.Items) != n-1 {
		t.Errorf("after kill -9: %d secrets listed, want %d", len(l.Items), n-1)
	}
	for _, w := range want {
		if w.Status == "revoked" {
			wantError(t, d2.api(t, "POST", "/v1/secrets/"+w.ID+"/rotate", map[string]string{"payload": b64([]byte("x"))}), 409, "secret_revoked")
			continue
		}
		if s := d2.rotateSecret(t, w.ID, []byte("after kill"), w.Version); s.Version != w.Version+1 {
			t.Errorf("rotate %s after kill: version %d", w.ID, s.Version)
		}
	}
}

// TestSecondDaemonRefused starts a second dev daemon on a directory whose
// daemon is running: it must fail clearly and leave the first one serving.
func TestSecondDaemonRefused(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir)
	s := d.createSecret(t, "default", "first", []byte("x"), nil)

	// One line, naming the state directory or socket and the pid of the
	// daemon that has it.
	inUse := fmt.Sprintf("coffer: state directory %s is in use by another coffer daemon (pid %d); stop it first\n", d.stateDir, d.cmd.Process.Pid)
	serving := fmt.Sprintf("coffer: listen on %s: another coffer daemon is already serving there (pid %d)\n", d.socket, d.cmd.Process.Pid)
	otherSocket := filepath.Join(workDir(t), "other.sock")
	for _, tc := range []struct {
		name string
		dir  string
		args []string
		want string
	}{
		{"same dir", dir, nil, inUse},
		{"same dir, other socket", dir, []string{"--socket", otherSocket}, inUse},
		{"other state dir, same socket", workDir(t), []string{"--socket", d.socket}, serving},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d2 := launchDaemon(t, tc.dir, append([]string{"daemon", "--dev"}, tc.args...)...)
			code := d2.waitExit(t)
			stderr := d2.stderr.String()
			if code == 0 {
				t.Errorf("second daemon exited 0\nstderr:\n%s", stderr)
			}
			if !strings.HasSuffix(stderr, tc.want) {
				t.Errorf("second daemon's last line is not %q:\n%s", tc.want, stderr)
			}
			if strings.Contains(d2.stdout.String(), exportPrefix) {
				t.Errorf("second daemon printed the export line:\n%s", d2.stdout)
			}
			noPanic(t, stderr)
		})
	}
	if _, err := os.Lstat(otherSocket); err == nil {
		t.Errorf("the refused daemon left a socket at %s", otherSocket)
	}

	// the first daemon is untouched
	if fi, err := os.Lstat(d.socket); err != nil || fi.Mode().Type() != os.ModeSocket {
		t.Fatalf("the first daemon's socket is gone: %v", err)
	}
	var got secret
	d.mustAPI(t, "GET", "/v1/secrets/"+s.ID, nil, http.StatusOK, &got)
	d.createSecret(t, "default", "still serving", []byte("y"), nil)
}

func noPanic(t *testing.T, stderr string) {
	t.Helper()
	if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
		t.Errorf("stderr shows a panic or stack trace:\n%s", stderr)
	}
}

// devState makes a dev state dir (token, PIN, store) and stops its daemon.
func devState(t *testing.T) (dir string, d *daemonProc) {
	t.Helper()
	dir = workDir(t)
	d = startDaemon(t, dir)
	d.createSecret(t, "default", "made in dev mode", []byte("x"), map[string]string{"k": "v"})
	d.Stop(t)
	return dir, d
}

// prodArgs runs the daemon in production mode on the dev token of dir.
func prodArgs(dir, pinFile string) (env, args []string) {
	state := filepath.Join(dir, ".coffer")
	env = []string{"SOFTHSM2_CONF=" + filepath.Join(state, "hsm", "softhsm2.conf")}
	args = []string{"daemon", "--state-dir", state, "--socket", filepath.Join(dir, "prod.sock"),
		"--hsm-module", softHSMModule, "--hsm-token", "coffer-dev", "--hsm-pin-file", pinFile}
	return env, args
}

// TestHSMStartupErrors: a wrong PIN and a missing module stop the daemon
// with one clear error, not a panic.
func TestHSMStartupErrors(t *testing.T) {
	dir, _ := devState(t)

	t.Run("wrong PIN", func(t *testing.T) {
		pin := filepath.Join(workDir(t), "pin")
		if err := os.WriteFile(pin, []byte("not-the-pin\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env, args := prodArgs(dir, pin)
		d := launchDaemonEnv(t, dir, env, args...)
		code := d.waitExit(t)
		stderr := d.stderr.String()
		if code == 0 {
			t.Errorf("exit 0 with a wrong PIN")
		}
		for _, s := range []string{"wrong HSM PIN", "CKR_PIN_INCORRECT"} {
			if !strings.Contains(stderr, s) {
				t.Errorf("stderr lacks %q:\n%s", s, stderr)
			}
		}
		if strings.Contains(stderr, "not-the-pin") {
			t.Errorf("stderr echoes the PIN:\n%s", stderr)
		}
		noPanic(t, stderr)
	})

	t.Run("PIN file missing", func(t *testing.T) {
		env, args := prodArgs(dir, "/nonexistent/hsm-pin")
		d := launchDaemonEnv(t, dir, env, args...)
		if code := d.waitExit(t); code == 0 || !strings.Contains(d.stderr.String(), "/nonexistent/hsm-pin") {
			t.Errorf("missing PIN file: exit %d, want non-zero naming the file\nstderr:\n%s", code, d.stderr)
		}
		noPanic(t, d.stderr.String())
	})

	t.Run("PIN file empty", func(t *testing.T) {
		pin := filepath.Join(workDir(t), "pin")
		if err := os.WriteFile(pin, []byte("\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		env, args := prodArgs(dir, pin)
		d := launchDaemonEnv(t, dir, env, args...)
		if code := d.waitExit(t); code == 0 || !strings.Contains(d.stderr.String(), "empty") {
			t.Errorf("empty PIN file: exit %d, want non-zero saying it is empty\nstderr:\n%s", code, d.stderr)
		}
		noPanic(t, d.stderr.String())
	})

	t.Run("right PIN in production mode", func(t *testing.T) {
		env, args := prodArgs(dir, filepath.Join(dir, ".coffer", "hsm", "hsm-pin"))
		d := launchDaemonEnv(t, dir, env, args...)
		d.socket = filepath.Join(dir, "prod.sock")
		deadline := time.Now().Add(startTimeout)
		for {
			if _, err := os.Stat(d.socket); err == nil {
				break
			}
			select {
			case <-d.done:
				t.Fatalf("production daemon exited: %v\nstderr:\n%s", d.waitErr, d.stderr)
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("production daemon made no socket within %s\nstderr:\n%s", startTimeout, d.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
		var st status
		d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
		if st.Dev || st.Counts.Secrets != 1 || st.HSM.TokenLabel != "coffer-dev" || !st.HSM.Healthy {
			t.Errorf("production status = %+v, want not dev, 1 secret, token coffer-dev, healthy", st)
		}
		var l list[secret]
		d.mustAPI(t, "GET", "/v1/projects/default/secrets", nil, http.StatusOK, &l)
		if len(l.Items) != 1 {
			t.Fatalf("production mode sees %d secrets, want 1", len(l.Items))
		}
		d.rotateSecret(t, l.Items[0].ID, []byte("rotated in production"), 1)
		d.Stop(t)
	})

	t.Run("missing module", func(t *testing.T) {
		d := launchDaemon(t, workDir(t), "daemon", "--dev", "--hsm-module", "/nonexistent.so")
		code := d.waitExit(t)
		stderr := d.stderr.String()
		if code == 0 || !strings.Contains(stderr, "cannot load PKCS#11 module") {
			t.Errorf("missing module: exit %d, want non-zero and 'cannot load PKCS#11 module'\nstderr:\n%s", code, stderr)
		}
		if !strings.Contains(stderr, "/nonexistent.so") {
			t.Errorf("missing module: stderr does not name the path\n%s", stderr)
		}
		noPanic(t, stderr)
	})

	t.Run("missing module in production mode", func(t *testing.T) {
		_, args := prodArgs(dir, filepath.Join(dir, ".coffer", "hsm", "hsm-pin"))
		args = append(args, "--hsm-module", "/nonexistent.so")
		d := launchDaemon(t, dir, args...)
		code := d.waitExit(t)
		if code == 0 || !strings.Contains(d.stderr.String(), "cannot load PKCS#11 module") {
			t.Errorf("exit %d, want non-zero and 'cannot load PKCS#11 module'\nstderr:\n%s", code, d.stderr)
		}
		noPanic(t, d.stderr.String())
	})
}
