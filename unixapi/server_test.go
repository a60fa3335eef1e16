package unixapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// fakeBackend answers for the domain in transport tests. Methods a test
// does not set up panic through the nil embedded interface.
type fakeBackend struct {
	Backend
	mu         sync.Mutex
	authErr    error
	principals []daemon.Principal
	createErr  error
	created    []daemon.SecretInput
	rotated    []daemon.RotateInput
}

func (f *fakeBackend) Authorize(_ context.Context, p daemon.Principal, _ daemon.Action, _ daemon.Resource) (daemon.Grant, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.principals = append(f.principals, p)
	return daemon.Grant{}, f.authErr
}

func (f *fakeBackend) CreateSecret(_ context.Context, _ daemon.Grant, in daemon.SecretInput) (daemon.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.createErr != nil {
		return daemon.Secret{}, f.createErr
	}
	in.Payload = bytes.Clone(in.Payload)
	f.created = append(f.created, in)
	return daemon.Secret{ID: "01a20000-0000-7000-8000-000000000001", Project: "default", DisplayName: in.DisplayName, Version: 1, Status: "active"}, nil
}

func (f *fakeBackend) RotateSecret(_ context.Context, _ daemon.Grant, in daemon.RotateInput) (daemon.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rotated = append(f.rotated, in)
	return daemon.Secret{Version: 2}, nil
}

func (f *fakeBackend) Status(context.Context, daemon.Grant) (daemon.Status, error) {
	return daemon.Status{Version: "test"}, nil
}

func (f *fakeBackend) lastPrincipal() daemon.Principal {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.principals[len(f.principals)-1]
}

// serve starts a Server for b on a real Unix socket and returns a client
// and the socket path.
func serve(t *testing.T, b Backend) (*client.Client, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "coffer.sock")
	l, err := ListenUnix(path, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, b, l)
	return client.NewClient(path), path
}

// raw sends a raw HTTP request over the socket.
func raw(t *testing.T, c *client.Client, method, path, body string) (int, api.ErrorBody, http.Header) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://coffer"+path, strings.NewReader(body))
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var eb api.ErrorBody
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &eb)
	return resp.StatusCode, eb, resp.Header
}

func TestPeerIdentityFromSocket(t *testing.T) {
	f := &fakeBackend{}
	c, _ := serve(t, f)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	p := f.lastPrincipal()
	if p.Channel != daemon.ChannelUnix || !p.HasCred || p.UID != uint32(os.Getuid()) || p.GID != uint32(os.Getgid()) || p.PID != int32(os.Getpid()) {
		t.Fatalf("principal = %+v, want uid %d gid %d pid %d", p, os.Getuid(), os.Getgid(), os.Getpid())
	}
}

func TestBodyIsNotReadBeforeAuthorization(t *testing.T) {
	f := &fakeBackend{authErr: daemon.Forbidden("not allowed to manage project")}
	c, _ := serve(t, f)
	for _, body := range []string{
		`{"display_name":"x","payload":"cA=="}`,
		`{not json`,
		strings.Repeat("x", api.BodyLimit+1),
	} {
		status, eb, _ := raw(t, c, "POST", "/v1/projects/nope/secrets", body)
		if status != http.StatusForbidden || eb.Error != "forbidden" {
			t.Fatalf("status %d %+v, want 403 forbidden", status, eb)
		}
	}
	if len(f.created) != 0 {
		t.Fatal("the backend acted on a forbidden request")
	}
}

