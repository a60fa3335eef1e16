package unixapi

import (
	"context"
	"errors"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

func setAuthErr(f *fakeBackend, err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.authErr = err
}

func TestCommandClientLikeNewClient(t *testing.T) {
	f := &fakeBackend{}
	_, path := serve(t, f)
	ctx := context.Background()
	for name, c := range map[string]*client.Client{"NewClient": client.NewClient(path), "NewCommandClient": client.NewCommandClient(path)} {
		t.Run(name, func(t *testing.T) {
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
			if !errors.As(err, &apiErr) || apiErr.Status != http.StatusForbidden {
				t.Fatalf("refused Status: %v, want a 403 APIError", err)
			}
		})
	}
	// A daemon that is not there is unreachable, as with NewClient.
	_, err := client.NewCommandClient(filepath.Join(t.TempDir(), "none.sock")).Status(ctx)
	var unreachable *client.UnreachableError
	if !errors.As(err, &unreachable) {
		t.Fatalf("no daemon: %v, want *client.UnreachableError", err)
	}
}
