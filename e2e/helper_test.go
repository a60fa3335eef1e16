package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

const (
	startTimeout = 20 * time.Second
	stopTimeout  = 20 * time.Second
	cliTimeout   = 30 * time.Second
	exportPrefix = "export COFFER_SOCKET="
)

// syncBuffer is a bytes.Buffer safe for a process writing and a test
// reading at the same time.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// workDir returns a fresh, short directory (socket paths are limited to
// 108 bytes) removed at the end of the test.
func workDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cof-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// cleanEnv is the test process environment without anything that would
// change how coffer behaves, plus extra.
func cleanEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "COFFER_") || strings.HasPrefix(kv, "SOFTHSM2_CONF=") ||
			strings.HasPrefix(kv, "CREDENTIALS_DIRECTORY=") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, extra...)
}

// daemonProc is one running `coffer daemon`.
type daemonProc struct {
	dir      string // the daemon's working directory
	stateDir string // dir/.coffer
	socket   string // from the export line
	cmd      *exec.Cmd
	stdout   *syncBuffer
	stderr   *syncBuffer
	done     chan struct{} // closed when the process has exited
	waitErr  error         // set before done is closed
	ended    bool          // Stop or Kill already ran
}

// startDaemon starts `coffer daemon --dev` (plus args) in dir, waits for
// its export line and registers a cleanup that stops it with SIGTERM and
// asserts exit status 0.
func startDaemon(t *testing.T, dir string, args ...string) *daemonProc {
	t.Helper()
	requireHSM(t)
	d := launchDaemon(t, dir, append([]string{"daemon", "--dev"}, args...)...)
	deadline := time.After(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for d.socket == "" {
		select {
		case <-d.done:
			t.Fatalf("coffer daemon exited before serving: %v\nstdout:\n%s\nstderr:\n%s", d.waitErr, d.stdout, d.stderr)
		case <-deadline:
			_ = d.cmd.Process.Kill()
			<-d.done
			t.Fatalf("coffer daemon printed no %q line within %s\nstdout:\n%s\nstderr:\n%s", exportPrefix, startTimeout, d.stdout, d.stderr)
		case <-tick.C:
			out := d.stdout.String()
			if i := strings.LastIndexByte(out, '\n'); i >= 0 {
				for _, line := range strings.Split(out[:i], "\n") {
					if s, ok := strings.CutPrefix(line, exportPrefix); ok {
						d.socket = s
					}
				}
			}
		}
	}
	t.Cleanup(func() {
		if !d.ended {
			d.Stop(t)
		}
	})
	return d
}

// launchDaemon starts the binary with args in dir without waiting for
// anything. The process is killed at the end of the test if still running.
func launchDaemon(t *testing.T, dir string, args ...string) *daemonProc {
	t.Helper()
	return launchDaemonEnv(t, dir, nil, args...)
}

// launchDaemonEnv is launchDaemon with extra environment variables.
func launchDaemonEnv(t *testing.T, dir string, env []string, args ...string) *daemonProc {
	t.Helper()
	requireHSM(t)
	return launchProc(t, dir, env, cofferBin, args...)
}

// Stop sends SIGTERM, waits, and asserts a clean exit (status 0).
func (d *daemonProc) Stop(t *testing.T) {
	t.Helper()
	d.ended = true
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("SIGTERM coffer daemon: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Fatalf("coffer daemon did not exit within %s of SIGTERM\nstderr:\n%s", stopTimeout, d.stderr)
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("coffer daemon exited with %d after SIGTERM (%v), want 0\nstderr:\n%s", code, d.waitErr, d.stderr)
	}
}

// Kill sends SIGKILL and waits for the process to be gone.
func (d *daemonProc) Kill(t *testing.T) {
	t.Helper()
	d.ended = true
	if err := d.cmd.Process.Signal(syscall.SIGKILL); err != nil && !errors.Is(err, os.ErrProcessDone) {
		t.Fatalf("SIGKILL coffer daemon: %v", err)
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		t.Fatalf("coffer daemon did not die within %s of SIGKILL", stopTimeout)
	}
}

// waitExit waits for a daemon that is expected to fail on its own and
// returns its exit code.
func (d *daemonProc) waitExit(t *testing.T) int {
	t.Helper()
	select {
	case <-d.done:
	case <-time.After(startTimeout):
		_ = d.cmd.Process.Kill()
		<-d.done
		t.Fatalf("coffer daemon still running after %s; want it to fail\nstdout:\n%s\nstderr:\n%s", startTimeout, d.stdout, d.stderr)
	}
	d.ended = true
	return d.cmd.ProcessState.ExitCode()
}

// cliResult is what one CLI run printed and returned.
type cliResult struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r cliResult) String() string {
	return fmt.Sprintf("coffer %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runCLI runs the coffer client with COFFER_SOCKET=socket (unless socket
// is empty) and stdin, and returns what happened.
func runCLI(t *testing.T, socket, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, cofferBin, args...)
	if socket != "" {
		cmd.Env = cleanEnv(exportPrefix[len("export "):] + socket)
	} else {
		cmd.Env = cleanEnv()
	}
	cmd.Dir = os.TempDir()
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := cliResult{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		res.code = ee.ExitCode()
	default:
		t.Fatalf("run coffer %v: %v", args, err)
	}
	if ctx.Err() != nil {
		t.Fatalf("coffer %v did not finish within %s", args, cliTimeout)
	}
	return res
}

// cli runs the CLI against d.
func (d *daemonProc) cli(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, d.socket, stdin, args...)
}

