package daemon

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// jwtKid reads the kid from a JWT's header.
func jwtKid(t *testing.T, tok string) string {
	t.Helper()
	raw, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h struct{ Kid string }
	if err := json.Unmarshal(raw, &h); err != nil {
		t.Fatal(err)
	}
	return h.Kid
}

func jwksKids(s *Service) []string {
	var out []string
	for _, k := range s.JWKS().Keys {
		out = append(out, k.Kid)
	}
	return out
}

func (e *testEnv) sessionExpiry(t *testing.T, id string) time.Time {
	t.Helper()
	var r sessionRecord
	if err := e.store.View(context.Background(), func(tx *kv.Txn) error { return tx.Get(tableSessions, id, &r) }); err != nil {
		t.Fatal(err)
	}
	return *r.ExpiresAt
}

// wantRetire is exp plus the grace, rounded up to a second.
func wantRetire(exp time.Time) time.Time {
	w := exp.Add(signingKeyGrace)
	if w.Truncate(time.Second).Equal(w) {
		return w
	}
	return w.Truncate(time.Second).Add(time.Second)
}

func TestRotateSigningKey(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	kid1 := KeyID(e.keys.SigningPublicKey())
	before, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	if jwtKid(t, before.Token) != kid1 {
		t.Fatal("the first JWT does not carry the first key's kid")
	}
	admin := e.grant(t, ActManageKeys, Resource{})

	rot, err := e.svc.RotateSigningKey(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	kid2 := KeyID(e.keys.SigningPublicKey())
	retire := wantRetire(e.sessionExpiry(t, before.SessionID))
	if rot.Current.Label != "fake-sig-2" || rot.Current.Kid != kid2 || !rot.Current.Current || !rot.Current.Published ||
		rot.Previous.Label != "fake-sig-1" || rot.Previous.Kid != kid1 || rot.Previous.Current || !rot.Previous.Published ||
		rot.Previous.RetireAfter == nil || !rot.Previous.RetireAfter.Equal(retire) {
		t.Fatalf("rotation %+v, want the old key retired after %v", rot, retire)
	}

	after, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	if jwtKid(t, after.Token) != kid2 {
		t.Fatal("a JWT after the rotation does not carry the new kid")
	}
	if got := jwksKids(e.svc); len(got) != 2 || got[0] != kid2 || got[1] != kid1 {
		t.Fatalf("JWKS kids %v, want [new old]", got)
	}
	// Both verify, by kid.
	for _, tok := range []string{before.Token, after.Token} {
		e.bearer(t, tok)
		if in, err := e.svc.Introspect(ctx, tok); err != nil || !in.Active {
			t.Fatalf("introspection %+v %v", in, err)
		}
	}
	keys, err := e.svc.HSMKeys(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.SigningKeys) != 2 || keys.SigningKeys[0].Label != "fake-sig-2" || keys.SigningKeys[0].Tokens != 1 ||
		keys.SigningKeys[1].Label != "fake-sig-1" || keys.SigningKeys[1].Tokens != 1 || !keys.SigningKeys[1].Published {
		t.Fatalf("signing keys %+v", keys.SigningKeys)
	}

	// A restart keeps the retirement time.
	e.reopen(t)
	if got := jwksKids(e.svc); len(got) != 2 || got[1] != kid1 {
		t.Fatalf("JWKS after restart %v", got)
	}
	e.bearer(t, before.Token)
	keys, _ = e.svc.HSMKeys(ctx, admin)
	if !keys.SigningKeys[1].RetireAfter.Equal(retire) {
		t.Fatalf("retire_after after restart %v, want %v", keys.SigningKeys[1].RetireAfter, retire)
	}

	// The sweep leaves a key that may still have valid tokens.
	if n, err := e.svc.sweepSigningKeys(ctx); err != nil || n != 0 {
		t.Fatalf("early sweep destroyed %d keys (%v)", n, err)
	}
	// Once every token it signed has expired, it leaves the JWKS and the
	// verification keys, and the sweep destroys it.
	e.svc.now = func() time.Time { return retire }
	if got := jwksKids(e.svc); len(got) != 1 || got[0] != kid2 {
		t.Fatalf("JWKS after retire_after %v, want only the new key", got)
	}
	if _, ok := e.svc.jwtKeys()[kid1]; ok {
		t.Fatal("the retired key still verifies JWTs")
	}
	if n, err := e.svc.sweepSigningKeys(ctx); err != nil || n != 1 {
		t.Fatalf("sweep destroyed %d keys (%v), want 1", n, err)
	}
	if _, ok := e.keys.sigs["fake-sig-1"]; ok {
		t.Fatal("fake-sig-1 is still on the token")
	}
	keys, _ = e.svc.HSMKeys(ctx, admin)
	if len(keys.SigningKeys) != 1 || keys.SigningKeys[0].Label != "fake-sig-2" {
		t.Fatalf("signing keys after the sweep %+v", keys.SigningKeys)
	}
	// Its public half stays, for old signatures (audit checkpoints), also
	// across a restart.
	historyKids := func() []string {
		var out []string
		for _, k := range e.svc.SigningKeyHistory().Keys {
			out = append(out, k.Kid)
		}
		return out
	}
	if got := historyKids(); len(got) != 2 || got[0] != kid2 || got[1] != kid1 {
		t.Fatalf("signing key history %v, want [new old]", got)
	}
	var rec signingKeyRecord
	if err := e.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableSigningKeys, kid1, &rec) }); err != nil || rec.DestroyedAt == nil || rec.Public.Kid != kid1 {
		t.Fatalf("record of the destroyed key %+v %v", rec, err)
	}
	e.reopen(t)
	if got := historyKids(); len(got) != 2 || got[0] != kid2 || got[1] != kid1 {
		t.Fatalf("signing key history after restart %v", got)
	}
	if got := jwksKids(e.svc); len(got) != 1 || got[0] != kid2 {
		t.Fatalf("JWKS after restart %v", got)
	}

	// Only system admins.
	_, err = e.svc.RotateSigningKey(ctx, e.grant(t, ActManageProjects, Resource{}))
	wantCode(t, err, CodeForbidden)
}

