package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
)

// exactBody returns a secret-create body of exactly n bytes (the object
// padded with trailing spaces, which JSON allows).
func exactBody(t *testing.T, n int) string {
	t.Helper()
	b, _ := json.Marshal(map[string]string{"display_name": "padded", "payload": b64([]byte("p"))})
	if len(b) > n {
		t.Fatalf("body base %d bytes > %d", len(b), n)
	}
	return string(b) + strings.Repeat(" ", n-len(b))
}

// bigCreateBody returns a valid-looking secret-create body over the limit.
func bigCreateBody() string {
	b, _ := json.Marshal(map[string]string{"display_name": "big", "payload": b64(bytes.Repeat([]byte("A"), 9<<10))})
	return string(b)
}

// TestHTTPErrors sends every kind of bad request and checks the exact
// status and error code, and that none of them changed anything.
func TestHTTPErrors(t *testing.T) {
	d := startDaemon(t, workDir(t))
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "errs"}, http.StatusCreated, nil)
	live := d.createSecret(t, "errs", "live", []byte("live payload"), map[string]string{"k": "v"})
	revoked := d.createSecret(t, "errs", "revoked", []byte("revoked payload"), nil)
	d.mustAPI(t, "POST", "/v1/secrets/"+revoked.ID+"/revoke", nil, http.StatusOK, nil)
	const missingID = "01a20000-0000-7000-8000-000000000000"
	create := "/v1/projects/errs/secrets"
	ok := func(extra string) string {
		return `{"display_name":"x","payload":"eA=="` + extra + `}`
	}

	cases := []struct {
		name         string
		method, path string
		body         string
		status       int
		code         string
	}{
		// body limit
		{"create body over 8KiB", "POST", create, bigCreateBody(), 413, "request_body_too_large"},
		{"create body 8KiB+1", "POST", create, exactBody(t, 8<<10+1), 413, "request_body_too_large"},
		{"rotate body over 8KiB", "POST", "/v1/secrets/" + live.ID + "/rotate", bigCreateBody(), 413, "request_body_too_large"},
		{"project body over 8KiB", "POST", "/v1/projects", `{"name":"` + strings.Repeat("a", 9<<10) + `"}`, 413, "request_body_too_large"},

		// malformed JSON
		{"create malformed", "POST", create, `{"display_name":`, 400, "invalid_json"},
		{"create not an object", "POST", create, `[]`, 400, "invalid_json"},
		{"create empty body", "POST", create, ``, 400, "invalid_json"},
		{"create unknown field", "POST", create, ok(`,"owner":"me"`), 400, "invalid_json"},
		{"create trailing data", "POST", create, ok(``) + `{}`, 400, "invalid_json"},
		{"create trailing garbage", "POST", create, ok(``) + `x`, 400, "invalid_json"},
		{"create wrong type", "POST", create, `{"display_name":"x","payload":5}`, 400, "invalid_json"},
		{"create key_values not flat", "POST", create, ok(`,"key_values":{"a":{"b":"c"}}`), 400, "invalid_json"},
		{"rotate unknown field", "POST", "/v1/secrets/" + live.ID + "/rotate", `{"payload":"eA==","version":2}`, 400, "invalid_json"},
		{"rotate malformed", "POST", "/v1/secrets/" + live.ID + "/rotate", `{`, 400, "invalid_json"},
		{"project unknown field", "POST", "/v1/projects", `{"name":"okname","x":1}`, 400, "invalid_json"},
		{"project malformed", "POST", "/v1/projects", `name=okname`, 400, "invalid_json"},

		// names
		{"project name with space", "POST", "/v1/projects", `{"name":"Bad Name"}`, 400, "invalid_name"},
		{"project name upper case", "POST", "/v1/projects", `{"name":"Prod"}`, 400, "invalid_name"},
		{"project name empty", "POST", "/v1/projects", `{"name":""}`, 400, "invalid_name"},
		{"project name leading dash", "POST", "/v1/projects", `{"name":"-x"}`, 400, "invalid_name"},
		{"project name trailing dot", "POST", "/v1/projects", `{"name":"x."}`, 400, "invalid_name"},
		{"project name 65 chars", "POST", "/v1/projects", `{"name":"` + strings.Repeat("a", 65) + `"}`, 400, "invalid_name"},
		{"project name slash", "POST", "/v1/projects", `{"name":"a/b"}`, 400, "invalid_name"},

		// display name
		{"display name empty", "POST", create, `{"display_name":"","payload":"eA=="}`, 400, "invalid_display_name"},
		{"display name missing", "POST", create, `{"payload":"eA=="}`, 400, "invalid_display_name"},
		{"display name spaces", "POST", create, `{"display_name":"   ","payload":"eA=="}`, 400, "invalid_display_name"},
		{"display name whitespace", "POST", create, `{"display_name":"\t\n ","payload":"eA=="}`, 400, "invalid_display_name"},

		// payload
		{"payload not base64", "POST", create, `{"display_name":"x","payload":"not base64!"}`, 400, "invalid_payload"},
		{"payload unpadded", "POST", create, `{"display_name":"x","payload":"eA"}`, 400, "invalid_payload"},
		{"payload url-safe alphabet", "POST", create, `{"display_name":"x","payload":"_-8="}`, 400, "invalid_payload"},
		{"payload empty", "POST", create, `{"display_name":"x","payload":""}`, 400, "invalid_payload"},
		{"payload missing", "POST", create, `{"display_name":"x"}`, 400, "invalid_payload"},
		{"rotate payload empty", "POST", "/v1/secrets/" + live.ID + "/rotate", `{"payload":""}`, 400, "invalid_payload"},
		{"rotate payload not base64", "POST", "/v1/secrets/" + live.ID + "/rotate", `{"payload":"%%%"}`, 400, "invalid_payload"},

		// key_values
		{"key with space", "POST", create, ok(`,"key_values":{"bad key":"v"}`), 400, "invalid_key_values"},
		{"key empty", "POST", create, ok(`,"key_values":{"":"v"}`), 400, "invalid_key_values"},
		{"rotate key with space", "POST", "/v1/secrets/" + live.ID + "/rotate", `{"payload":"eA==","key_values":{"a b":"c"}}`, 400, "invalid_key_values"},

		// expiry
		{"expiry in the past", "POST", create, ok(`,"expires_at":"2001-01-01T00:00:00Z"`), 400, "invalid_expiry"},
		{"expiry date only", "POST", create, ok(`,"expires_at":"2030-01-02"`), 400, "invalid_expiry"},
		{"expiry words", "POST", create, ok(`,"expires_at":"tomorrow"`), 400, "invalid_expiry"},
		{"rotate expiry in the past", "POST", "/v1/secrets/" + live.ID + "/rotate", `{"payload":"eA==","expires_at":"2001-01-01T00:00:00Z"}`, 400, "invalid_expiry"},

		// a project that does not exist: 403 before the body is read
		{"create in missing project", "POST", "/v1/projects/nope/secrets", ok(``), 403, "forbidden"},
		{"create in missing project, oversize body", "POST", "/v1/projects/nope/secrets", bigCreateBody(), 403, "forbidden"},
		{"create in missing project, malformed body", "POST", "/v1/projects/nope/secrets", `{{{`, 403, "forbidden"},
		{"create in missing project, empty body", "POST", "/v1/projects/nope/secrets", ``, 403, "forbidden"},
		{"list in missing project", "GET", "/v1/projects/nope/secrets", ``, 403, "forbidden"},
		{"get missing project", "GET", "/v1/projects/nope", ``, 403, "forbidden"},

		// conflicts
		{"duplicate project", "POST", "/v1/projects", `{"name":"errs"}`, 409, "already_exists"},
		{"duplicate default project", "POST", "/v1/projects", `{"name":"default"}`, 409, "already_exists"},
		{"rotate wrong cas", "POST", "/v1/secrets/" + live.ID + "/rotate", `{"payload":"eA==","cas":7}`, 409, "version_conflict"},
		{"rotate revoked", "POST", "/v1/secrets/" + revoked.ID + "/rotate", `{"payload":"eA=="}`, 409, "secret_revoked"},
		{"rotate revoked with cas", "POST", "/v1/secrets/" + revoked.ID + "/rotate", `{"payload":"eA==","cas":1}`, 409, "secret_revoked"},

		// not found
		{"get missing secret", "GET", "/v1/secrets/" + missingID, ``, 404, "not_found"},
		{"get non-uuid secret", "GET", "/v1/secrets/abc", ``, 404, "not_found"},
		{"rotate missing secret", "POST", "/v1/secrets/" + missingID + "/rotate", `{"payload":"eA=="}`, 404, "not_found"},
		{"revoke missing secret", "POST", "/v1/secrets/" + missingID + "/revoke", ``, 404, "not_found"},
		{"delete missing secret", "DELETE", "/v1/secrets/" + missingID, ``, 404, "not_found"},
		{"delete missing project", "DELETE", "/v1/projects/nope", ``, 404, "not_found"},
		{"unknown path", "GET", "/v1/nothing", ``, 404, "not_found"},
		{"unknown version", "GET", "/v2/status", ``, 404, "not_found"},
		{"root", "GET", "/", ``, 404, "not_found"},

		// wrong method
		{"PUT status", "PUT", "/v1/status", ``, 405, "method_not_allowed"},
		{"DELETE projects collection", "DELETE", "/v1/projects", ``, 405, "method_not_allowed"},
		{"PATCH secret", "PATCH", "/v1/secrets/" + live.ID, `{}`, 405, "method_not_allowed"},
		{"GET rotate", "GET", "/v1/secrets/" + live.ID + "/rotate", ``, 405, "method_not_allowed"},
		{"PUT project secrets", "PUT", create, ok(``), 405, "method_not_allowed"},

		// pagination parameters
		{"limit zero", "GET", "/v1/projects/errs/secrets?limit=0", ``, 400, "invalid_argument"},
		{"limit negative", "GET", "/v1/projects/errs/secrets?limit=-1", ``, 400, "invalid_argument"},
		{"limit not a number", "GET", "/v1/projects/errs/secrets?limit=ten", ``, 400, "invalid_argument"},
		{"limit too large", "GET", "/v1/projects/errs/secrets?limit=1000000", ``, 400, "invalid_argument"},
		{"projects limit zero", "GET", "/v1/projects?limit=0", ``, 400, "invalid_argument"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var body any
			if tc.body != "" {
				body = tc.body
			}
			res := d.api(t, tc.method, tc.path, body)
			wantError(t, res, tc.status, tc.code)
			if tc.status == 405 && res.header.Get("Allow") == "" {
				t.Errorf("405 without an Allow header")
			}
			if tc.status >= 500 {
				t.Errorf("server error for bad input")
			}
		})
	}

	t.Run("oversize body without Content-Length", func(t *testing.T) {
		// A reader of unknown length makes the client send it chunked.
		r := io.MultiReader(strings.NewReader(bigCreateBody()))
		req, _ := http.NewRequest("POST", "http://coffer"+create, r)
		resp, err := httpClient(d.socket).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		wantError(t, apiResp{status: resp.StatusCode, header: resp.Header, body: b}, 413, "request_body_too_large")
	})

	t.Run("body of exactly 8KiB is accepted", func(t *testing.T) {
		d.mustAPI(t, "POST", create, exactBody(t, 8<<10), http.StatusCreated, nil)
	})

	t.Run("bad input lost nothing", func(t *testing.T) {
		var got secret
		d.mustAPI(t, "GET", "/v1/secrets/"+live.ID, nil, http.StatusOK, &got)
		sameJSON(t, "live secret after the bad requests", got, live)
		var l list[secret]
		d.mustAPI(t, "GET", "/v1/projects/errs/secrets", nil, http.StatusOK, &l)
		if len(l.Items) != 3 { // live, revoked and the exact-8KiB one
			t.Errorf("project errs has %d secrets, want 3: %+v", len(l.Items), l.Items)
		}
		var ps list[project]
		d.mustAPI(t, "GET", "/v1/projects", nil, http.StatusOK, &ps)
		if len(ps.Items) != 2 {
			t.Errorf("projects = %+v, want default and errs only", ps.Items)
		}
		// rotating still works with the CAS the failed requests did not move
		if s := d.rotateSecret(t, live.ID, []byte("new"), 1); s.Version != 2 {
			t.Errorf("rotate after bad requests: version %d, want 2", s.Version)
		}
	})

	t.Run("revoke is idempotent", func(t *testing.T) {
		var a, b secret
		d.mustAPI(t, "POST", "/v1/secrets/"+revoked.ID+"/revoke", nil, http.StatusOK, &a)
		d.mustAPI(t, "POST", "/v1/secrets/"+revoked.ID+"/revoke", nil, http.StatusOK, &b)
		if a.Status != "revoked" || a.RevokedAt == nil {
			t.Errorf("revoke again: %+v", a)
		}
		sameJSON(t, "second revoke", b, a)
	})
}

