package unixapi

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

func setAuthErr(f *fakeBackend, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authErr = err
}

// TestClientAgainstTheServer: package client against unixapi's server:
// answers, a refusal as *client.APIError, no daemon as
// *client.UnreachableError.
func TestClientAgainstTheServer(t *testing.T) {
	f := &fakeBackend{}
	_, path := serve(t, f)
	ctx := context.Background()
	c := client.NewClient(path)
	st, err := c.Status(ctx)
	if err != nil || st.Version != "test" {
		t.Fatalf("Status = %+v, %v", st, err)
	}
	s, err := c.CreateSecret(ctx, "default", client.SecretCreate{DisplayName: "db", Payload: []byte("pw")})
	if err != nil || s.Version != 1 {
		t.Fatalf("CreateSecret = %+v, %v", s, err)
	}
	setAuthErr(f, daemon.Forbidden("not allowed"))
	_, err = c.Status(ctx)
	setAuthErr(f, nil)
	var apiErr *client.APIError
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden || !errors.Is(err, api.ErrForbidden) {
		t.Fatalf("refused Status: %v, want a 403 APIError", err)
	}
	// A daemon that is not there is unreachable.
	_, err = client.NewClient(filepath.Join(t.TempDir(), "none.sock")).Status(ctx)
	var unreachable *client.UnreachableError
	if !errors.As(err, &unreachable) {
		t.Fatalf("no daemon: %v, want *client.UnreachableError", err)
	}
}
