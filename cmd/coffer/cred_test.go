package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
)

func TestCredentialID(t *testing.T) {
	const id1, id2, id3 = "01a202f3-2c18-7786-bed2-3cb9bd08ba0c", "01a202f3-2c24-7286-808c-3d17ec5d4efd", "01a202f3-4b4b-790d-a6f1-b53075dc987a"
	pages := map[string]api.List[api.Credential]{
		"":  {Items: []api.Credential{{ID: id1, Name: "web"}, {ID: id2, Name: "dup"}}, Next: id2},
		id2: {Items: []api.Credential{{ID: id3, Name: "dup"}, {ID: "x", Name: "last"}}},
	}
	tests := []struct {
		ref       string
		want      string
		wantErr   string
		wantCalls int
	}{
		{ref: id1, want: id1, wantCalls: 0},
		{ref: "01A202F3-2C18-7786-BED2-3CB9BD08BA0C", want: "01A202F3-2C18-7786-BED2-3CB9BD08BA0C", wantCalls: 0},
		{ref: "web", want: id1, wantCalls: 2},
		{ref: "last", want: "x", wantCalls: 2},
		// 32 hex digits is a valid name, not an id.
		{ref: "01a202f32c187786bed23cb9bd08ba0c", wantErr: `no credential named "01a202f32c187786bed23cb9bd08ba0c" in project p (pass its ID, or the project with --project)`, wantCalls: 2},
		{ref: "nope", wantErr: `no credential named "nope" in project p (pass its ID, or the project with --project)`, wantCalls: 2},
		{ref: "dup", wantErr: `2 credentials are named "dup" in project p: pass one of their IDs (` + id2 + ", " + id3 + ")", wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			calls := 0
			got, err := credentialID(tt.ref, "p", func(q client.PageQuery) (api.List[api.Credential], error) {
				calls++
				return pages[q.After], nil
			})
			if calls != tt.wantCalls {
				t.Errorf("listed %d pages, want %d", calls, tt.wantCalls)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCredentialIDListError(t *testing.T) {
	denied := &client.APIError{Status: 403, Code: "forbidden", Message: "not allowed to read project"}
	_, err := credentialID("web", "p", func(client.PageQuery) (api.List[api.Credential], error) {
		return api.List[api.Credential]{}, denied
	})
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr != denied {
		t.Fatalf("err = %v, want the API error wrapped", err)
	}
	if want := `look up credential "web" by name in project p: not allowed to read project`; err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
}

// fakeDaemon answers the CLI on a Unix socket with canned JSON and records
// each request as "METHOD PATH?QUERY BODY".
type fakeDaemon struct {
	sock string
	mu   sync.Mutex
	reqs []string
}

func newFakeDaemon(t *testing.T, answer func(r *http.Request) (int, any)) *fakeDaemon {
	t.Helper()
	dir, err := os.MkdirTemp("", "cof-cli-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeDaemon{sock: filepath.Join(dir, "d.sock")}
	l, err := net.Listen("unix", f.sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		line := r.Method + " " + r.URL.RequestURI()
		if len(body) > 0 {
			line += " " + strings.TrimSpace(string(body))
		}
		f.mu.Lock()
		f.reqs = append(f.reqs, line)
		f.mu.Unlock()
		status, v := answer(r)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(v)
	}))
	srv.Listener = l
	srv.Start()
	t.Cleanup(srv.Close)
	return f
}

func (f *fakeDaemon) requests() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.reqs)
}

// runCLIAt runs the CLI against sock and returns its exit code and output.
func runCLIAt(t *testing.T, sock string, args ...string) (int, string, string) {
	t.Helper()
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, k := range []string{"COFFER_SOCKET", "COFFER_TOKEN", "COFFER_TOKEN_FILE", "COFFER_PROFILE"} {
		t.Setenv(k, "")
	}
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"coffer", "--socket", sock}, args...), strings.NewReader(""), &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// TestCredCreateWorkflows: cred create as users of other systems type it
// (issue 14): the type defaults to auth-token, the name may be the
// argument, and --rotate NAME rotates.
func TestCredCreateWorkflows(t *testing.T) {
	const id = "01a202f3-2c18-7786-bed2-3cb9bd08ba0c"
	f := newFakeDaemon(t, func(r *http.Request) (int, any) {
		switch {
		case r.Method == "GET":
			return 200, api.List[api.Credential]{Items: []api.Credential{{ID: id, Name: "my-auth-token", User: "my-user"}}}
		case strings.HasSuffix(r.URL.Path, "/rotate"):
			return 200, api.Credential{ID: id, Name: "my-auth-token", Type: "auth-token", Token: "cfa_x"}
		}
		return 201, api.Credential{ID: id, Name: "my-auth-token", Type: "auth-token", Token: "cfa_x"}
	})
	tests := []struct {
		args string
		want []string
	}{
		{"cred create --user my-user", []string{`POST /v1/projects/default/credentials {"type":"auth-token","user":"my-user","access_rules":null}`}},
		{"cred create --user my-user my-auth-token", []string{`POST /v1/projects/default/credentials {"type":"auth-token","user":"my-user","name":"my-auth-token","access_rules":null}`}},
		{"cred create my-auth-token --name my-auth-token --type oauth2 -p team", []string{`POST /v1/projects/team/credentials {"type":"oauth2","name":"my-auth-token","access_rules":null}`}},
		{"cred create --rotate my-auth-token", []string{"GET /v1/projects/default/credentials", "POST /v1/credentials/" + id + "/rotate {}"}},
		{"cred create my-auth-token --rotate --user my-user -p team", []string{"GET /v1/projects/team/credentials?user=my-user", "POST /v1/credentials/" + id + "/rotate {}"}},
		{"cred create --rotate " + id, []string{"POST /v1/credentials/" + id + "/rotate {}"}},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			before := len(f.requests())
			code, stdout, stderr := runCLIAt(t, f.sock, strings.Fields(tt.args)...)
			if code != exitOK {
				t.Fatalf("exit %d; stderr: %s", code, stderr)
			}
			if got := f.requests()[before:]; !slices.Equal(got, tt.want) {
				t.Errorf("requests:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(tt.want, "\n"))
			}
			if !strings.Contains(stdout, "cfa_x") {
				t.Errorf("stdout does not show the token:\n%s", stdout)
			}
		})
	}
}
