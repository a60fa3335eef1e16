package daemon

import (
	"context"
	"testing"
	"time"
)

// TestRotationRestartsTheCount: rotating a used-up one-time credential
// issues a token that works once (the count starts again), the old token
// stays dead even with a grace, and an expired credential is not rotated.
func TestRotationRestartsTheCount(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", OneTime: true})
	_, _, err := e.svc.Login(ctx, iss.Token)
	wantCode(t, err, "")
	g := e.grant(t, ActManageCredential, Resource{Credential: cred.ID})
	read := func() Credential {
		t.Helper()
		c, err := e.svc.GetCredential(ctx, e.grant(t, ActReadCredential, Resource{Credential: cred.ID}))
		wantCode(t, err, "")
		return c
	}
	if c := read(); c.Status != StatusExhausted || c.AuthnCount != 1 {
		t.Fatalf("after one login: %s, %d", c.Status, c.AuthnCount)
	}

	for _, grace := range []time.Duration{0, 10 * time.Minute} {
		rot, iss2, err := e.svc.RotateCredential(ctx, g, CredentialRotate{Grace: grace})
		wantCode(t, err, "")
		if rot.Status != StatusActive || rot.AuthnCount != 0 || rot.MaxAuthn != 1 || rot.LastUsedAt == nil {
			t.Fatalf("grace %s: rotated %s, %d of %d, last used %v; want active, 0 of 1, last use kept", grace, rot.Status, rot.AuthnCount, rot.MaxAuthn, rot.LastUsedAt)
		}
		_, _, err = e.svc.Login(ctx, iss.Token)
		wantCode(t, err, CodeUnauthenticated) // the old token does not come back
		_, _, err = e.svc.Login(ctx, iss2.Token)
		wantCode(t, err, "")
		_, _, err = e.svc.Login(ctx, iss2.Token)
		wantCode(t, err, CodeUnauthenticated) // once only
		if c := read(); c.Status != StatusExhausted || c.AuthnCount != 1 {
			t.Fatalf("grace %s: after the new token's login: %s, %d", grace, c.Status, c.AuthnCount)
		}
		iss = iss2
	}

	// A grace for a credential still in use: the old token's
	// authentications count against the new budget.
	five, fiveIss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", MaxAuthn: 5})
	for range 2 {
		_, _, err := e.svc.Login(ctx, fiveIss.Token)
		wantCode(t, err, "")
	}
	rot, newIss, err := e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: five.ID}), CredentialRotate{Grace: time.Minute})
	wantCode(t, err, "")
	if rot.AuthnCount != 0 {
		t.Fatalf("rotated with 2 of 5 used: count %d", rot.AuthnCount)
	}
	ok := 0
	for _, tok := range []string{fiveIss.Token, newIss.Token, fiveIss.Token, newIss.Token, newIss.Token, newIss.Token} {
		if _, _, err := e.svc.Login(ctx, tok); err == nil {
			ok++
		}
	}
	if ok != 5 {
		t.Fatalf("%d logins after the rotation, want 5 (old and new tokens together)", ok)
	}

	// An expired credential: refused, with a reason.
	exp, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", ExpireIn: "1h"})
	e.svc.now = func() time.Time { return time.Now().UTC().Add(2 * time.Hour) }
	defer func() { e.svc.now = func() time.Time { return time.Now().UTC() } }()
	_, _, err = e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: exp.ID}), CredentialRotate{})
	wantCode(t, err, CodeConflict)
}
