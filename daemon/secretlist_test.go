package daemon

import (
	"context"
	"testing"
	"time"
)

func TestListSecretsExpiringWithin(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	now := time.Now().UTC()
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	soon := e.createSecret(t, "p1", SecretInput{DisplayName: "soon", Payload: []byte("a"), ExpiresAt: at(2 * time.Hour)})
	e.createSecret(t, "p1", SecretInput{DisplayName: "later", Payload: []byte("b"), ExpiresAt: at(30 * 24 * time.Hour)})
	e.createSecret(t, "p1", SecretInput{DisplayName: "never", Payload: []byte("c")})
	revoked := e.createSecret(t, "p1", SecretInput{DisplayName: "revoked", Payload: []byte("d"), ExpiresAt: at(time.Hour)})
	if _, err := e.svc.RevokeSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: revoked.ID})); err != nil {
		t.Fatal(err)
	}
	g := e.grant(t, ActReadProject, Resource{Project: "p1"})
	for _, c := range []struct {
		within time.Duration
		want   int
	}{{0, 5}, {24 * time.Hour, 1}, {60 * 24 * time.Hour, 2}, {time.Minute, 0}} {
		got, _, err := e.svc.ListSecrets(ctx, g, SecretFilter{ExpiringWithin: c.within}, Page{})
		if err != nil || len(got) != c.want {
			t.Fatalf("within %v: %d secrets %v, want %d", c.within, len(got), err, c.want)
		}
		if c.want == 1 && got[0].ID != soon.ID {
			t.Fatalf("within %v: %s", c.within, got[0].DisplayName)
		}
	}
}
