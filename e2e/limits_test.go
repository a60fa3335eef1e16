package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestOversizeHeaders431: a request whose line and headers pass 16 KiB
// gets a 431 that the client can read (no reset), and the daemon goes on.
func TestOversizeHeaders431(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	failures := 0
	var last error
	for i := range 20 {
		req, _ := http.NewRequest("GET", "http://coffer/v1/status", nil)
		req.Header.Set("X-Big", strings.Repeat("h", (24+4*i)<<10))
		resp, err := httpClient(d.socket).Do(req)
		if err != nil {
			failures++
			last = err
			continue
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			failures++
			last = err
			continue
		}
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !resp.Close {
			t.Fatalf("status %d (close %v), want 431 and the connection closed; body %q", resp.StatusCode, resp.Close, b)
		}
	}
	if failures > 0 {
		t.Errorf("%d of 20 requests with oversize headers got no clean answer (last: %v)", failures, last)
	}
	// Headers under the limit are fine, and the daemon still serves.
	res := d.send(t, "GET", "/v1/status", http.Header{"X-Big": {strings.Repeat("h", 12<<10)}}, nil)
	if res.status != http.StatusOK {
		t.Fatalf("12 KiB of headers: status %d; body %s", res.status, res.body)
	}
	d.mustCLI(t, "", "status")
}

// socketFDs counts the sockets the process pid has open.
func socketFDs(t *testing.T, pid int) int {
	t.Helper()
	dir := "/proc/" + strconv.Itoa(pid) + "/fd"
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink(filepath.Join(dir, e.Name())); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestHalfOpenConnectionsDoNotStopService opens 300 connections that send
// nothing or half a request line (more than the default limit of 256):
// a client whose connection the daemon accepted before is served at once,
// the daemon never holds more than the limit, and new CLI and API requests
// succeed once the header timeout (1 s here, 5 s by default) has cut the
// idle ones off.
func TestHalfOpenConnectionsDoNotStopService(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t), "--read-header-timeout", "1s")
	pid := d.cmd.Process.Pid
	base := socketFDs(t, pid)

	// A client with one kept-alive connection, accepted before the flood.
	early := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", d.socket)
		},
		MaxConnsPerHost: 1,
	}}
	defer early.CloseIdleConnections()
	get := func() (status int, reused bool) {
		t.Helper()
		ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
			GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
		})
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://coffer/v1/status", nil)
		resp, err := early.Do(req)
		if err != nil {
			t.Fatalf("the early client: %v", err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode, reused
	}
	if status, _ := get(); status != http.StatusOK {
		t.Fatalf("status %d", status)
	}

	const flood = 300
	conns := make([]net.Conn, 0, flood)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := range flood {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatalf("half-open connection %d: %v", i, err)
		}
		conns = append(conns, c)
		if i%2 == 1 {
			io.WriteString(c, "GET /v1/sta") // a partial request line
		}
	}
	// The accepted client is served during the flood, on its connection.
	if status, reused := get(); status != http.StatusOK || !reused {
		t.Fatalf("the early client during the flood: status %d, reused its connection %v", status, reused)
	}
	// The daemon holds at most 256 of them (the listeners and the early
	// client's connection are the base).
	most := 0
	for range 10 {
		most = max(most, socketFDs(t, pid))
		time.Sleep(30 * time.Millisecond)
	}
	if most > base+256 {
		t.Errorf("the daemon had %d sockets open during the flood (%d before it), want at most 256 more", most, base)
	}
	if most < base+100 {
		t.Errorf("the daemon had only %d sockets open during the flood (%d before it): did the flood reach it?", most, base)
	}
	// New clients are served.
	d.mustCLI(t, "", "status")
	d.mustAPI(t, "POST", "/v1/projects", map[string]any{"name": "after-flood"}, http.StatusCreated, nil)
	d.mustCLI(t, "", "project", "list")
}

// trickle sends data one byte every 500 ms until the daemon hangs up (true)
// or bound passes (false). Whatever the daemon answers first is ignored.
func trickle(c net.Conn, data string, bound time.Duration) bool {
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c) // ends at EOF or reset
		close(closed)
	}()
	end := time.After(bound)
	for i := 0; ; i++ {
		select {
		case <-closed:
			return true
		case <-end:
			return false
		case <-time.After(500 * time.Millisecond):
		}
		if i < len(data) {
			c.Write([]byte{data[i]}) // fails once the daemon is gone; the reader notices
		}
	}
}

