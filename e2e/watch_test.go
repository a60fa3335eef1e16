package e2e

// End-to-end tests of rotation reaching API consumers (issue 15):
// GET /v1/deliver/{name}?wait=&after_version= through the real binary and
// socket — the timeout's 304, a rotation during a watch, a binding removed
// during one, bad parameters — `coffer deliver --watch` keeping a file
// current and running a command, and one uid that cannot take the
// socket's slots with waiting requests.

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

func TestDeliveryWatch(t *testing.T) {
	t.Parallel()
	pub := publicDir(t)
	bin := filepath.Join(pub, "coffer")
	copyFile(t, cofferBin, bin, 0o755)
	sock := filepath.Join(pub, "c.sock")
	d := startDaemon(t, workDir(t), "--socket", sock, "--socket-mode", "0666")

	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "vm-web", "kind": "workload", "unix_uids": []int{4242}}, http.StatusCreated, nil)
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "vm-db", "kind": "workload", "unix_uids": []int{4343}}, http.StatusCreated, nil)
	d.setRole(t, "default", "vm-web", "reader")
	d.setRole(t, "default", "vm-db", "reader")
	tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "vm-web"}).Token
	p1, p2, p3 := []byte("watch-payload-v1"), []byte("watch-payload-v2"), []byte("watch-payload-v3")
	sec := d.createSecret(t, "default", "watched", p1, nil)
	b := d.bind(t, sec.ID, map[string]string{"user": "vm-web", "name": "dbpass"})

	get := func(query string) apiResp {
		t.Helper()
		return d.bearer(t, tok, "GET", "/v1/deliver/dbpass"+query, nil)
	}

	// Bad parameters: 400 with a precise code, whoever asks.
	for q, code := range map[string]string{
		"?wait=10m": "invalid_wait", "?wait=abc": "invalid_wait", "?wait=-1s": "invalid_wait",
		"?after_version=-1": "invalid_after_version", "?wait=1s&after_version=x": "invalid_after_version",
	} {
		wantError(t, get(q), http.StatusBadRequest, code)
	}

	// A version newer than after_version: at once, as a delivery.
	res := get("?wait=20s&after_version=0")
	if res.status != http.StatusOK || !bytes.Equal(res.body, p1) || res.header.Get("X-Coffer-Secret-Version") != "1" {
		t.Fatalf("after_version=0: %d %q v%s", res.status, res.body, res.header.Get("X-Coffer-Secret-Version"))
	}
	// Nothing newer: 304 when the wait ends, with no body.
	t0 := time.Now()
	res = get("?wait=1s&after_version=1")
	waited := time.Since(t0)
	if res.status != http.StatusNotModified || len(res.body) != 0 || waited < time.Second || waited > 5*time.Second {
		t.Fatalf("timeout: status %d body %q after %v, want 304 after 1s", res.status, res.body, waited)
	}
	t.Logf("304 after %v (wait=1s)", waited.Round(time.Millisecond))

	// A rotation during a watch answers it with the new version.
	type answer struct {
		res apiResp
		at  time.Time
	}
	watch := func(query string) <-chan answer {
		ch := make(chan answer, 1)
		go func() {
			r, err := d.do("GET", "/v1/deliver/dbpass"+query, http.Header{"Authorization": {"Bearer " + tok}}, nil)
			if err != nil {
				t.Errorf("watch: %v", err)
			}
			ch <- answer{r, time.Now()}
		}()
		return ch
	}
	ch := watch("?wait=20s&after_version=1")
	time.Sleep(300 * time.Millisecond)
	rotated := time.Now()
	d.rotateSecret(t, sec.ID, p2, 1)
	select {
	case a := <-ch:
		if a.res.status != http.StatusOK || !bytes.Equal(a.res.body, p2) || a.res.header.Get("X-Coffer-Secret-Version") != "2" {
			t.Fatalf("woken watch: %d %q v%s", a.res.status, a.res.body, a.res.header.Get("X-Coffer-Secret-Version"))
		}
		t.Logf("rotation to watch answer: %v (includes the rotate call)", a.at.Sub(rotated).Round(time.Millisecond))
	case <-time.After(15 * time.Second):
		t.Fatal("the rotation did not answer the watch")
	}

	// coffer deliver --watch keeps a file current and runs a command on
	// each version.
	out := filepath.Join(pub, "dbpass")
	log := filepath.Join(pub, "versions.log")
	cmd := exec.Command(bin, "deliver", "dbpass", "--watch", "--out", out, "--wait", "20s",
		"--exec", `printf '%s %s\n' "$COFFER_VERSION" "$COFFER_FILE" >>`+log)
	cmd.Env = cleanEnv("COFFER_SOCKET="+sock, "COFFER_TOKEN="+tok)
	var werr syncBuffer
	cmd.Stderr = &werr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	waitFile := func(want []byte) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for time.Now().Before(deadline) {
			if got, err := os.ReadFile(out); err == nil && bytes.Equal(got, want) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		got, _ := os.ReadFile(out)
		t.Fatalf("%s holds %q, want %q; watcher stderr:\n%s", out, got, want, werr.String())
	}
	waitFile(p2)
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v %v, want mode 0600", out, fi.Mode(), err)
	}
	time.Sleep(300 * time.Millisecond) // the watcher is waiting again
	rotated = time.Now()
	d.rotateSecret(t, sec.ID, p3, 2)
	waitFile(p3)
	t.Logf("rotation to file replaced by coffer deliver --watch: %v", time.Since(rotated).Round(time.Millisecond))
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, _ := os.ReadFile(log)
		if string(l) == fmt.Sprintf("2 %s\n3 %s\n", out, out) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("--exec ran %q; watcher stderr:\n%s", l, werr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	// The binding removed during a watch: 404, never the new value; the
	// CLI watcher exits 1 (not found).
	ch = watch("?wait=20s&after_version=3")
	time.Sleep(300 * time.Millisecond)
	d.mustAPI(t, "DELETE", "/v1/secrets/"+sec.ID+"/bindings/"+b.ID, nil, http.StatusNoContent, nil)
	select {
	case a := <-ch:
		wantError(t, a.res, http.StatusNotFound, "not_found")
	case <-time.After(15 * time.Second):
		t.Fatal("removing the binding did not end the watch")
	}
	select {
	case err := <-exited:
		var ee *exec.ExitError
		if !asExit(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(werr.String(), "not_found") {
			t.Fatalf("watcher after unbind: %v; stderr:\n%s", err, werr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("the watcher did not exit after the binding was removed")
	}
	if got, _ := os.ReadFile(out); !bytes.Equal(got, p3) {
		t.Fatalf("after unbind the file holds %q", got)
	}
	// Nobody waits on a name not bound to it: 404 at once.
	t0 = time.Now()
	wantError(t, get("?wait=20s&after_version=0"), http.StatusNotFound, "not_found")
	if time.Since(t0) > 2*time.Second {
		t.Fatalf("an unbound watch waited %v", time.Since(t0))
	}
	// The payloads stay out of the daemon's log.
	for _, p := range [][]byte{p1, p2, p3} {
		if strings.Contains(d.stderr.String(), string(p)) {
			t.Fatalf("payload %q in the daemon log", p)
		}
	}
}

func asExit(err error, ee **exec.ExitError) bool {
	e, ok := err.(*exec.ExitError)
	*ee = e
	return ok
}

// TestWatchFairShare: one uid holding watches (each a waiting request and
// so a connection) cannot take the socket from others: beyond 16 at once
// it is answered 429 too_many_watches, and other users (and admins) are
// served meanwhile.
func TestWatchFairShare(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run clients as other uids")
	}
	t.Parallel()
	pub := publicDir(t)
	bin := filepath.Join(pub, "coffer")
	copyFile(t, cofferBin, bin, 0o755)
	sock := filepath.Join(pub, "c.sock")
	d := startDaemon(t, workDir(t), "--socket", sock, "--socket-mode", "0666", "--max-connections", "64")
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "attacker", "kind": "workload", "unix_uids": []int{4545}}, http.StatusCreated, nil)
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "victim", "kind": "workload", "unix_uids": []int{4646}}, http.StatusCreated, nil)
	d.setRole(t, "default", "attacker", "reader")
	d.setRole(t, "default", "victim", "reader")
	sa := d.createSecret(t, "default", "a", []byte("attacker-payload"), nil)
	sv := d.createSecret(t, "default", "v", []byte("victim-payload"), nil)
	d.bind(t, sa.ID, map[string]string{"user": "attacker", "name": "x"})
	d.bind(t, sv.ID, map[string]string{"user": "victim", "name": "y"})

	// The attacker: 24 watchers at once, each waiting on version 1.
	const n = 24
	var mu sync.Mutex
	var errs []string
	var wg sync.WaitGroup
	procs := make([]*exec.Cmd, n)
	for i := range n {
		c := exec.Command(bin, "--socket", sock, "deliver", "x", "--watch", "--exec", "true", "--wait", "5m")
		c.Env = cleanEnv()
		c.Dir = os.TempDir()
		c.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4545, Gid: 4545}}
		var e syncBuffer
		c.Stderr = &e
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.Wait()
			mu.Lock()
			errs = append(errs, e.String())
			mu.Unlock()
		}()
		t.Cleanup(func() { c.Process.Kill() })
	}
	time.Sleep(3 * time.Second)
	// The victim is served at once, by delivery and by watch.
	for _, args := range [][]string{{"deliver", "y"}} {
		t0 := time.Now()
		code, out, stderr := cliAs(t, bin, 4646, []string{"COFFER_SOCKET=" + sock}, args...)
		if code != 0 || string(out) != "victim-payload" || time.Since(t0) > 3*time.Second {
			t.Fatalf("victim %v: exit %d %q %s after %v", args, code, out, stderr, time.Since(t0))
		}
	}
	t0 := time.Now()
	res := d.api(t, "GET", "/v1/status", nil)
	if res.status != http.StatusOK || time.Since(t0) > 3*time.Second {
		t.Fatalf("admin status: %d after %v", res.status, time.Since(t0))
	}
	// The attacker's extra watchers were refused (they retry with backoff).
	for _, c := range procs {
		c.Process.Signal(syscall.SIGTERM)
	}
	wg.Wait()
	refused := 0
	for _, e := range errs {
		if strings.Contains(e, "too many watches") {
			refused++
		}
	}
	if refused < n-16 {
		t.Fatalf("%d of %d watchers were refused with too_many_watches, want at least %d; stderr:\n%s", refused, n, n-16, strings.Join(errs, "\n"))
	}
	t.Logf("%d of %d watchers of one uid refused (429 too_many_watches)", refused, n)
}

