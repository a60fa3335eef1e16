package e2e

// Issue 5: HSM faults are clear and recoverable. Start-up faults stop the
// daemon with one line that names what is wrong; a token lost while the
// daemon runs makes HSM operations fail with 503 hsm_unavailable (metadata
// keeps working, status and the watchdog say so), and the same process
// serves again once the token is back.

import (
	"bytes"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const (
	prodToken = "coffer-prod"
	prodPIN   = "prod-user-pin-4711"
	prodSOPIN = "prod-so-pin-0815"
	// recoverTimeout bounds the wait for the daemon to find its token again
	// (the reconnect backoff tops out at 10 s).
	recoverTimeout = 60 * time.Second
)

// softHSMStore is a SoftHSM token store of a test's own, with softhsm2-util
// to manage its tokens.
type softHSMStore struct {
	dir  string
	conf string
}

func newSoftHSMStore(t *testing.T, dir string) *softHSMStore {
	t.Helper()
	requireHSM(t)
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("softhsm2-util is required in CI: %v", err)
		}
		t.Skipf("softhsm2-util not installed: %v", err)
	}
	s := &softHSMStore{dir: filepath.Join(dir, "tokens"), conf: filepath.Join(dir, "softhsm2.conf")}
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := "directories.tokendir = " + s.dir + "\nobjectstore.backend = file\nlog.level = ERROR\n"
	if err := os.WriteFile(s.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *softHSMStore) env() []string { return []string{"SOFTHSM2_CONF=" + s.conf} }

// util runs softhsm2-util on this store.
func (s *softHSMStore) util(t *testing.T, args ...string) {
	t.Helper()
	cmd := exec.Command("softhsm2-util", args...)
	cmd.Env = cleanEnv(s.env()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("softhsm2-util %s: %v\n%s", args[0], err, out)
	}
}

// initToken initialises a new, empty token labelled label.
func (s *softHSMStore) initToken(t *testing.T, label string) {
	t.Helper()
	s.util(t, "--init-token", "--free", "--label", label, "--so-pin", prodSOPIN, "--pin", prodPIN)
}

// wipeToken deletes the token and initialises an empty one with the same
// label and PINs: the token coffer was configured with, without its keys.
func (s *softHSMStore) wipeToken(t *testing.T, label string) {
	t.Helper()
	s.util(t, "--delete-token", "--token", label)
	s.initToken(t, label)
}

// writeFile writes content to dir/name (0600) and returns the path.
func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// prodDaemonArgs runs `coffer daemon` in production mode on token label of
// a test's SoftHSM store, with its state, sockets and PIN file under dir.
func prodDaemonArgs(dir, state, label, pinFile string, extra ...string) []string {
	return append([]string{"daemon",
		"--state-dir", state,
		"--socket", filepath.Join(dir, "api.sock"),
		"--creds-socket", filepath.Join(dir, "creds.sock"),
		"--hsm-module", softHSMModule,
		"--hsm-token", label,
		"--hsm-pin-file", pinFile}, extra...)
}

