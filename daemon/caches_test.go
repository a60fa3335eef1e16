package daemon

import (
	"context"
	"testing"

	"github.com/coffer-hsm/coffer/kv"
)

// The caches are ended by what commits write, not by writers remembering
// to: every write that can end or narrow a token ends the bearer cache,
// and the ones that cannot (a login's new session and token, its usage
// count) leave it warm.
func TestCachesFollowCommits(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	gen := func() uint64 { return e.svc.idGen.Load() }

	_, auth := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob"})
	before := gen()
	if _, _, err := e.svc.Login(ctx, auth.Token); err != nil {
		t.Fatal(err)
	}
	if gen() != before {
		t.Errorf("a login ended the bearer cache (generation %d -> %d)", before, gen())
	}
	before = gen()
	e.createSecret(t, "p1", SecretInput{DisplayName: "x", Payload: []byte("x")})
	if gen() != before {
		t.Errorf("creating a secret ended the bearer cache")
	}

	secGen := e.svc.secGen.Load()
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "y", Payload: []byte("y")})
	if e.svc.secGen.Load() != secGen {
		t.Errorf("creating a secret ended the secret cache")
	}
	if _, err := e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte("z")}); err != nil {
		t.Fatal(err)
	}
	if e.svc.secGen.Load() == secGen {
		t.Errorf("rotating a secret left the secret cache")
	}

	disabled := true
	for _, w := range []struct {
		name  string
		write func(t *testing.T)
	}{
		{"user disabled", func(t *testing.T) {
			if _, err := e.svc.PatchUser(ctx, e.grant(t, ActManageUser, Resource{User: "carol"}), UserPatch{Disabled: &disabled}); err != nil {
				t.Fatal(err)
			}
		}},
		{"role changed", func(t *testing.T) {
			if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "bob", "reader"); err != nil {
				t.Fatal(err)
			}
		}},
		{"credential revoked", func(t *testing.T) {
			c, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
			if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: c.ID})); err != nil {
				t.Fatal(err)
			}
		}},
		{"credential rotated", func(t *testing.T) {
			c, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
			if _, _, err := e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: c.ID}), CredentialRotate{}); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(w.name, func(t *testing.T) {
			before := gen()
			w.write(t)
			if gen() == before {
				t.Errorf("%s left the bearer cache", w.name)
			}
		})
	}
}

// committed decides from the tables alone.
func TestCommittedDecidesByTable(t *testing.T) {
	e := newIdentityEnv(t)
	for _, tt := range []struct {
		c          kv.Commit
		id, secret bool
	}{
		{kv.Commit{Created: []string{tableSessions, tableTokens}}, false, false},
		{kv.Commit{Changed: []string{tableCredentialUse}}, false, false},
		{kv.Commit{Changed: []string{tableSessions}}, true, false},
		{kv.Commit{Changed: []string{tableSecrets}}, false, true},
		{kv.Commit{Created: []string{tableSecrets}}, false, false},
		{kv.Commit{Changed: []string{tableBindings, tableSealed}}, false, false},
	} {
		id, sec := e.svc.idGen.Load(), e.svc.secGen.Load()
		e.svc.committed(tt.c)
		if got := e.svc.idGen.Load() != id; got != tt.id {
			t.Errorf("%+v: identity ended %v, want %v", tt.c, got, tt.id)
		}
		if got := e.svc.secGen.Load() != sec; got != tt.secret {
			t.Errorf("%+v: secrets ended %v, want %v", tt.c, got, tt.secret)
		}
	}
}