// TestOnRotateFailureKeepsTheRotation: through the real binary, a unit
// binding's on-rotate action that cannot be carried out (no systemd bus
// here) fails alone: the rotation is committed and delivered, the CLI
// prints the unit's failure and exits 0, the API returns unit_actions,
// and the audit log records the failed action.
func TestOnRotateFailureKeepsTheRotation(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir, "--unit-action-timeout", "5s")
	p1, p2 := []byte("unit-payload-v1"), []byte("unit-payload-v2")
	sec := d.createSecret(t, "default", "unit-db", p1, nil)
	out := d.mustCLI(t, "", "secret", "bind", sec.ID, "--unit", "app.service", "--as", "dbpass", "--on-rotate", "restart")
	if !strings.Contains(out.stdout, "restart") {
		t.Fatalf("bind output lacks the on-rotate action:\n%s", out.stdout)
	}
	if res := d.cli(t, "", "secret", "bind", sec.ID, "--unit", "x.service", "--as", "y", "--on-rotate", "stop"); res.code != 1 || !strings.Contains(res.stderr, "invalid_binding") {
		t.Fatalf("--on-rotate stop: %v", res)
	}
	if res := d.cli(t, "", "secret", "bind", sec.ID, "--user", "nobody", "--as", "y", "--on-rotate", "restart"); res.code != 2 {
		t.Fatalf("--on-rotate on a user binding: %v", res)
	}
	t0 := time.Now()
	res := d.cli(t, string(p2), "secret", "rotate", sec.ID, "--payload-file", "-")
	if res.code != 0 || !strings.Contains(res.stdout, "unit app.service: failed: ") {
		t.Fatalf("rotate: %v", res)
	}
	t.Logf("rotate with a failing unit action: %v; %s", time.Since(t0).Round(time.Millisecond), strings.TrimSpace(res.stdout[strings.Index(res.stdout, "unit app.service"):]))
	if got := loadCred(t, filepath.Join(d.stateDir, "creds.sock"), systemdAddr("app.service", "dbpass")); !bytes.Equal(got, p2) {
		t.Fatalf("after the rotation app.service gets %q, want the new version", got)
	}
	var s struct {
		Version     int `json:"version"`
		UnitActions []struct {
			Unit, Binding, Action, Result, Error string
		} `json:"unit_actions"`
	}
	d.mustAPI(t, "POST", "/v1/secrets/"+sec.ID+"/rotate", map[string]any{"payload": b64(p1)}, http.StatusOK, &s)
	if s.Version != 3 || len(s.UnitActions) != 1 || s.UnitActions[0].Unit != "app.service" || s.UnitActions[0].Action != "restart" ||
		s.UnitActions[0].Result != "failed" || s.UnitActions[0].Error == "" {
		t.Fatalf("rotate answer: %+v", s)
	}
	d.waitAudit(t, "the failed restart", "unit.restart", "failed", map[string]string{"unit": "app.service", "secret": sec.ID, "version": "2"}, "")
	for _, p := range [][]byte{p1, p2} {
		if strings.Contains(d.stderr.String(), string(p)) {
			t.Fatalf("payload %q in the daemon log", p)
		}
	}
}

