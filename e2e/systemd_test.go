package e2e

// End-to-end tests of coffer as a systemd service (issue 4), without
// systemd: sd_notify captured on a datagram socket of our own
// (READY/STATUS/WATCHDOG/RELOADING/STOPPING, with the sender's pid checked
// as NotifyAccess=main would), SIGHUP reloading the config file, socket
// activation through systemd-socket-activate, and the config file's
// precedence below COFFER_* variables and flags.

import (
	"bytes"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// notifyMsg is one sd_notify datagram.
type notifyMsg struct {
	at   time.Time
	pid  int32 // the sender, from SCM_CREDENTIALS
	raw  string
	vars map[string]string
}

func (m notifyMsg) String() string {
	return strings.ReplaceAll(m.raw, "\n", " | ") + " (pid " + strconv.Itoa(int(m.pid)) + ")"
}

// notifySocket is the $NOTIFY_SOCKET a test gives the daemon.
type notifySocket struct {
	path string
	ch   chan notifyMsg
	mu   sync.Mutex
	seen []notifyMsg // everything consumed so far, for failure messages
}

// listenNotify creates a unixgram socket that receives sd_notify messages
// with their sender's credentials, as systemd's does.
func listenNotify(t *testing.T) *notifySocket {
	t.Helper()
	n := &notifySocket{path: filepath.Join(workDir(t), "notify"), ch: make(chan notifyMsg, 4096)}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	raw, err := conn.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_PASSCRED, 1)
	}); err != nil || serr != nil {
		t.Fatalf("SO_PASSCRED: %v %v", err, serr)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		defer close(n.ch)
		buf := make([]byte, 8192)
		oob := make([]byte, 1024)
		for {
			nb, noob, _, _, err := conn.ReadMsgUnix(buf, oob)
			if err != nil {
				return
			}
			m := notifyMsg{at: time.Now(), raw: string(buf[:nb]), vars: map[string]string{}}
			if msgs, err := unix.ParseSocketControlMessage(oob[:noob]); err == nil {
				for _, cm := range msgs {
					if cred, err := unix.ParseUnixCredentials(&cm); err == nil {
						m.pid = cred.Pid
					}
				}
			}
			for _, line := range strings.Split(m.raw, "\n") {
				if k, v, ok := strings.Cut(line, "="); ok {
					m.vars[k] = v
				}
			}
			select {
			case n.ch <- m:
			default: // a test that stopped reading; drop
			}
		}
	}()
	return n
}

// next returns the next message with vars[key] == value (any value when
// value is "*"), consuming the ones before it.
func (n *notifySocket) next(t *testing.T, d *daemonProc, key, value string, timeout time.Duration) notifyMsg {
	t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case m, ok := <-n.ch:
			if !ok {
				t.Fatalf("notify socket closed while waiting for %s=%s", key, value)
			}
			n.mu.Lock()
			n.seen = append(n.seen, m)
			n.mu.Unlock()
			if v, ok := m.vars[key]; ok && (value == "*" || v == value) {
				return m
			}
		case <-deadline:
			t.Fatalf("no %s=%s within %s; received:\n%s\ndaemon log (end):\n%s", key, value, timeout, n.history(), logTail(d.stderr.String(), 20))
		}
	}
}

// drain consumes whatever arrives within d and returns it.
func (n *notifySocket) drain(d time.Duration) []notifyMsg {
	var out []notifyMsg
	deadline := time.After(d)
	for {
		select {
		case m, ok := <-n.ch:
			if !ok {
				return out
			}
			n.mu.Lock()
			n.seen = append(n.seen, m)
			n.mu.Unlock()
			out = append(out, m)
		case <-deadline:
			return out
		}
	}
}

func (n *notifySocket) history() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	var b strings.Builder
	for _, m := range n.seen {
		b.WriteString("  " + m.String() + "\n")
	}
	return b.String()
}

// monotonicUsec is CLOCK_MONOTONIC in microseconds, what MONOTONIC_USEC= carries.
func monotonicUsec(t *testing.T) int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		t.Fatal(err)
	}
	return ts.Nano() / 1000
}

// debugLines counts the DEBUG lines of the daemon's log.
func debugLines(d *daemonProc) int {
	return len(logLines(d.stderr.String(), "level=DEBUG"))
}

// refusedRequest makes one request the API refuses; the daemon logs those
// at debug level ("request refused").
func refusedRequest(t *testing.T, d *daemonProc) {
	t.Helper()
	wantError(t, d.api(t, "GET", "/v1/secrets/0190a0a0-0000-7000-8000-000000000000", nil), http.StatusNotFound, "not_found")
}