// startProd starts a production-mode daemon and waits until its socket
// accepts connections.
func startProd(t *testing.T, dir string, env, args []string) *daemonProc {
	t.Helper()
	d := launchDaemonEnv(t, dir, env, args...)
	d.socket = filepath.Join(dir, "api.sock")
	deadline := time.Now().Add(startTimeout)
	for {
		if c, err := net.Dial("unix", d.socket); err == nil {
			c.Close()
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
	t.Cleanup(func() {
		if !d.ended {
			d.Stop(t)
		}
	})
	return d
}

// populate runs a production daemon once on a fresh state dir, which
// provisions the keys, and stores a secret.
func populate(t *testing.T, dir, state, label, pinFile string, env []string) {
	t.Helper()
	d := startProd(t, dir, env, prodDaemonArgs(dir, state, label, pinFile))
	var st status
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	if st.Dev || !st.HSM.Healthy || st.HSM.TokenLabel != label {
		t.Fatalf("fresh production daemon: status %+v, want production, healthy on %s", st, label)
	}
	d.createSecret(t, "default", "made before the fault", []byte("payload"), nil)
	d.Stop(t)
}

// TestHSMStartupFaults: a missing module, a wrong PIN, a missing token and
// a missing key (a token that lost coffer's keys under an existing store)
// each stop `coffer daemon` with exit 1 and exactly one line on stderr that
// names the module, token or key and the PKCS#11 code — no panic, no stack
// trace, no PIN.
func TestHSMStartupFaults(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	store := newSoftHSMStore(t, dir)
	store.initToken(t, prodToken)
	pin := writeFile(t, dir, "hsm-pin", prodPIN+"\n")
	badPIN := writeFile(t, dir, "bad-pin", "not-the-pin-1234\n")
	state := filepath.Join(dir, "state")
	// A fresh state dir on a fresh token provisions the keys.
	populate(t, dir, state, prodToken, pin, store.env())

	// A second token whose keys are lost after the store was made.
	const wiped = "coffer-wiped"
	store.initToken(t, wiped)
	wipedState := filepath.Join(dir, "wiped-state")
	populate(t, dir, wipedState, wiped, pin, store.env())
	store.wipeToken(t, wiped)

	const missingModule = "/nonexistent/libpkcs11.so"
	tests := []struct {
		name string
		args []string
		want []string // all on the one line
	}{
		{"missing module", prodDaemonArgs(dir, state, prodToken, pin, "--hsm-module", missingModule),
			[]string{"cannot load PKCS#11 module " + missingModule, "no such file or directory"}},
		{"wrong PIN", prodDaemonArgs(dir, state, prodToken, badPIN),
			[]string{"wrong HSM PIN", "token " + prodToken, "module " + softHSMModule, "CKR_PIN_INCORRECT"}},
		{"missing token", prodDaemonArgs(dir, state, "coffer-nowhere", pin),
			[]string{"HSM token coffer-nowhere", "module " + softHSMModule, "CKR_TOKEN_NOT_PRESENT"}},
		{"missing key", prodDaemonArgs(dir, wipedState, wiped, pin),
			[]string{"HSM KEK coffer-kek-1 is missing", "token " + wiped, "module " + softHSMModule,
				"C_FindObjects", "not creating a new one", filepath.Join(wipedState, "data")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := launchDaemonEnv(t, dir, store.env(), tt.args...)
			code := d.waitExit(t)
			stderr, stdout := d.stderr.String(), d.stdout.String()
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 || !strings.HasPrefix(lines[0], "coffer: ") {
				t.Fatalf("stderr has %d lines, want exactly one \"coffer: ...\" line:\n%s", len(lines), stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("error line lacks %q:\n%s", w, lines[0])
				}
			}
			noPanic(t, stderr+stdout)
			for _, p := range []string{prodPIN, prodSOPIN, "not-the-pin-1234"} {
				if strings.Contains(stderr+stdout, p) {
					t.Errorf("output contains a PIN:\n%s", stderr)
				}
			}
			if stdout != "" {
				t.Errorf("stdout is not empty:\n%s", stdout)
			}
			if _, err := os.Stat(filepath.Join(dir, "api.sock")); err == nil {
				t.Errorf("a failed daemon left its socket behind")
			}
		})
	}

	// The refusal created nothing: the wiped token still has no keys, so
	// the store stays refused, while a fresh state dir may provision them.
	d := launchDaemonEnv(t, dir, store.env(), prodDaemonArgs(dir, wipedState, wiped, pin)...)
	if code := d.waitExit(t); code != 1 || !strings.Contains(d.stderr.String(), "is missing") {
		t.Errorf("second start on the wiped token: exit %d\n%s", code, d.stderr)
	}
	populate(t, dir, filepath.Join(dir, "fresh-state"), wiped, pin, store.env())
}

// TestHSMLossAndRecovery takes the dev token away from a running daemon
// (SoftHSM's token directory is moved out of its token store) and brings it
// back: meanwhile HSM operations get 503 hsm_unavailable, metadata reads
// work, status and the systemd watchdog say the HSM is unhealthy; then the
// same process seals and delivers again, the secret made before the outage
// with its exact payload.
func TestHSMLossAndRecovery(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	n := listenNotify(t)
	d := startDaemonWith(t, dir, []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=400000"})
	pid := d.cmd.Process.Pid
	ready := n.next(t, d, "READY", "1", startTimeout)
	n.next(t, d, "WATCHDOG", "1", 5*time.Second)

	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "app", "kind": "workload"}, http.StatusCreated, nil)
	d.setRole(t, "default", "app", "reader")
	tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "app"}).Token
	payload, marker := binaryPayload("BEFORE-OUTAGE-")
	before := d.createSecret(t, "default", "made before the outage", payload, map[string]string{"k": "v"})
	d.bind(t, before.ID, map[string]string{"user": "app", "name": "db"})
	deliver := func() apiResp { t.Helper(); return d.bearer(t, tok, "GET", "/v1/deliver/db", nil) }
	if res := deliver(); res.status != http.StatusOK || !bytes.Equal(res.body, payload) {
		t.Fatalf("deliver before the outage: %d %q", res.status, res.body)
	}

	tokens := tokenDirs(t, d.stateDir)
	if len(tokens) != 1 {
		t.Fatalf("dev token store has %d tokens, want 1", len(tokens))
	}
	tokenPath := filepath.Join(d.stateDir, "hsm", "tokens", tokens[0])
	away := filepath.Join(dir, "token-away")
	if err := os.Rename(tokenPath, away); err != nil {
		t.Fatal(err)
	}
	restored := false
	restore := func() {
		if !restored {
			restored = true
			if err := os.Rename(away, tokenPath); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Cleanup(restore)

	// HSM operations: 503 hsm_unavailable, nothing stored.
	create := func(name string, p []byte) apiResp {
		return d.api(t, "POST", "/v1/projects/default/secrets", map[string]any{"display_name": name, "payload": b64(p)})
	}
	wantError(t, create("during the outage", []byte("lost?")), http.StatusServiceUnavailable, "hsm_unavailable")
	wantError(t, deliver(), http.StatusServiceUnavailable, "hsm_unavailable")
	wantError(t, d.api(t, "POST", "/v1/secrets/"+before.ID+"/rotate", map[string]any{"payload": b64([]byte("new")), "cas": 1}),
		http.StatusServiceUnavailable, "hsm_unavailable")
	// Metadata: served as before.
	var got secret
	d.mustAPI(t, "GET", "/v1/secrets/"+before.ID, nil, http.StatusOK, &got)
	sameJSON(t, "secret metadata during the outage", got, before)
	var l list[secret]
	d.mustAPI(t, "GET", "/v1/projects/default/secrets", nil, http.StatusOK, &l)
	if len(l.Items) != 1 {
		t.Errorf("%d secrets listed during the outage, want 1", len(l.Items))
	}
	// Status (probed at most every 2 s): unhealthy, with the reason.
	st := waitStatus(t, d, false)
	if !strings.Contains(st.HSM.Error, "coffer-dev") || !strings.Contains(st.HSM.Error, "reconnecting") || !st.Store.Healthy {
		t.Errorf("status during the outage: %+v, want the HSM unhealthy naming coffer-dev and reconnecting, the store healthy", st)
	}
	// coffer status shows it and exits 4; GET /v1/health names the part.
	if r := d.cli(t, "", "status"); r.code != 4 || !strings.Contains(r.stdout, "UNHEALTHY") ||
		!strings.Contains(r.stderr, "the daemon is unhealthy: hsm does not answer") {
		t.Errorf("coffer status during the outage: want exit 4, UNHEALTHY and the part on stderr:\n%s", r)
	}
	if res := d.api(t, "GET", "/v1/health", nil); res.status != http.StatusServiceUnavailable ||
		strings.TrimSpace(string(res.body)) != `{"status":"unhealthy","failed":["hsm"]}` {
		t.Errorf("GET /v1/health during the outage: %d %s", res.status, res.body)
	}
	// The watchdog: the daemon repairs a lost token itself, and a restart
	// would not bring it back, so pings go on with a STATUS= that says
	// why.
	degraded := nextStatus(t, n, d, "degraded, recovering")
	if !strings.Contains(degraded, "hsm unavailable") {
		t.Errorf("watchdog STATUS= %q does not say the HSM is unavailable", degraded)
	}
	pings := 0
	for _, m := range n.drain(time.Second) {
		if _, ok := m.vars["WATCHDOG"]; ok {
			pings++
		}
	}
	if pings == 0 {
		t.Error("no WATCHDOG=1 while the token is away: systemd would restart a daemon that is recovering by itself")
	}
	d.waitLog(t, "the loss", "level=WARN", `msg="HSM token lost`, "token=coffer-dev")

	restore()
	// The same process recovers: poll a seal until it works; every failure
	// until then is the same 503.
	after := []byte("sealed after the outage")
	deadline := time.Now().Add(recoverTimeout)
	var s2 secret
	for {
		res := create("after the outage", after)
		if res.status == http.StatusCreated {
			decodeOutput(t, "json", string(res.body), &s2)
			break
		}
		wantError(t, res, http.StatusServiceUnavailable, "hsm_unavailable")
		if t.Failed() || time.Now().After(deadline) {
			t.Fatalf("no successful seal within %s of restoring the token\ndaemon log (end):\n%s", recoverTimeout, logTail(d.stderr.String(), 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if res := deliver(); res.status != http.StatusOK || !bytes.Equal(res.body, payload) {
		t.Errorf("deliver after recovery: %d, payload intact: %v", res.status, bytes.Equal(res.body, payload))
	}
	d.bind(t, s2.ID, map[string]string{"user": "app", "name": "after"})
	if res := d.bearer(t, tok, "GET", "/v1/deliver/after", nil); res.status != http.StatusOK || !bytes.Equal(res.body, after) {
		t.Errorf("deliver of the secret sealed after recovery: %d %q", res.status, res.body)
	}
	d.rotateSecret(t, before.ID, []byte("rotated after"), 1)
	d.mustAPI(t, "GET", "/v1/projects/default/secrets", nil, http.StatusOK, &l)
	if len(l.Items) != 2 {
		t.Errorf("%d secrets after recovery, want 2: a failed create stored something", len(l.Items))
	}
	waitStatus(t, d, true)
	if res := d.api(t, "GET", "/v1/health", nil); res.status != http.StatusOK {
		t.Errorf("GET /v1/health after recovery: %d %s", res.status, res.body)
	}
	if r := d.cli(t, "", "status"); r.code != 0 {
		t.Errorf("coffer status after recovery: want exit 0:\n%s", r)
	}
	// The metrics saw it: a reconnect, and HSM operations that failed.
	exp := string(d.mustAPI(t, "GET", "/v1/metrics", nil, http.StatusOK, nil).body)
	if !strings.Contains(exp, "\ncoffer_hsm_reconnects_total 1\n") || !strings.Contains(exp, "\ncoffer_hsm_up 1\n") {
		t.Errorf("metrics after recovery lack coffer_hsm_reconnects_total 1 and coffer_hsm_up 1")
	}
	failedOps := 0
	for _, line := range strings.Split(exp, "\n") {
		if strings.HasPrefix(line, "coffer_hsm_operation_errors_total{") && !strings.HasSuffix(line, " 0") {
			failedOps++
		}
	}
	if failedOps == 0 {
		t.Error("metrics count no failed HSM operation after an outage that failed seals and unseals")
	}
	// The serving status line comes back, with a ping.
	back := n.next(t, d, "STATUS", ready.vars["STATUS"], recoverTimeout)
	if back.vars["WATCHDOG"] != "1" {
		t.Errorf("the serving status line came back without a ping: %s", back)
	}

	select {
	case <-d.done:
		t.Fatalf("the daemon exited: %v", d.waitErr)
	default:
	}
	if d.cmd.Process.Pid != pid {
		t.Fatal("not the same process")
	}
	d.waitLog(t, "the recovery", "level=INFO", `msg="HSM token is back"`, "token=coffer-dev", "down_for=")
	log := d.stderr.String()
	if n := len(logLines(log, "level=WARN", `msg="HSM token lost`)); n != 1 {
		t.Errorf("%d warn lines about the loss, want 1", n)
	}
	if n := len(logLines(log, `msg="HSM token is back"`)); n != 1 {
		t.Errorf("%d lines about the recovery, want 1", n)
	}
	pin := strings.TrimSpace(readFile(t, filepath.Join(d.stateDir, "hsm", "hsm-pin")))
	if strings.Contains(log, pin) || strings.Contains(log, marker) {
		t.Error("the daemon log contains the PIN or the payload")
	}
	d.Stop(t)
}

// waitStatus polls GET /v1/status until the HSM's health is healthy (the
// probe is cached for 2 s) and returns that status.
func waitStatus(t *testing.T, d *daemonProc, healthy bool) status {
	t.Helper()
	deadline := time.Now().Add(recoverTimeout)
	for {
		var st status
		d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
		if st.HSM.Healthy == healthy {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("status never had HSM healthy=%v within %s; last: %+v", healthy, recoverTimeout, st)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// nextStatus returns the next STATUS= value that starts with prefix.
func nextStatus(t *testing.T, n *notifySocket, d *daemonProc, prefix string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		found := ""
		for _, m := range n.drain(100 * time.Millisecond) {
			if s, ok := m.vars["STATUS"]; ok && found == "" && strings.HasPrefix(s, prefix) {
				found = s
			}
		}
		if found != "" {
			return found
		}
	}
	t.Fatalf("no STATUS=%s... ; received:\n%s\ndaemon log (end):\n%s", prefix, n.history(), logTail(d.stderr.String(), 20))
	return ""
}
