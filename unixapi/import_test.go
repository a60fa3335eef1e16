package unixapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hostseal"
)

// importFake records the sealed files that reach the backend.
type importFake struct {
	fakeBackend
	files []hostseal.File
	err   error // ImportSecret fails with it
}

func (f *importFake) ImportSecret(_ context.Context, _ daemon.Grant, file *hostseal.File) (daemon.Secret, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.files = append(f.files, *file)
	if f.err != nil {
		return daemon.Secret{}, f.err
	}
	return daemon.Secret{ID: "01a20000-0000-7000-8000-000000000002", Project: file.Project, DisplayName: file.DisplayName, Version: 1, Status: "active"}, nil
}

// sealedBody is a syntactically valid sealed file whose ciphertext has n
// bytes, as JSON of about 4n/3 bytes.
func sealedBody(n int) string {
	b, _ := json.Marshal(hostseal.File{
		Format: hostseal.Format, ID: strings.Repeat("ab", 16), Project: "default", DisplayName: "x",
		KeyFingerprint: "SHA256:00", WrappedDEK: make([]byte, 384), Nonce: make([]byte, 12), Ciphertext: make([]byte, n),
	})
	return string(b)
}

func TestImportRequest(t *testing.T) {
	f := &importFake{}
	c, _ := serve(t, f)
	mid := sealedBody(9 << 10) // over BodyLimit, under api.ImportBodyLimit
	if len(mid) <= api.BodyLimit || len(mid) > api.ImportBodyLimit {
		t.Fatalf("test body is %d bytes", len(mid))
	}
	tests := []struct {
		name, body string
		status     int
		code       string
	}{
		{"over the create limit, under the import limit", mid, 201, ""},
		{"over the import limit", sealedBody(api.ImportBodyLimit), 413, daemon.CodeBodyTooLarge},
		{"not JSON", `{"format":`, 400, daemon.CodeInvalidJSON},
		{"unknown field", `{"format":"coffer-sealed/v1","payload":"c2VjcmV0"}`, 400, daemon.CodeInvalidJSON},
		{"bad base64", `{"ciphertext":"c2VjcmV0-not-base64!"}`, 400, daemon.CodeInvalidJSON},
		{"bad time", `{"created_at":"c2VjcmV0-yesterday"}`, 400, daemon.CodeInvalidJSON},
		{"empty", ``, 400, daemon.CodeInvalidJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, h := raw(t, c, "POST", "/v1/projects/default/secrets:import", tt.body)
			if status != tt.status || eb.Error != tt.code {
				t.Fatalf("status %d %+v, want %d %s", status, eb, tt.status, tt.code)
			}
			if strings.Contains(eb.Message, "c2VjcmV0") {
				t.Fatalf("the message quotes the body: %q", eb.Message)
			}
			if status == 201 && h.Get("Location") != "/v1/secrets/01a20000-0000-7000-8000-000000000002" {
				t.Fatalf("Location = %q", h.Get("Location"))
			}
		})
	}
	if len(f.files) != 1 || len(f.files[0].Ciphertext) != 9<<10 {
		t.Fatalf("%d files reached the backend, want the one in bounds", len(f.files))
	}
	// Other routes keep the 8 KiB limit.
	if status, eb, _ := raw(t, c, "POST", "/v1/projects/default/secrets", mid); status != http.StatusRequestEntityTooLarge {
		t.Fatalf("create with a %d-byte body: %d %+v, want 413", len(mid), status, eb)
	}
}

func TestImportBodyNotReadBeforeAuthorization(t *testing.T) {
	f := &importFake{fakeBackend: fakeBackend{authErr: daemon.Forbidden("not allowed to manage project")}}
	c, _ := serve(t, f)
	for _, body := range []string{sealedBody(10), `{not json`, sealedBody(api.ImportBodyLimit)} {
		status, eb, _ := raw(t, c, "POST", "/v1/projects/nope/secrets:import", body)
		if status != http.StatusForbidden || eb.Error != "forbidden" {
			t.Fatalf("status %d %+v, want 403 forbidden", status, eb)
		}
	}
	if len(f.files) != 0 {
		t.Fatal("the backend acted on a forbidden request")
	}
}
