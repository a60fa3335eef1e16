package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestExpiry: expires_at is stored in UTC and the status turns expired once
// it has passed, in the API and the CLI.
func TestExpiry(t *testing.T) {
	d := startDaemon(t, workDir(t))
	plus2 := time.FixedZone("UTC+2", 2*3600)
	exp := time.Now().Add(2 * time.Second).Truncate(time.Second).Add(time.Second).In(plus2)
	var s secret
	d.mustAPI(t, "POST", "/v1/projects/default/secrets", map[string]any{
		"display_name": "short-lived", "payload": b64([]byte("x")), "expires_at": exp.Format(time.RFC3339),
	}, http.StatusCreated, &s)
	if s.ExpiresAt == nil || !s.ExpiresAt.Equal(exp) || s.ExpiresAt.Location() != time.UTC || s.Status != "active" {
		t.Errorf("created = %+v, want active, expires_at %v in UTC", s, exp.UTC())
	}

	// the CLI flag takes an RFC 3339 time and shows it back
	far := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)
	r := d.mustCLI(t, "y", "secret", "create", "--display-name", "cli expiry", "--payload-file", "-", "--expires-at", far.Format(time.RFC3339))
	if got := tableFields(t, r.stdout)["EXPIRES"]; got != far.Format(time.RFC3339) {
		t.Errorf("CLI EXPIRES = %q, want %s\n%s", got, far.Format(time.RFC3339), r.stdout)
	}
	if bad := d.cli(t, "y", "secret", "create", "--display-name", "past", "--payload-file", "-", "--expires-at", "2001-01-01T00:00:00Z"); bad.code != 1 || !strings.Contains(bad.stderr, "(invalid_expiry)") {
		t.Errorf("past --expires-at: want exit 1 (invalid_expiry)\n%s", bad)
	}

	time.Sleep(time.Until(exp) + 500*time.Millisecond)
	var got secret
	d.mustAPI(t, "GET", "/v1/secrets/"+s.ID, nil, http.StatusOK, &got)
	if got.Status != "expired" {
		t.Errorf("after expires_at: status %q, want expired", got.Status)
	}
	var l list[secret]
	d.mustAPI(t, "GET", "/v1/projects/default/secrets", nil, http.StatusOK, &l)
	for _, it := range l.Items {
		if it.ID == s.ID && it.Status != "expired" {
			t.Errorf("list shows status %q for the expired secret", it.Status)
		}
	}
	r = d.mustCLI(t, "", "secret", "get", s.ID)
	if st := tableFields(t, r.stdout)["STATUS"]; st != "expired" {
		t.Errorf("CLI STATUS = %q, want expired", st)
	}
	// a rotation with a new expiry brings it back
	var rot secret
	d.mustAPI(t, "POST", "/v1/secrets/"+s.ID+"/rotate", map[string]any{
		"payload": b64([]byte("fresh")), "expires_at": far.Format(time.RFC3339),
	}, http.StatusOK, &rot)
	if rot.Status != "active" || rot.Version != 2 || rot.ExpiresAt == nil || !rot.ExpiresAt.Equal(far) {
		t.Errorf("rotate with new expiry = %+v, want active, version 2, expires %v", rot, far)
	}
}

// TestConcurrentRotate: of many rotations racing with the same CAS exactly
// one wins; without CAS none is lost.
func TestConcurrentRotate(t *testing.T) {
	d := startDaemon(t, workDir(t))
	s := d.createSecret(t, "default", "contended", []byte("v1"), map[string]string{"k": "v"})
	const n = 10

	codes := make([]int, n)
	bodies := make([][]byte, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(map[string]any{"payload": b64([]byte("v2")), "cas": 1})
			resp, err := httpClient(d.socket).Post("http://coffer/v1/secrets/"+s.ID+"/rotate", "application/json", bytes.NewReader(body))
			if err != nil {
				return
			}
			defer resp.Body.Close()
			codes[i] = resp.StatusCode
			bodies[i], _ = io.ReadAll(resp.Body)
		}()
	}
	wg.Wait()
	wins := 0
	for i, c := range codes {
		switch c {
		case http.StatusOK:
			wins++
		case http.StatusConflict:
			var e errorBody
			_ = json.Unmarshal(bodies[i], &e)
			if e.Error != "version_conflict" {
				t.Errorf("loser got %s", bodies[i])
			}
		default:
			t.Errorf("rotation %d: status %d %s", i, c, bodies[i])
		}
	}
	if wins != 1 {
		t.Errorf("%d rotations with cas=1 succeeded, want exactly 1", wins)
	}
	var got secret
	d.mustAPI(t, "GET", "/v1/secrets/"+s.ID, nil, http.StatusOK, &got)
	if got.Version != 2 {
		t.Errorf("version after the CAS race = %d, want 2", got.Version)
	}

	// without CAS: every success is one version, nothing is lost or doubled
	ok := 0
	var mu sync.Mutex
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(map[string]any{"payload": b64([]byte("v"))})
			resp, err := httpClient(d.socket).Post("http://coffer/v1/secrets/"+s.ID+"/rotate", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Errorf("rotate: %v", err)
				return
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			switch resp.StatusCode {
			case http.StatusOK:
				mu.Lock()
				ok++
				mu.Unlock()
			case http.StatusConflict: // "being rotated concurrently; try again" is acceptable
			default:
				t.Errorf("rotate without cas: %d %s", resp.StatusCode, b)
			}
		}()
	}
	wg.Wait()
	d.mustAPI(t, "GET", "/v1/secrets/"+s.ID, nil, http.StatusOK, &got)
	if got.Version != 2+ok {
		t.Errorf("version = %d after %d successful rotations from 2", got.Version, ok)
	}
	if ok == 0 {
		t.Errorf("no rotation without cas succeeded")
	}
	// and the latest version still opens (rotation unseals it for key_values)
	d.rotateSecret(t, s.ID, []byte("final"), got.Version)
}