func TestRequestErrors(t *testing.T) {
	f := &fakeBackend{}
	c, _ := serve(t, f)
	b64 := base64.StdEncoding.EncodeToString
	tests := []struct {
		name, method, path, body string
		status                   int
		code                     string
	}{
		{"ok", "POST", "/v1/projects/default/secrets", `{"display_name":"x","payload":"` + b64([]byte("p")) + `"}`, 201, ""},
		{"too large", "POST", "/v1/projects/default/secrets", `{"display_name":"` + strings.Repeat("x", api.BodyLimit) + `"}`, 413, "request_body_too_large"},
		{"exactly at the limit is read", "POST", "/v1/projects/default/secrets", `{"display_name":"x","payload":"` + strings.Repeat("A", api.BodyLimit-35) + `=="}`, 400, "invalid_payload"},
		{"malformed", "POST", "/v1/projects/default/secrets", `{"display_name":`, 400, "invalid_json"},
		{"syntax", "POST", "/v1/projects/default/secrets", `{"display_name" "x"}`, 400, "invalid_json"},
		{"unknown field", "POST", "/v1/projects/default/secrets", `{"display_name":"x","payload":"cA==","extra":1}`, 400, "invalid_json"},
		{"trailing data", "POST", "/v1/projects/default/secrets", `{"display_name":"x","payload":"cA=="} {}`, 400, "invalid_json"},
		{"wrong type", "POST", "/v1/projects/default/secrets", `{"display_name":5,"payload":"cA=="}`, 400, "invalid_json"},
		{"array", "POST", "/v1/projects/default/secrets", `[]`, 400, "invalid_json"},
		{"empty body", "POST", "/v1/projects/default/secrets", ``, 400, "invalid_json"},
		{"payload not base64", "POST", "/v1/projects/default/secrets", `{"display_name":"x","payload":"not base64!"}`, 400, "invalid_payload"},
		{"payload empty", "POST", "/v1/projects/default/secrets", `{"display_name":"x","payload":""}`, 400, "invalid_payload"},
		{"payload missing", "POST", "/v1/projects/default/secrets", `{"display_name":"x"}`, 400, "invalid_payload"},
		{"bad expiry", "POST", "/v1/projects/default/secrets", `{"display_name":"x","payload":"cA==","expires_at":"tomorrow"}`, 400, "invalid_expiry"},
		{"unknown path", "GET", "/v1/nope", ``, 404, "not_found"},
		{"wrong method", "PUT", "/v1/status", ``, 405, "method_not_allowed"},
		{"bad limit", "GET", "/v1/projects/default/secrets?limit=x", ``, 400, "invalid_argument"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, h := raw(t, c, tt.method, tt.path, tt.body)
			if status != tt.status || eb.Error != tt.code {
				t.Fatalf("got %d %+v, want %d %s", status, eb, tt.status, tt.code)
			}
			if tt.code != "" && (eb.Message == "" || h.Get("Content-Type") != "application/json") {
				t.Fatalf("error without message or JSON type: %+v %v", eb, h)
			}
			if h.Get("Cache-Control") != "no-store" {
				t.Fatal("responses must not be cached")
			}
		})
	}
}

func TestErrorMessagesDoNotEchoTheBody(t *testing.T) {
	c, _ := serve(t, &fakeBackend{})
	const secret = "SECRETVALUE123"
	for _, body := range []string{
		`{"display_name":"x","payload":"` + secret + `!"}`,
		`{"display_name":"x","payload":` + secret + `}`,
		`{"display_name":"x","payload":"cA==","key_values":{"k":` + secret + `}}`,
		`{"display_name":"x","payload":"cA==","key_values":["` + secret + `"]}`,
		`{"display_name":"x","payload":"cA==","expires_at":"` + secret + `"}`,
	} {
		_, eb, _ := raw(t, c, "POST", "/v1/projects/default/secrets", body)
		if strings.Contains(eb.Message, secret) {
			t.Fatalf("error message echoes the body: %q", eb.Message)
		}
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		err    error
		status int
		code   string
		class  error
	}{
		{daemon.Invalid(daemon.CodeInvalidName, "bad"), 400, "invalid_name", api.ErrInvalidArgument},
		{daemon.NotFound("gone"), 404, "not_found", api.ErrNotFound},
		{daemon.Forbidden("no"), 403, "forbidden", api.ErrForbidden},
		{daemon.Conflict(daemon.CodeVersionConflict, "v"), 409, "version_conflict", api.ErrConflict},
		{&daemon.Error{Class: daemon.ErrAlreadyExists, Code: daemon.CodeAlreadyExists, Message: "dup"}, 409, "already_exists", api.ErrAlreadyExists},
		{&daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeHSMUnavailable, Message: "the HSM is unavailable", Err: errors.New("CKR_DEVICE_ERROR")}, 503, "hsm_unavailable", api.ErrUnavailable},
		{&daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeStoreFull, Message: "the store's filesystem is full", Err: errors.New("statfs details")}, 507, "store_full", api.ErrUnavailable},
		{errors.New("boom with details"), 500, "internal", nil},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			f := &fakeBackend{createErr: tt.err}
			c, _ := serve(t, f)
			_, err := c.CreateSecret(context.Background(), "default", client.SecretCreate{DisplayName: "x", Payload: []byte("p")})
			var ae *client.APIError
			if !errors.As(err, &ae) || ae.Status != tt.status || ae.Code != tt.code {
				t.Fatalf("got %v, want %d %s", err, tt.status, tt.code)
			}
			if tt.class != nil && !errors.Is(err, tt.class) {
				t.Fatalf("client error %v is not %v", err, tt.class)
			}
			for _, other := range []error{api.ErrNotFound, api.ErrForbidden, api.ErrConflict, api.ErrAlreadyExists, api.ErrUnavailable} {
				if other != tt.class && errors.Is(err, other) {
					t.Fatalf("client error %v also matches %v", err, other)
				}
			}
			if strings.Contains(ae.Message, "details") || strings.Contains(ae.Message, "CKR_") {
				t.Fatalf("internal cause leaked to the caller: %q", ae.Message)
			}
		})
	}
}