// TestSlowlorisIsCutOff: with the default timeouts, a client that sends
// its headers one byte every 500 ms is disconnected (after 5 s), and so is
// one that sends its body that way (after 10 s); the daemon goes on.
func TestSlowlorisIsCutOff(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	cases := []struct{ name, head, slow string }{
		{"headers", "", "GET /v1/status HTTP/1.1\r\nHost: coffer\r\nX-Slow: " + strings.Repeat("s", 500) + "\r\n\r\n"},
		{"body", "POST /v1/projects HTTP/1.1\r\nHost: coffer\r\nContent-Type: application/json\r\nContent-Length: 8000\r\n\r\n",
			`{"name":"` + strings.Repeat("s", 7990) + `"}`},
	}
	var wg sync.WaitGroup
	for _, tc := range cases {
		c, err := net.Dial("unix", d.socket)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, tc.head); err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			if !trickle(c, tc.slow, 2*time.Minute) {
				t.Errorf("%s: the daemon did not hang up on a client sending one byte every 500 ms", tc.name)
			}
		})
	}
	wg.Wait()
	d.mustCLI(t, "", "status")
	d.mustCLI(t, "", "project", "list")
}

// guestClient talks HTTP through the host side of a VM's hybrid vsock,
// as the VMM does for its guest: the daemon sees the VM as the caller.
func guestClient(dir, vm string, port int) *http.Client {
	path := filepath.Join(dir, fmt.Sprintf("%s.vsock_%d", vm, port))
	return httpClient(path)
}

// do sends one request with c and reads the answer.
func do(t *testing.T, c *http.Client, method, path, token string, form url.Values) apiResp {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, "http://coffer"+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return apiResp{status: resp.StatusCode, header: resp.Header, body: b}
}