// TestConcurrentCreates: parallel creates all land, with distinct ids.
func TestConcurrentCreates(t *testing.T) {
	d := startDaemon(t, workDir(t))
	const n = 30
	ids := make([]string, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			body, _ := json.Marshal(map[string]any{"display_name": "parallel", "payload": b64([]byte("x"))})
			resp, err := httpClient(d.socket).Post("http://coffer/v1/projects/default/secrets", "application/json", bytes.NewReader(body))
			if err != nil {
				t.Errorf("create: %v", err)
				return
			}
			defer resp.Body.Close()
			var s secret
			if resp.StatusCode != http.StatusCreated || json.NewDecoder(resp.Body).Decode(&s) != nil {
				t.Errorf("create: status %d", resp.StatusCode)
				return
			}
			ids[i] = s.ID
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("id %q handed out twice", id)
		}
		seen[id] = true
	}
	var st status
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	if st.Counts.Secrets != n {
		t.Errorf("status counts %d secrets, want %d", st.Counts.Secrets, n)
	}
}

// TestShutdownDrainsInFlight: a request whose body is still arriving when
// SIGTERM comes is finished and persisted, and the daemon exits 0.
func TestShutdownDrainsInFlight(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir)
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://coffer/v1/projects/default/secrets", pr)
	type result struct {
		status int
		body   []byte
		err    error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := httpClient(d.socket).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		done <- result{status: resp.StatusCode, body: b}
	}()
	if _, err := pw.Write([]byte(`{"display_name":"in flight",`)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the handler is now reading the body
	if err := d.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := pw.Write([]byte(`"payload":"` + b64([]byte("drained")) + `"}`)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	res := <-done
	if res.err != nil || res.status != http.StatusCreated {
		t.Fatalf("in-flight create during shutdown: %v %d %s\nstderr:\n%s", res.err, res.status, res.body, d.stderr)
	}
	var s secret
	if err := json.Unmarshal(res.body, &s); err != nil {
		t.Fatal(err)
	}
	d.Stop(t) // already signalled: waits and asserts exit 0

	d2 := startDaemon(t, dir)
	checkAllPresent(t, d2, []secret{s})
}

// TestSignals: SIGINT shuts down as cleanly as SIGTERM.
func TestSIGINT(t *testing.T) {
	d := startDaemon(t, workDir(t))
	d.ended = true
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		t.Fatalf("no exit after SIGINT")
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Errorf("exit %d after SIGINT\n%s", code, d.stderr)
	}
	if _, err := os.Lstat(d.socket); err == nil {
		t.Errorf("socket left behind after SIGINT")
	}
}

// TestSocketPathNotASocket: the daemon refuses to replace a regular file at
// its socket path, and leaves it alone.
func TestSocketPathNotASocket(t *testing.T) {
	requireHSM(t)
	dir := workDir(t)
	sock := filepath.Join(dir, "file.sock")
	if err := os.WriteFile(sock, []byte("precious"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := launchDaemon(t, dir, "daemon", "--dev", "--socket", sock)
	if code := d.waitExit(t); code == 0 || !strings.Contains(d.stderr.String(), "not a socket") {
		t.Errorf("exit %d, want non-zero and 'not a socket'\n%s", code, d.stderr)
	}
	if b, err := os.ReadFile(sock); err != nil || string(b) != "precious" {
		t.Errorf("the file at the socket path was changed: %q %v", b, err)
	}
	noPanic(t, d.stderr.String())
}

// TestLargePayloadCLI: a payload file over the body limit is refused by the
// daemon with a precise error and exit 1; one that fits is accepted.
func TestLargePayloadCLI(t *testing.T) {
	d := startDaemon(t, workDir(t))
	big := filepath.Join(workDir(t), "big")
	if err := os.WriteFile(big, bytes.Repeat([]byte("z"), 7<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	r := d.cli(t, "", "secret", "create", "--display-name", "big", "--payload-file", big)
	if r.code != 1 || !strings.Contains(r.stderr, "(request_body_too_large)") {
		t.Errorf("7 KiB payload (about 9.5 KiB of base64): want exit 1 (request_body_too_large)\n%s", r)
	}
	fits := filepath.Join(workDir(t), "fits")
	if err := os.WriteFile(fits, bytes.Repeat([]byte("z"), 5<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustCLI(t, "", "secret", "create", "--display-name", "fits", "--payload-file", fits)
	// binary payloads (NUL bytes, invalid UTF-8) go through stdin intact
	d.mustCLI(t, "\x00\xff\xfe binary\n", "secret", "create", "--display-name", "binary", "--payload-file", "-")
}
