package daemon

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
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

// storedUse reads a credential's usage record as stored.
func (e *identityEnv) storedUse(t *testing.T, id string) credentialUse {
	t.Helper()
	var u credentialUse
	err := e.store.View(context.Background(), func(tx *kv.Txn) error { return tx.Get(tableCredentialUse, id, &u) })
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		t.Fatal(err)
	}
	return u
}

// TestLastUseOfBearers: every kind of bearer records its credential's last
// use in memory, reads show it at once, a flush writes it to the store in
// one change by the daemon, and none of it ends a cached token.
func TestLastUseOfBearers(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	t0 := time.Now().UTC().Truncate(time.Second).Add(time.Hour)
	clock := t0
	e.svc.now = func() time.Time { return clock }

	access, accessIss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	auth, authIss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob"})
	client, clientIss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	_, session, err := e.svc.Login(ctx, authIss.Token)
	wantCode(t, err, "")
	jwt, err := e.svc.ClientCredentials(ctx, client.ClientID, clientIss.ClientSecret, "")
	wantCode(t, err, "")
	read := func(id string) Credential {
		t.Helper()
		c, err := e.svc.GetCredential(ctx, e.grant(t, ActReadCredential, Resource{Credential: id}))
		wantCode(t, err, "")
		return c
	}

	clock = t0.Add(time.Minute)
	e.bearer(t, accessIss.Token)
	e.bearer(t, session)
	if d, err := e.svc.AuthorizeCall(ctx, Call{Token: jwt.Token, Service: "svc", Method: "GET", Path: "/x"}); err != nil || !d.Allowed {
		t.Fatalf("authorize with the JWT: %+v %v", d, err)
	}
	gen := e.svc.idGen.Load()
	for name, id := range map[string]string{"access token": access.ID, "login session": auth.ID, "oauth2 jwt": client.ID} {
		if c := read(id); c.LastUsedAt == nil || !c.LastUsedAt.Equal(clock) {
			t.Errorf("%s: last used %v, want %s (from memory)", name, c.LastUsedAt, clock)
		}
	}
	if u := e.storedUse(t, access.ID); u.LastUsedAt != nil {
		t.Fatalf("a bearer's use was written at once: %v", u.LastUsedAt)
	}

	// Within a second: not recorded again; after it: recorded.
	clock = t0.Add(time.Minute + 500*time.Millisecond)
	e.bearer(t, accessIss.Token)
	if c := read(access.ID); !c.LastUsedAt.Equal(t0.Add(time.Minute)) {
		t.Errorf("half a second later: last used %v", c.LastUsedAt)
	}
	clock = t0.Add(2 * time.Minute)
	e.bearer(t, accessIss.Token)
	if c := read(access.ID); !c.LastUsedAt.Equal(clock) {
		t.Errorf("a minute later: last used %v, want %s", c.LastUsedAt, clock)
	}

	before := len(e.changes(t))
	wantCode(t, e.svc.flushLastUse(ctx), "")
	changes := e.changes(t)[before:]
	if len(changes) != 1 || changes[0].Action != "credential.last_used" || changes[0].Principal.Channel != string(ChannelDaemon) || changes[0].Target["credentials"] != "3" {
		t.Fatalf("flush recorded %+v, want one credential.last_used change of 3 credentials by the daemon", changes)
	}
	if u := e.storedUse(t, access.ID); u.LastUsedAt == nil || !u.LastUsedAt.Equal(clock) {
		t.Errorf("stored last use %v, want %s", u.LastUsedAt, clock)
	}
	if u := e.storedUse(t, auth.ID); u.AuthnCount != 1 {
		t.Errorf("the flush lost the login's count: %d", u.AuthnCount)
	}
	if g := e.svc.idGen.Load(); g != gen {
		t.Fatalf("writing last uses ended the cached tokens (generation %d -> %d)", gen, g)
	}
	// Nothing new: no change.
	wantCode(t, e.svc.flushLastUse(ctx), "")
	if n := len(e.changes(t)) - before; n != 1 {
		t.Fatalf("a flush with nothing new recorded %d more changes", n-1)
	}

	// A deleted credential's clock is dropped, by a flush or by the sweep.
	clock = t0.Add(3 * time.Minute)
	e.bearer(t, accessIss.Token)
	wantCode(t, e.svc.DeleteCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: access.ID})), "")
	wantCode(t, e.svc.flushLastUse(ctx), "")
	if e.svc.lastUse.get(access.ID) != nil {
		t.Error("a flush kept the clock of a deleted credential")
	}
	wantCode(t, e.svc.DeleteCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: auth.ID})), "")
	wantCode(t, e.svc.forgetGoneClocks(ctx), "")
	if e.svc.lastUse.get(auth.ID) != nil || e.svc.lastUse.get(client.ID) == nil {
		t.Error("the sweep dropped the wrong clocks")
	}
}

// TestMaintenanceWritesLastUseWhenItEnds: the daemon's housekeeping
// writes the last uses kept in memory when it stops, before the audit log
// closes.
func TestMaintenanceWritesLastUseWhenItEnds(t *testing.T) {
	e := newIdentityEnv(t)
	access, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		e.svc.RunMaintenance(ctx)
		close(done)
	}()
	e.bearer(t, iss.Token)
	cancel()
	<-done
	if u := e.storedUse(t, access.ID); u.LastUsedAt == nil {
		t.Fatal("the last use was not written when the housekeeping ended")
	}
}