// TestFailedAuthenticationsAreRateLimited: after auth_fail_burst bad
// tokens from one caller (here a VM on hybrid vsock: the test process can
// play its VMM), every token from that caller — bearer, login, OAuth2
// client — gets 429 rate_limited with a Retry-After, even a correct one
// (it is refused before it is looked up), until Retry-After has passed.
// Other callers presenting the same correct token are served: another VM,
// root on the Unix socket (system admins are never limited: they can
// issue themselves any credential), and another uid. An unbound uid on
// the Unix socket is limited the same way, through the CLI.
func TestFailedAuthenticationsAreRateLimited(t *testing.T) {
	t.Parallel()
	dir, pub := workDir(t), publicDir(t)
	const port = 5108
	sock := filepath.Join(pub, "c.sock")
	vm := func(name string) string {
		return fmt.Sprintf("[[vm]]\nname = %q\nuds_path = %q\nvmm_user = %d\n", name, filepath.Join(dir, name+".vsock"), os.Getuid())
	}
	cfg := filepath.Join(dir, "coffer.toml")
	if err := os.WriteFile(cfg, []byte("auth_fail_burst = 3\nauth_fail_refill = \"5s\"\n"+vm("vm-a")+vm("vm-b")), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "--config", cfg, "--vsock-port", fmt.Sprint(port), "--socket", sock, "--socket-mode", "0666")
	d.newUser(t, "svc")
	d.setRole(t, "default", "svc", "reader")
	at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "svc"})
	auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "svc"})
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "svc"})
	good := secretOf(at)
	vmA, vmB := guestClient(dir, "vm-a", port), guestClient(dir, "vm-b", port)

	// Root is not limited: many failures, all plain 401s.
	for i := range 10 {
		if res := d.bearer(t, wrongSecret(t, good), "GET", secretsPath, nil); res.status != http.StatusUnauthorized {
			t.Fatalf("root's guess %d: status %d, want 401; body %s", i+1, res.status, res.body)
		}
	}
	// vm-a's burst: three guesses, each a well-formed token of a real
	// credential with the wrong secret, are plain 401s.
	for i := range 3 {
		if res := do(t, vmA, "GET", secretsPath, wrongSecret(t, good), nil); res.status != http.StatusUnauthorized {
			t.Fatalf("vm-a's guess %d: status %d, want 401; body %s", i+1, res.status, res.body)
		}
	}
	wantLimited := func(what string, res apiResp, oauth2 bool) int {
		t.Helper()
		if res.status != http.StatusTooManyRequests {
			t.Fatalf("%s: status %d, want 429; body %s", what, res.status, res.body)
		}
		ra, err := strconv.Atoi(res.header.Get("Retry-After"))
		if err != nil || ra < 1 || ra > 5 {
			t.Fatalf("%s: Retry-After %q, want 1 to 5 seconds", what, res.header.Get("Retry-After"))
		}
		if !oauth2 {
			wantError(t, res, http.StatusTooManyRequests, "rate_limited")
			return ra
		}
		var e map[string]string
		if err := json.Unmarshal(res.body, &e); err != nil || e["error"] != "rate_limited" || e["error_description"] == "" || len(e) != 2 {
			t.Fatalf("%s: body %s, want RFC 6749 {error: rate_limited, error_description}", what, res.body)
		}
		return ra
	}
	// vm-a's next attempts are refused before any lookup: the right
	// token, the right auth token, the right client secret.
	wantLimited("vm-a, the correct bearer", do(t, vmA, "GET", secretsPath, good, nil), false)
	wantLimited("vm-a, login with the correct auth token", do(t, vmA, "POST", "/v1/auth/login", secretOf(auth), nil), false)
	form := url.Values{"grant_type": {"client_credentials"}, "client_id": {oc.ClientID}, "client_secret": {oc.ClientSecret}}
	wantLimited("vm-a, the correct oauth2 client", do(t, vmA, "POST", "/oauth2/token", "", form), true)
	if got := d.getCred(t, auth.ID); got.AuthnCount != 0 {
		t.Errorf("a refused login was counted: authn_count %d", got.AuthnCount)
	}
	// Other callers with the same token are served.
	if res := do(t, vmB, "GET", secretsPath, good, nil); res.status != http.StatusOK {
		t.Errorf("vm-b with the correct token: status %d; body %s", res.status, res.body)
	}
	d.wantWorks(t, "root with the correct token", good)
	wantLimited("vm-a, still", do(t, vmA, "GET", secretsPath, good, nil), false)

	// Once Retry-After has passed, vm-a's correct token works again.
	deadline := time.Now().Add(30 * time.Second)
	for {
		res := do(t, vmA, "GET", secretsPath, good, nil)
		if res.status == http.StatusOK {
			break
		}
		ra := wantLimited("vm-a, waiting out the limit", res, false)
		if time.Now().After(deadline) {
			t.Fatal("vm-a still limited 30 s later")
		}
		time.Sleep(time.Duration(ra) * time.Second)
	}
	if res := do(t, vmA, "POST", "/v1/auth/login", secretOf(auth), nil); res.status != http.StatusCreated {
		t.Errorf("vm-a's login after the wait: status %d; body %s", res.status, res.body)
	}

	// An unbound uid on the Unix socket, through the CLI.
	if os.Geteuid() == 0 {
		bin := filepath.Join(pub, "coffer")
		copyFile(t, cofferBin, bin, 0o755)
		as := func(token string) (int, string) {
			code, _, errs := cliAs(t, bin, 4242, []string{"COFFER_SOCKET=" + sock, "COFFER_TOKEN=" + token, "HOME=" + pub}, "secret", "list", "--project", "default")
			return code, errs
		}
		for i := range 3 {
			if code, errs := as(wrongSecret(t, good)); code != 1 || !strings.Contains(errs, badTokenMessage) {
				t.Fatalf("uid 4242's guess %d: exit %d %s, want 1 and %q", i+1, code, errs, badTokenMessage)
			}
		}
		if code, errs := as(good); code != 1 || !strings.Contains(errs, "too many failed authentications; retry in") {
			t.Errorf("uid 4242 with the correct token after its guesses: exit %d %s, want 1 and the wait", code, errs)
		}
		d.wantWorks(t, "root with the correct token", good)
	}

	d.Stop(t)
	log := d.stderr.String()
	for _, caller := range []string{"hybrid-vsock vm=vm-a", "unix uid=4242"} {
		if os.Geteuid() != 0 && strings.HasPrefix(caller, "unix") {
			continue
		}
		if n := len(logLines(log, "too many failed authentications: refusing", `caller="`+caller+`"`)); n != 1 {
			t.Errorf("%d log lines about the limited caller %s, want 1 (when it was limited)\n%s", n, caller, logTail(log, 20))
		}
	}
	if strings.Contains(log, `caller="unix uid=0"`) {
		t.Errorf("root was limited\n%s", logTail(log, 20))
	}
	noSecretIn(t, "daemon log", log, good, secretOf(auth), oc.ClientSecret)
}