func TestClientSendsWhatItIsGiven(t *testing.T) {
	f := &fakeBackend{}
	c, _ := serve(t, f)
	payload := []byte{0, 1, 2, 255}
	exp := time.Date(2031, 1, 2, 3, 4, 5, 0, time.UTC)
	if _, err := c.CreateSecret(context.Background(), "default", client.SecretCreate{DisplayName: "d", Payload: payload, KeyValues: map[string]string{"k": "v"}, ExpiresAt: &exp}); err != nil {
		t.Fatal(err)
	}
	in := f.created[0]
	if !bytes.Equal(in.Payload, payload) || in.KeyValues["k"] != "v" || !in.ExpiresAt.Equal(exp) || in.DisplayName != "d" {
		t.Fatalf("backend got %+v", in)
	}
	// Rotate: nil key_values keeps, an empty map clears.
	cas := 3
	c.RotateSecret(context.Background(), "01a20000-0000-7000-8000-000000000001", client.SecretRotate{Payload: payload, CAS: &cas})
	c.RotateSecret(context.Background(), "01a20000-0000-7000-8000-000000000001", client.SecretRotate{Payload: payload, KeyValues: map[string]string{}})
	if f.rotated[0].KeyValues != nil || *f.rotated[0].CAS != 3 || f.rotated[1].KeyValues == nil || len(f.rotated[1].KeyValues) != 0 {
		t.Fatalf("rotations = %+v", f.rotated)
	}
}

func TestListenUnix(t *testing.T) {
	t.Run("mode", func(t *testing.T) {
		_, path := serve(t, &fakeBackend{})
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o660 || fi.Mode().Type() != os.ModeSocket {
			t.Fatalf("mode = %v", fi.Mode())
		}
	})
	t.Run("live daemon", func(t *testing.T) {
		_, path := serve(t, &fakeBackend{})
		_, err := ListenUnix(path, SocketOptions{GID: -1})
		want := fmt.Sprintf("listen on %s: another coffer daemon is already serving there (pid %d)", path, os.Getpid())
		if err == nil || err.Error() != want {
			t.Fatalf("err = %v, want %q", err, want)
		}
	})
	t.Run("stale socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "s.sock")
		l, err := net.Listen("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		l.(*net.UnixListener).SetUnlinkOnClose(false)
		l.Close()
		l2, err := ListenUnix(path, SocketOptions{GID: -1})
		if err != nil {
			t.Fatalf("stale socket not replaced: %v", err)
		}
		l2.Close()
	})
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "file")
		os.WriteFile(path, []byte("keep me"), 0o600)
		if _, err := ListenUnix(path, SocketOptions{GID: -1}); err == nil {
			t.Fatal("replaced a regular file")
		}
		if b, _ := os.ReadFile(path); string(b) != "keep me" {
			t.Fatal("the file was touched")
		}
	})
}

func TestUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "none.sock")
	_, err := client.NewClient(path).Status(context.Background())
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || !strings.Contains(err.Error(), "cannot reach the daemon at "+path+": is it running?") {
		t.Fatalf("err = %v", err)
	}
}

func TestAnonymousOnForeignListener(t *testing.T) {
	// A connection that did not come through a peer listener carries no
	// credentials, whatever its transport.
	f := &fakeBackend{}
	srv := NewServer(f, nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	resp, err := http.Get(fmt.Sprintf("http://%s/v1/status", l.Addr()))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if p := f.lastPrincipal(); p.HasCred {
		t.Fatalf("principal = %+v", p)
	}
}

// serveOn serves b on l until the end of the test.
func serveOn(t *testing.T, b Backend, l net.Listener) {
	t.Helper()
	srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
}

func TestLogSamplerOneLinePerInterval(t *testing.T) {
	var l logSampler
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	steps := []struct {
		at   time.Duration
		n    int
		logs bool
	}{
		{0, 1, true},
		{time.Second, 0, false},
		{5 * time.Second, 0, false},
		{unavailableLogInterval, 3, true}, // two suppressed plus this one
		{unavailableLogInterval + time.Second, 0, false},
		{3 * unavailableLogInterval, 2, true},
	}
	for i, st := range steps {
		n, ok := l.tick(t0.Add(st.at))
		if ok != st.logs || n != st.n {
			t.Fatalf("step %d at %v: tick = %d, %v; want %d, %v", i, st.at, n, ok, st.n, st.logs)
		}
	}
}