func TestRotateSigningKeyWithoutTokens(t *testing.T) {
	// No live JWT: the old key retires after the grace alone.
	e := newEnv(t)
	now := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	e.svc.now = func() time.Time { return now }
	rot, err := e.svc.RotateSigningKey(context.Background(), e.grant(t, ActManageKeys, Resource{}))
	if err != nil {
		t.Fatal(err)
	}
	if !rot.Previous.RetireAfter.Equal(now.Add(signingKeyGrace)) || !rot.Previous.RetiredAt.Equal(now) {
		t.Fatalf("previous %+v", rot.Previous)
	}
}

func TestSigningKeyTokenAheadOfStore(t *testing.T) {
	// A crash right after the HSM made the new signing key: the next start
	// retires the old one after the last JWT it may have signed.
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	at, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	kid1 := KeyID(e.keys.SigningPublicKey())
	if _, err := e.keys.RotateSigningKey(ctx); err != nil {
		t.Fatal(err)
	}
	e.reopen(t)
	if got := jwksKids(e.svc); len(got) != 2 || got[1] != kid1 {
		t.Fatalf("JWKS %v", got)
	}
	e.bearer(t, at.Token)
	keys, err := e.svc.HSMKeys(ctx, e.grant(t, ActManageKeys, Resource{}))
	if err != nil {
		t.Fatal(err)
	}
	want := wantRetire(e.sessionExpiry(t, at.SessionID))
	if old := keys.SigningKeys[1]; old.Label != "fake-sig-1" || !old.RetireAfter.Equal(want) {
		t.Fatalf("old key %+v, want retire_after %v", old, want)
	}
}