// TestNotifyLifecycle runs the daemon as systemd's Type=notify would and
// checks every message: STATUS while starting, READY=1 only once the API
// answers, WATCHDOG=1 every half WATCHDOG_USEC, RELOADING=1 (with
// MONOTONIC_USEC) then READY=1 on SIGHUP with the config file re-read (the
// log level changes), and STOPPING=1 then exit 0 on SIGTERM — all sent by
// the main pid.
func TestNotifyLifecycle(t *testing.T) {
	for _, tc := range []struct{ name, initial string }{
		// the file names a log level at start, as the packaged config does
		{"file sets log_level", "log_level = \"info\"\n"},
		// the file does not mention the level at start
		{"file without log_level", "expiry_warning = \"72h\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			requireHSM(t)
			dir := workDir(t)
			cfg := filepath.Join(dir, "coffer.toml")
			if err := os.WriteFile(cfg, []byte(tc.initial), 0o600); err != nil {
				t.Fatal(err)
			}
			n := listenNotify(t)
			d := launchDaemonEnv(t, dir, []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=200000"}, "daemon", "--dev", "--config", cfg)
			d.socket = filepath.Join(dir, ".coffer", "coffer.sock")
			pid := int32(d.cmd.Process.Pid)

			ready := n.next(t, d, "READY", "1", startTimeout)
			// READY=1 means serving: the API answers now, with no retry.
			c := httpClient(d.socket)
			resp, err := c.Get("http://coffer/v1/status")
			if err != nil {
				t.Fatalf("API does not answer right after READY=1: %v", err)
			}
			resp.Body.Close()
			c.CloseIdleConnections()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET /v1/status after READY=1: %d", resp.StatusCode)
			}
			if _, err := os.Stat(filepath.Join(d.stateDir, "creds.sock")); err != nil {
				t.Errorf("creds socket missing at READY=1: %v", err)
			}
			if strings.TrimSpace(ready.vars["STATUS"]) == "" {
				t.Errorf("READY=1 without a STATUS= line: %s", ready)
			}
			starting := false
			for _, m := range n.seen {
				_, status := m.vars["STATUS"]
				_, isReady := m.vars["READY"]
				starting = starting || (status && !isReady)
			}
			if !starting {
				t.Errorf("no STATUS= line while starting (before READY=1):\n%s", n.history())
			}
			for _, m := range n.seen {
				if m.pid != pid {
					t.Errorf("message %s sent by pid %d, not the main pid %d (NotifyAccess=main drops it)", m, m.pid, pid)
				}
				if _, ok := m.vars["WATCHDOG"]; ok && m.at.Before(ready.at) {
					t.Errorf("WATCHDOG=1 before READY=1: %s", m)
				}
			}

			// the watchdog: pinged more often than WATCHDOG_USEC, not flooded
			first := n.next(t, d, "WATCHDOG", "1", 2*time.Second)
			var last notifyMsg
			for range 4 {
				last = n.next(t, d, "WATCHDOG", "1", 2*time.Second)
				if last.pid != pid {
					t.Errorf("WATCHDOG=1 from pid %d, want %d", last.pid, pid)
				}
			}
			if avg := last.at.Sub(first.at) / 4; avg < 50*time.Millisecond || avg >= 200*time.Millisecond {
				t.Errorf("WATCHDOG=1 every %s on average; want about 100ms (half of WATCHDOG_USEC=200000)", avg)
			}

			// at info level a refused request is not logged
			refusedRequest(t, d)
			time.Sleep(100 * time.Millisecond)
			if k := debugLines(d); k != 0 {
				t.Fatalf("%d DEBUG lines at log level info:\n%s", k, logTail(d.stderr.String(), 10))
			}

			// SIGHUP with the file now at debug
			if err := os.WriteFile(cfg, []byte("log_level = \"debug\"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			before := monotonicUsec(t)
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			reloading := n.next(t, d, "RELOADING", "1", 5*time.Second)
			after := monotonicUsec(t)
			mono, err := strconv.ParseInt(reloading.vars["MONOTONIC_USEC"], 10, 64)
			if err != nil {
				t.Errorf("RELOADING=1 without a valid MONOTONIC_USEC= (systemd ignores it): %s", reloading)
			} else if mono < before || mono > after {
				t.Errorf("MONOTONIC_USEC=%d outside [%d, %d] (CLOCK_MONOTONIC around the SIGHUP)", mono, before, after)
			}
			if reloading.pid != pid {
				t.Errorf("RELOADING=1 from pid %d, want %d", reloading.pid, pid)
			}
			n.next(t, d, "READY", "1", 5*time.Second)
			d.waitLog(t, "the reload", "configuration reloaded")
			refusedRequest(t, d)
			d.waitLog(t, "a refused request at debug level after the reload to log_level debug", "level=DEBUG", "request refused")

			// and back to info
			if err := os.WriteFile(cfg, []byte("log_level = \"info\"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			n.next(t, d, "RELOADING", "1", 5*time.Second)
			n.next(t, d, "READY", "1", 5*time.Second)
			time.Sleep(50 * time.Millisecond)
			k := debugLines(d)
			refusedRequest(t, d)
			time.Sleep(100 * time.Millisecond)
			if k2 := debugLines(d); k2 != k {
				t.Errorf("still logging DEBUG after reloading log_level info:\n%s", logTail(d.stderr.String(), 5))
			}

			// a broken file on reload keeps the running config (and the daemon)
			if err := os.WriteFile(cfg, []byte("log_level = \n"), 0o600); err != nil {
				t.Fatal(err)
			}
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			n.next(t, d, "RELOADING", "1", 5*time.Second)
			n.next(t, d, "READY", "1", 5*time.Second)
			d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, nil)

			// SIGTERM: STOPPING=1, exit 0
			d.Stop(t)
			stopping := n.next(t, d, "STOPPING", "1", 5*time.Second)
			if stopping.pid != pid {
				t.Errorf("STOPPING=1 from pid %d, want %d", stopping.pid, pid)
			}
		})
	}
}

// TestNotifyWatchdogOtherPID: WATCHDOG_PID names another process (the
// watchdog is not ours), so the daemon must not ping; without
// NOTIFY_SOCKET nothing is sent and the daemon runs as before.
func TestNotifyWatchdogOtherPID(t *testing.T) {
	t.Parallel()
	requireHSM(t)
	dir := workDir(t)
	n := listenNotify(t)
	d := launchDaemonEnv(t, dir, []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=100000", "WATCHDOG_PID=1"}, "daemon", "--dev")
	d.socket = filepath.Join(dir, ".coffer", "coffer.sock")
	n.next(t, d, "READY", "1", startTimeout)
	for _, m := range n.drain(400 * time.Millisecond) {
		if _, ok := m.vars["WATCHDOG"]; ok {
			t.Errorf("WATCHDOG=1 sent although WATCHDOG_PID=1 is not the daemon: %s", m)
			break
		}
	}
	d.Stop(t)
	n.next(t, d, "STOPPING", "1", 5*time.Second)
}

const socketActivate = "/usr/bin/systemd-socket-activate"

func requireSocketActivate(t *testing.T) {
	t.Helper()
	requireHSM(t)
	if _, err := os.Stat(socketActivate); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("systemd-socket-activate is missing (%v); install systemd", err)
		}
		t.Skipf("systemd-socket-activate is missing: %v", err)
	}
}

// waitSocketFile waits until path is a socket (systemd-socket-activate
// creates it before it waits for the first connection).
func waitSocketFile(t *testing.T, d *daemonProc, path string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Lstat(path); err == nil && fi.Mode().Type() == os.ModeSocket {
			return
		}
		select {
		case <-d.done:
			t.Fatalf("systemd-socket-activate exited: %v\n%s", d.waitErr, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not created\n%s", path, d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func inode(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return fi.Sys().(*syscall.Stat_t).Ino
}

// TestSocketActivation starts coffer through systemd-socket-activate with
// the API and LoadCredential= sockets passed as "api" and "creds"
// (LISTEN_FDS/LISTEN_FDNAMES): the first client connection starts it, the
// CLI and LoadCredential= work through the passed sockets, and coffer
// neither binds its own sockets nor removes systemd's.
func TestSocketActivation(t *testing.T) {
	requireSocketActivate(t)
	t.Parallel()
	dir := workDir(t)
	api := filepath.Join(dir, "api.sock")
	creds := filepath.Join(dir, "creds.sock")
	n := listenNotify(t)
	d := launchProc(t, dir, nil, socketActivate,
		"-l", api, "-l", creds, "--fdname=api:creds",
		"-E", "NOTIFY_SOCKET="+n.path,
		cofferBin, "daemon", "--dev")
	waitSocketFile(t, d, api)
	waitSocketFile(t, d, creds)
	apiIno, credsIno := inode(t, api), inode(t, creds)

	// The first connection starts the daemon; the CLI simply waits for it.
	if r := runCLI(t, api, "", "status"); r.code != 0 {
		t.Fatalf("coffer status through the activated socket:\n%s\nactivator/daemon log:\n%s", r, d.stderr)
	}
	ready := n.next(t, d, "READY", "1", startTimeout)
	if ready.pid != int32(d.cmd.Process.Pid) {
		t.Errorf("READY=1 from pid %d; systemd-socket-activate execs coffer as pid %d", ready.pid, d.cmd.Process.Pid)
	}
	d.socket = api
	d.waitLog(t, "the activated start", "coffer is serving", "socket_activated=true")

	payload, marker := binaryPayload("ACTPAYLOAD-")
	s := d.createSecret(t, "default", "activated", payload, nil)
	d.bind(t, s.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"})
	if got := loadCred(t, creds, systemdAddr("nginx.service", "tls-key")); !bytes.Equal(got, payload) {
		t.Errorf("LoadCredential through the activated creds socket: got %q, want the payload", got)
	}
	if r := runCLI(t, api, "", "secret", "list"); r.code != 0 || !strings.Contains(r.stdout, s.ID) {
		t.Errorf("coffer secret list through the activated socket:\n%s", r)
	}

	// coffer did not make sockets of its own...
	for _, own := range []string{filepath.Join(d.stateDir, "coffer.sock"), filepath.Join(d.stateDir, "creds.sock")} {
		if _, err := os.Lstat(own); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("with activated sockets, coffer still created %s (%v)", own, err)
		}
	}
	// ...and told the developer where the socket it actually serves is
	if line := logLines(d.stdout.String(), exportPrefix); len(line) > 0 && line[0] != exportPrefix+api {
		t.Errorf("--dev printed %q, but the API is served on the activated socket %s", line[0], api)
	}

	d.Stop(t)
	n.next(t, d, "STOPPING", "1", 5*time.Second)
	// systemd owns the socket files: still there, the same inodes
	if _, err := os.Lstat(api); err != nil || inode(t, api) != apiIno {
		t.Errorf("coffer removed or replaced the activated API socket %s: %v", api, err)
	}
	if _, err := os.Lstat(creds); err != nil || inode(t, creds) != credsIno {
		t.Errorf("coffer removed or replaced the activated creds socket %s: %v", creds, err)
	}
	scanText(t, "daemon log", []byte(d.stderr.String()), payloadNeedles("payload", payload, marker))
}

// TestSocketActivationUnknownName: a socket passed under a name coffer does
// not know is a configuration error, said clearly, not silently ignored.
func TestSocketActivationUnknownName(t *testing.T) {
	requireSocketActivate(t)
	t.Parallel()
	dir := workDir(t)
	sock := filepath.Join(dir, "x.sock")
	d := launchProc(t, dir, nil, socketActivate, "-l", sock, "--fdname=bogus", cofferBin, "daemon", "--dev")
	waitSocketFile(t, d, sock)
	// The file is there once bound; connections are refused until
	// systemd-socket-activate listens on it a moment later.
	var c net.Conn
	var err error
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if c, err = net.Dial("unix", sock); err == nil || !errors.Is(err, syscall.ECONNREFUSED) || time.Now().After(deadline) {
			break
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close() // the connection started the daemon
	if code := d.waitExit(t); code == 0 {
		t.Errorf("coffer started with a socket named bogus; want a non-zero exit")
	}
	if !strings.Contains(d.stderr.String(), `bogus`) {
		t.Errorf("the error does not name the socket:\n%s", d.stderr)
	}
}

// startDaemonWith starts `coffer daemon --dev` with extra environment and
// waits for its export line (startDaemon without env).
func startDaemonWith(t *testing.T, dir string, env []string, args ...string) *daemonProc {
	t.Helper()
	d := launchDaemonEnv(t, dir, env, append([]string{"daemon", "--dev"}, args...)...)
	deadline := time.Now().Add(startTimeout)
	for d.socket == "" {
		for _, line := range strings.Split(d.stdout.String(), "\n") {
			if s, ok := strings.CutPrefix(line, exportPrefix); ok && strings.HasSuffix(d.stdout.String(), "\n") {
				d.socket = s
			}
		}
		select {
		case <-d.done:
			t.Fatalf("coffer daemon exited: %v\n%s", d.waitErr, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("no export line within %s\n%s", startTimeout, d.stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Cleanup(func() {
		if !d.ended {
			d.Stop(t)
		}
	})
	return d
}

func socketMode(t *testing.T, path string) os.FileMode {
	t.Helper()
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatalf("socket %s: %v", path, err)
	}
	return fi.Mode().Perm()
}

// TestDaemonConfigPrecedence: the config file sets the daemon's flags by
// their snake_case names; COFFER_* variables beat the file; flags beat both;
// an unknown key, bad TOML or a missing --config file stop the daemon with
// a message that says what is wrong.
func TestDaemonConfigPrecedence(t *testing.T) {
	requireHSM(t)
	write := func(t *testing.T, dir, text string) string {
		t.Helper()
		p := filepath.Join(dir, "coffer.toml")
		if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	const file = "socket_mode = \"0600\"\nlog_level = \"debug\"\n"

	t.Run("file", func(t *testing.T) {
		t.Parallel()
		dir := workDir(t)
		alt := filepath.Join(dir, "alt.sock")
		cfg := write(t, dir, file+"socket = \""+alt+"\"\n")
		d := startDaemonWith(t, dir, nil, "--config", cfg)
		if d.socket != alt {
			t.Errorf("socket = %s, want %s from the file", d.socket, alt)
		}
		if m := socketMode(t, d.socket); m != 0o600 {
			t.Errorf("socket mode %v, want 0600 from the file", m)
		}
		refusedRequest(t, d)
		d.waitLog(t, "a debug line (log_level from the file)", "level=DEBUG")
	})
	t.Run("COFFER_CONFIG names the file", func(t *testing.T) {
		t.Parallel()
		dir := workDir(t)
		cfg := write(t, dir, file)
		d := startDaemonWith(t, dir, []string{"COFFER_CONFIG=" + cfg})
		if m := socketMode(t, d.socket); m != 0o600 {
			t.Errorf("socket mode %v, want 0600 from $COFFER_CONFIG's file", m)
		}
	})
	t.Run("env beats file", func(t *testing.T) {
		t.Parallel()
		dir := workDir(t)
		cfg := write(t, dir, file)
		d := startDaemonWith(t, dir, []string{"COFFER_SOCKET_MODE=0640", "COFFER_LOG_LEVEL=info"}, "--config", cfg)
		if m := socketMode(t, d.socket); m != 0o640 {
			t.Errorf("socket mode %v, want 0640 from COFFER_SOCKET_MODE over the file's 0600", m)
		}
		refusedRequest(t, d)
		time.Sleep(100 * time.Millisecond)
		if k := debugLines(d); k != 0 {
			t.Errorf("COFFER_LOG_LEVEL=info did not beat the file's debug: %d DEBUG lines", k)
		}
	})
	t.Run("flag beats env", func(t *testing.T) {
		t.Parallel()
		dir := workDir(t)
		cfg := write(t, dir, file)
		d := startDaemonWith(t, dir, []string{"COFFER_SOCKET_MODE=0640"}, "--config", cfg, "--socket-mode", "0644")
		if m := socketMode(t, d.socket); m != 0o644 {
			t.Errorf("socket mode %v, want 0644 from --socket-mode over env and file", m)
		}
	})
	for _, bad := range []struct {
		name, text string
		want       []string
	}{
		{"unknown key", file + "bogus_knob = true\n", []string{"unknown key", "bogus_knob"}},
		{"typo", "socket_mod = \"0600\"\n", []string{"unknown key", "socket_mod"}},
		{"bad TOML", "log_level = \n", []string{"coffer.toml"}},
		{"bad value", "socket_mode = \"rwx\"\n", []string{"socket"}},
		{"bad memory limit", "memory_limit = \"12XB\"\n", []string{"--memory-limit", "12XB"}},
		{"negative bearer cache", "bearer_cache_size = -1\n", []string{"--bearer-cache-size"}},
	} {
		t.Run(bad.name, func(t *testing.T) {
			t.Parallel()
			dir := workDir(t)
			cfg := write(t, dir, bad.text)
			d := launchDaemon(t, dir, "daemon", "--dev", "--config", cfg)
			if code := d.waitExit(t); code == 0 {
				t.Fatalf("coffer daemon started with %q in its config", bad.text)
			}
			for _, w := range bad.want {
				if !strings.Contains(d.stderr.String(), w) {
					t.Errorf("error does not mention %q:\n%s", w, d.stderr)
				}
			}
			if _, err := os.Lstat(filepath.Join(dir, ".coffer", "coffer.sock")); err == nil {
				t.Errorf("a socket was left behind by the failed start")
			}
		})
	}
	t.Run("missing --config file", func(t *testing.T) {
		t.Parallel()
		dir := workDir(t)
		missing := filepath.Join(dir, "nope.toml")
		d := launchDaemon(t, dir, "daemon", "--dev", "--config", missing)
		if code := d.waitExit(t); code == 0 {
			t.Fatalf("coffer daemon started with a missing --config file")
		}
		if !strings.Contains(d.stderr.String(), missing) {
			t.Errorf("error does not name %s:\n%s", missing, d.stderr)
		}
	})
}