// TestSecretListExpiringWithin: coffer secret list --expiring-within and
// GET /v1/projects/{p}/secrets?expiring_within= through the real binary;
// and cred list --all-projects, which names what the list does anyway.
func TestSecretListExpiringWithin(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	soon := time.Now().Add(48 * time.Hour).UTC().Format(time.RFC3339)
	later := time.Now().Add(60 * 24 * time.Hour).UTC().Format(time.RFC3339)
	d.mustCLI(t, "a", "secret", "create", "--display-name", "due-soon", "--payload-file", "-", "--expires-at", soon)
	d.mustCLI(t, "b", "secret", "create", "--display-name", "due-later", "--payload-file", "-", "--expires-at", later)
	d.mustCLI(t, "c", "secret", "create", "--display-name", "never-due", "--payload-file", "-")
	out := d.mustCLI(t, "", "secret", "list", "--expiring-within", "7d")
	if !strings.Contains(out.stdout, "due-soon") || strings.Contains(out.stdout, "due-later") || strings.Contains(out.stdout, "never-due") {
		t.Fatalf("--expiring-within 7d:\n%s", out.stdout)
	}
	out = d.mustCLI(t, "", "secret", "list", "--expiring-within", "3months")
	if !strings.Contains(out.stdout, "due-soon") || !strings.Contains(out.stdout, "due-later") || strings.Contains(out.stdout, "never-due") {
		t.Fatalf("--expiring-within 3months:\n%s", out.stdout)
	}
	if res := d.cli(t, "", "secret", "list", "--expiring-within", "soon"); res.code != 2 {
		t.Fatalf("--expiring-within soon: %v", res)
	}
	wantError(t, d.api(t, "GET", "/v1/projects/default/secrets?expiring_within=-1d", nil), http.StatusBadRequest, "invalid_argument")
	if res := d.cli(t, "", "cred", "list", "--all-projects"); res.code != 0 {
		t.Fatalf("cred list --all-projects: %v", res)
	}
	if res := d.cli(t, "", "cred", "list", "--all-projects", "--project", "default"); res.code != 2 {
		t.Fatalf("cred list --all-projects --project: %v", res)
	}
}

