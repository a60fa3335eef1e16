package daemon

import (
	"context"
	"testing"
)

// TestSecretReadsSeeEveryChange: reads of a secret are served from the
// secret cache, and each change that returned is visible to the next read.
func TestSecretReadsSeeEveryChange(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "Acme", Payload: []byte("v1")})
	read := func() (Secret, error) {
		t.Helper()
		g, err := e.svc.Authorize(ctx, rootPrincipal, ActReadSecret, Resource{Secret: sec.ID})
		if err != nil {
			return Secret{}, err
		}
		return e.svc.GetSecret(ctx, g)
	}
	for range 2 { // the second read is a cache hit
		got, err := read()
		wantCode(t, err, "")
		if got.Version != 1 || got.Status == StatusRevoked {
			t.Fatalf("first reads: %+v", got)
		}
	}
	if _, ok := e.svc.secrets.get(sec.ID, e.svc.secGen.Load()); !ok {
		t.Fatal("a read did not fill the secret cache")
	}

	manage := e.grant(t, ActManageSecret, Resource{Secret: sec.ID})
	tests := []struct {
		name   string
		change func() error
		check  func(*testing.T, Secret, error)
	}{
		{"rotate", func() error {
			_, err := e.svc.RotateSecret(ctx, manage, RotateInput{Payload: []byte("v2")})
			return err
		}, func(t *testing.T, s Secret, err error) {
			wantCode(t, err, "")
			if s.Version != 2 {
				t.Errorf("read after rotate: version %d, want 2", s.Version)
			}
		}},
		{"revoke", func() error {
			_, err := e.svc.RevokeSecret(ctx, manage)
			return err
		}, func(t *testing.T, s Secret, err error) {
			wantCode(t, err, "")
			if s.Status != StatusRevoked {
				t.Errorf("read after revoke: status %q", s.Status)
			}
		}},
		{"delete", func() error { return e.svc.DeleteSecret(ctx, manage) }, func(t *testing.T, _ Secret, err error) {
			wantCode(t, err, CodeNotFound)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := read(); tt.name != "delete" && err != nil { // fill the cache
				t.Fatal(err)
			}
			if err := tt.change(); err != nil {
				t.Fatalf("%s: %v", tt.name, err)
			}
			got, err := read()
			tt.check(t, got, err)
		})
	}
}