// mustCLI runs the CLI against d and fails the test unless it exits 0.
func (d *daemonProc) mustCLI(t *testing.T, stdin string, args ...string) cliResult {
	t.Helper()
	r := d.cli(t, stdin, args...)
	if r.code != 0 {
		t.Fatalf("want exit 0:\n%s", r)
	}
	return r
}

// httpClient returns a client whose every request goes to socket.
func httpClient(socket string) *http.Client {
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				var dl net.Dialer
				return dl.DialContext(ctx, "unix", socket)
			},
		},
	}
}

// apiResp is one HTTP response, fully read.
type apiResp struct {
	status int
	header http.Header
	body   []byte
}

// errorBody is the error shape of the API.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// api sends one request to d. body is sent as is when it is a string or
// []byte, form-encoded when url.Values, JSON-encoded otherwise, and omitted
// when nil.
func (d *daemonProc) api(t *testing.T, method, path string, body any) apiResp {
	t.Helper()
	return d.send(t, method, path, nil, body)
}

// mustAPI sends a request and fails unless the status is want; it decodes
// the body into out when out is not nil.
func (d *daemonProc) mustAPI(t *testing.T, method, path string, body any, want int, out any) apiResp {
	t.Helper()
	res := d.api(t, method, path, body)
	if res.status != want {
		t.Fatalf("%s %s: status %d, want %d; body: %s", method, path, res.status, want, res.body)
	}
	if out != nil {
		if err := json.Unmarshal(res.body, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, res.body, err)
		}
	}
	return res
}

// secret is the secret metadata as the API returns it.
type secret = api.Secret

type project struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Policies  []string  `json:"policies"`
	CreatedAt time.Time `json:"created_at"`
}

type list[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// createSecret creates a secret through the HTTP API and returns it.
func (d *daemonProc) createSecret(t *testing.T, proj, name string, payload []byte, kvs map[string]string) secret {
	t.Helper()
	body := map[string]any{"display_name": name, "payload": b64(payload)}
	if kvs != nil {
		body["key_values"] = kvs
	}
	var s secret
	res := d.mustAPI(t, "POST", "/v1/projects/"+proj+"/secrets", body, http.StatusCreated, &s)
	if loc := res.header.Get("Location"); loc != "/v1/secrets/"+s.ID {
		t.Errorf("Location = %q, want /v1/secrets/%s", loc, s.ID)
	}
	return s
}

// rotateSecret rotates through the HTTP API; kvs nil keeps key_values.
func (d *daemonProc) rotateSecret(t *testing.T, id string, payload []byte, cas int) secret {
	t.Helper()
	var s secret
	d.mustAPI(t, "POST", "/v1/secrets/"+id+"/rotate", map[string]any{"payload": b64(payload), "cas": cas}, http.StatusOK, &s)
	return s
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// wantError asserts an API error response.
func wantError(t *testing.T, res apiResp, status int, code string) {
	t.Helper()
	if res.status != status {
		t.Errorf("status %d, want %d; body: %s", res.status, status, res.body)
	}
	if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type %q, want application/json", ct)
	}
	var e errorBody
	dec := json.NewDecoder(bytes.NewReader(res.body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil {
		t.Fatalf("error body %q is not {error,message}: %v", res.body, err)
	}
	if e.Error != code {
		t.Errorf("error code %q, want %q; body: %s", e.Error, code, res.body)
	}
	if strings.TrimSpace(e.Message) == "" {
		t.Errorf("error %q has an empty message", code)
	}
}

// makeStaleSocket leaves a Unix socket file at path that nobody listens on.
func makeStaleSocket(t *testing.T, path string) {
	t.Helper()
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
}

// launchProc starts bin with args in dir (coffer, or a wrapper such as
// systemd-socket-activate that execs it), killed at the end of the test if
// still running.
func launchProc(t *testing.T, dir string, env []string, bin string, args ...string) *daemonProc {
	t.Helper()
	d := &daemonProc{
		dir:      dir,
		stateDir: filepath.Join(dir, ".coffer"),
		stdout:   &syncBuffer{},
		stderr:   &syncBuffer{},
		done:     make(chan struct{}),
	}
	d.cmd = exec.Command(bin, args...)
	d.cmd.Dir = dir
	d.cmd.Env = cleanEnv(env...)
	d.cmd.Stdout, d.cmd.Stderr = d.stdout, d.stderr
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		select {
		case <-d.done:
		default:
			_ = d.cmd.Process.Kill()
			<-d.done
		}
	})
	return d
}

// send makes one request to d with optional headers; body as in api. A
// transport error fails the test.
func (d *daemonProc) send(t *testing.T, method, path string, hdr http.Header, body any) apiResp {
	t.Helper()
	res, err := d.do(method, path, hdr, body)
	if err != nil {
		t.Fatalf("%s %s: %v\ndaemon stderr:\n%s", method, path, err, d.stderr)
	}
	return res
}

// do makes one request to d and returns the response fully read, or the
// transport error (for requests that may meet a daemon being killed).
func (d *daemonProc) do(method, path string, hdr http.Header, body any) (apiResp, error) {
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(b)
	case []byte:
		r = bytes.NewReader(b)
	case url.Values:
		r = strings.NewReader(b.Encode())
	default:
		j, err := json.Marshal(b)
		if err != nil {
			return apiResp{}, err
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, "http://coffer"+path, r)
	if err != nil {
		return apiResp{}, err
	}
	switch body.(type) {
	case nil:
	case url.Values:
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	default:
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	c := httpClient(d.socket)
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		return apiResp{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return apiResp{}, fmt.Errorf("read body: %w", err)
	}
	return apiResp{status: resp.StatusCode, header: resp.Header, body: b}, nil
}