// TestWatchEndsWithItsToken: a watch authenticates once and may wait
// minutes; the token revoked while it waits must end it with 404 at the
// next wake-up, never with the version that follows (the rotation one
// makes after revoking a leaked token).
func TestWatchEndsWithItsToken(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "vm-web", "kind": "workload", "unix_uids": []int{4242}}, http.StatusCreated, nil)
	d.setRole(t, "default", "vm-web", "reader")
	cred := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "vm-web"})
	p1, p2 := []byte("revoked-watch-v1"), []byte("revoked-watch-v2")
	sec := d.createSecret(t, "default", "watched", p1, nil)
	d.bind(t, sec.ID, map[string]string{"user": "vm-web", "name": "dbpass"})
	ch := make(chan apiResp, 1)
	go func() {
		r, err := d.do("GET", "/v1/deliver/dbpass?wait=20s&after_version=1", http.Header{"Authorization": {"Bearer " + cred.Token}}, nil)
		if err != nil {
			t.Errorf("watch: %v", err)
		}
		ch <- r
	}()
	time.Sleep(300 * time.Millisecond)
	d.mustAPI(t, "POST", "/v1/credentials/"+cred.ID+"/revoke", nil, http.StatusOK, nil)
	d.rotateSecret(t, sec.ID, p2, 1)
	select {
	case r := <-ch:
		if bytes.Contains(r.body, p2) {
			t.Fatalf("the revoked token's watch was handed version 2: %d %q", r.status, r.body)
		}
		wantError(t, r, http.StatusNotFound, "not_found")
	case <-time.After(15 * time.Second):
		t.Fatal("the watch did not end")
	}
}