// TestCLIExitCodes checks exit codes 1 (daemon error), 2 (usage) and 3
// (unreachable), and that the error is one line on stderr.
func TestCLIExitCodes(t *testing.T) {
	d := startDaemon(t, workDir(t))
	s := d.createSecret(t, "default", "exit codes", []byte("x"), nil)

	cases := []struct {
		name   string
		socket string // "" means the live daemon
		stdin  string
		args   []string
		code   int
		stderr string // must be contained in stderr
	}{
		{"daemon error not_found", "", "", []string{"secret", "get", "01a20000-0000-7000-8000-000000000000"}, 1, "(not_found)"},
		{"daemon error invalid_name", "", "", []string{"project", "create", "Bad Name"}, 1, "(invalid_name)"},
		{"daemon error forbidden", "", "x", []string{"secret", "create", "--project", "nope", "--display-name", "n", "--payload-file", "-"}, 1, "(forbidden)"},
		{"daemon error invalid_payload", "", "", []string{"secret", "create", "--display-name", "n", "--payload-file", "-"}, 1, "(invalid_payload)"},
		{"daemon error invalid_display_name", "", "x", []string{"secret", "create", "--display-name", " ", "--payload-file", "-"}, 1, "(invalid_display_name)"},
		{"daemon error version_conflict", "", "x", []string{"secret", "rotate", s.ID, "--payload-file", "-", "--cas", "9"}, 1, "(version_conflict)"},
		{"daemon error invalid_key_values", "", "x", []string{"secret", "create", "--display-name", "n", "--payload-file", "-", "--key-value", "bad key=v"}, 1, "(invalid_key_values)"},
		{"daemon error delete default", "", "", []string{"project", "delete", "default"}, 1, "(conflict)"},
		{"missing payload file", "", "", []string{"secret", "create", "--display-name", "n", "--payload-file", "/nonexistent/payload"}, 1, "/nonexistent/payload"},

		{"unknown command", "", "", []string{"frobnicate"}, 2, "frobnicate"},
		{"unknown subcommand", "", "", []string{"secret", "frobnicate"}, 2, "frobnicate"},
		{"unknown flag", "", "", []string{"secret", "list", "--bogus"}, 2, "bogus"},
		{"unknown global flag", "", "", []string{"--bogus", "status"}, 2, "bogus"},
		{"missing --display-name", "", "x", []string{"secret", "create", "--payload-file", "-"}, 2, "--display-name"},
		{"missing --payload-file", "", "", []string{"secret", "create", "--display-name", "n"}, 2, "--payload-file"},
		{"missing ID get", "", "", []string{"secret", "get"}, 2, "ID"},
		{"missing ID rotate", "", "x", []string{"secret", "rotate", "--payload-file", "-"}, 2, "ID"},
		{"missing ID revoke", "", "", []string{"secret", "revoke"}, 2, "ID"},
		{"missing ID delete", "", "", []string{"secret", "delete"}, 2, "ID"},
		{"two IDs", "", "", []string{"secret", "get", s.ID, s.ID}, 2, "ID"},
		{"missing project name", "", "", []string{"project", "create"}, 2, "NAME"},
		{"bad -o", "", "", []string{"-o", "xml", "status"}, 2, "xml"},
		{"bad --key-value", "", "x", []string{"secret", "create", "--display-name", "n", "--payload-file", "-", "--key-value", "novalue"}, 2, "KEY=VALUE"},
		{"bad --expires-at", "", "x", []string{"secret", "create", "--display-name", "n", "--payload-file", "-", "--expires-at", "tomorrow"}, 2, "expires-at"},
		{"bad --cas", "", "x", []string{"secret", "rotate", s.ID, "--payload-file", "-", "--cas", "two"}, 2, "cas"},
		{"clear and set key values", "", "x", []string{"secret", "rotate", s.ID, "--payload-file", "-", "--clear-key-values", "--key-value", "a=b"}, 2, "--clear-key-values"},
		{"negative --limit", "", "", []string{"secret", "list", "--limit", "-1"}, 2, "--limit"},
		{"status with argument", "", "", []string{"status", "extra"}, 2, "status"},

		{"unreachable: no such socket", "/nonexistent/coffer.sock", "", []string{"status"}, 3, "coffer: cannot reach the daemon at /nonexistent/coffer.sock: is it running?"},
		{"unreachable: secret get", "/nonexistent/coffer.sock", "", []string{"secret", "get", s.ID}, 3, "cannot reach the daemon"},
		{"unreachable: secret create", "/nonexistent/coffer.sock", "x", []string{"secret", "create", "--display-name", "n", "--payload-file", "-"}, 3, "cannot reach the daemon"},
		{"unreachable: project list", "/nonexistent/coffer.sock", "", []string{"project", "list"}, 3, "cannot reach the daemon"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sock := d.socket
			if tc.socket != "" {
				sock = tc.socket
			}
			r := runCLI(t, sock, tc.stdin, tc.args...)
			if r.code != tc.code {
				t.Errorf("exit %d, want %d\n%s", r.code, tc.code, r)
			}
			if !strings.Contains(r.stderr, tc.stderr) {
				t.Errorf("stderr does not contain %q\n%s", tc.stderr, r)
			}
			if strings.Contains(r.stderr, "goroutine ") || strings.Contains(r.stderr, "panic") {
				t.Errorf("stderr has a panic\n%s", r)
			}
			if tc.code == 1 || tc.code == 3 {
				if lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n"); len(lines) != 1 || !strings.HasPrefix(lines[0], "coffer: ") {
					t.Errorf("stderr is not one 'coffer: ...' line\n%s", r)
				}
				if r.stdout != "" {
					t.Errorf("error printed to stdout\n%s", r)
				}
			}
		})
	}

	t.Run("unreachable via --socket flag overrides env", func(t *testing.T) {
		r := runCLI(t, d.socket, "", "--socket", "/nonexistent/other.sock", "status")
		if r.code != 3 || !strings.Contains(r.stderr, "/nonexistent/other.sock") {
			t.Errorf("want exit 3 naming the flag's socket\n%s", r)
		}
	})

	t.Run("unreachable: stale socket file", func(t *testing.T) {
		// A socket file nobody listens on, as a killed daemon leaves it.
		dir := workDir(t)
		stale := filepath.Join(dir, "stale.sock")
		makeStaleSocket(t, stale)
		r := runCLI(t, stale, "", "status")
		if r.code != 3 || !strings.Contains(r.stderr, "cannot reach the daemon at "+stale) {
			t.Errorf("want exit 3 for a stale socket\n%s", r)
		}
	})

	t.Run("the secret was not changed by the failures", func(t *testing.T) {
		var got secret
		d.mustAPI(t, "GET", "/v1/secrets/"+s.ID, nil, http.StatusOK, &got)
		sameJSON(t, "secret", got, s)
	})
}

// TestOversizeBodyConnectionClose: a client that sends "Connection: close"
// with an oversize body must still get the 413, not a broken pipe or a
// reset because the daemon closed the socket with the body unread.
func TestOversizeBodyConnectionClose(t *testing.T) {
	d := startDaemon(t, workDir(t))
	body := `{"name":"` + strings.Repeat("a", 9<<10) + `"}`
	failures := 0
	var last error
	for range 50 {
		req, _ := http.NewRequest("POST", "http://coffer/v1/projects", strings.NewReader(body))
		req.Close = true
		resp, err := httpClient(d.socket).Do(req)
		if err != nil {
			failures++
			last = err
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		wantError(t, apiResp{status: resp.StatusCode, header: resp.Header, body: b}, 413, "request_body_too_large")
	}
	if failures > 0 {
		t.Errorf("%d of 50 oversize requests with Connection: close got no response (last: %v)", failures, last)
	}
}
