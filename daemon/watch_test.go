package daemon

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestWatchDelivery(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "db", Payload: []byte("pw-1")})
	b, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "bob", Name: "dbpass"})
	if err != nil {
		t.Fatal(err)
	}
	bob := uidPrincipal(1002)
	req := DeliveryRequest{Name: "dbpass"}
	rotate := func(p string) {
		t.Helper()
		if _, err := e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte(p)}); err != nil {
			t.Fatal(err)
		}
	}

	// Already newer: at once.
	d, err := e.svc.WatchDelivery(ctx, bob, req, 0, time.Minute)
	if err != nil || string(d.Payload) != "pw-1" || d.Version != 1 {
		t.Fatalf("after 0: %q v%d %v", d.Payload, d.Version, err)
	}
	// Not newer: the wait ends with not modified.
	t0 := time.Now()
	_, err = e.svc.WatchDelivery(ctx, bob, req, 1, 50*time.Millisecond)
	if !errors.Is(err, ErrNotModified) || time.Since(t0) < 50*time.Millisecond {
		t.Fatalf("timeout: %v after %v", err, time.Since(t0))
	}
	// Wait 0: a conditional delivery.
	if _, err := e.svc.WatchDelivery(ctx, bob, req, 1, 0); !errors.Is(err, ErrNotModified) {
		t.Fatalf("wait 0: %v", err)
	}

	// A rotation while waiting wakes the watch with the new version.
	type result struct {
		d   Delivery
		err error
		at  time.Duration
	}
	watch := func(after int) <-chan result {
		ch := make(chan result, 1)
		go func() {
			t0 := time.Now()
			d, err := e.svc.WatchDelivery(ctx, bob, req, after, 10*time.Second)
			ch <- result{d, err, time.Since(t0)}
		}()
		return ch
	}
	ch := watch(1)
	time.Sleep(50 * time.Millisecond)
	// Commits that do not concern it wake it, and it waits again.
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "p2"); err != nil {
		t.Fatal(err)
	}
	other := e.createSecret(t, "p1", SecretInput{DisplayName: "other", Payload: []byte("o")})
	if _, err := e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: other.ID}), RotateInput{Payload: []byte("o2")}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		t.Fatalf("woke for another secret: %+v", r)
	case <-time.After(50 * time.Millisecond):
	}
	rotate("pw-2")
	select {
	case r := <-ch:
		if r.err != nil || string(r.d.Payload) != "pw-2" || r.d.Version != 2 {
			t.Fatalf("woken: %q v%d %v", r.d.Payload, r.d.Version, r.err)
		}
		t.Logf("woken %v after the watch began", r.at)
	case <-time.After(5 * time.Second):
		t.Fatal("the rotation did not wake the watch")
	}
	if _, ok := findEvent(e.events(), "deliver", "ok", map[string]string{"binding": b.ID, "version": "2"}); !ok {
		t.Error("the watched delivery is not audited")
	}

	// The binding removed while waiting: not found, never the new value.
	ch = watch(2)
	time.Sleep(50 * time.Millisecond)
	if err := e.svc.DeleteBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), b.ID); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		wantCode(t, r.err, CodeNotFound)
		if r.d.Payload != nil {
			t.Fatal("payload after unbind")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("removing the binding did not end the watch")
	}

	// Nobody waits on a name it cannot receive: not found at once.
	t0 = time.Now()
	for _, p := range []Principal{uidPrincipal(1003), anonPrincipal, bob} {
		_, err = e.svc.WatchDelivery(ctx, p, req, 0, time.Minute)
		wantCode(t, err, CodeNotFound)
	}
	if time.Since(t0) > time.Second {
		t.Fatalf("unbound callers waited %v", time.Since(t0))
	}

	// Bad parameters.
	for _, c := range []struct {
		wait  time.Duration
		after int
		code  string
	}{{-time.Second, 0, CodeInvalidWait}, {MaxDeliveryWait + time.Second, 0, CodeInvalidWait}, {time.Second, -1, CodeInvalidAfterVersion}} {
		_, err := e.svc.WatchDelivery(ctx, bob, req, c.after, c.wait)
		wantCode(t, err, c.code)
	}

	// The caller's context ends the wait.
	if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "bob", Name: "dbpass"}); err != nil {
		t.Fatal(err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if _, err := e.svc.WatchDelivery(cctx, bob, req, 9, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled: %v", err)
	}
}

// A watch holds its bearer's authentication for up to MaxDeliveryWait: a
// token revoked (or a credential rotated, or expired) while it waits must
// end it with not_found at the next wake-up, never with the new value.
func TestWatchEndsWithItsToken(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "db", Payload: []byte("pw-1")})
	if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "bob", Name: "dbpass"}); err != nil {
		t.Fatal(err)
	}
	cred, tok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	p := e.bearer(t, tok.Token)
	req := DeliveryRequest{Name: "dbpass"}
	type result struct {
		d   Delivery
		err error
	}
	ch := make(chan result, 1)
	go func() {
		d, err := e.svc.WatchDelivery(ctx, p, req, 1, 10*time.Second)
		ch <- result{d, err}
	}()
	time.Sleep(50 * time.Millisecond)
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: cred.ID})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte("pw-2")}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-ch:
		if r.d.Payload != nil {
			t.Fatalf("a revoked token's watch delivered %q v%d", r.d.Payload, r.d.Version)
		}
		wantCode(t, r.err, CodeNotFound)
	case <-time.After(5 * time.Second):
		t.Fatal("the watch did not end")
	}
	// And a plain delivery with the revoked token's principal, the same.
	if d, err := e.svc.Deliver(ctx, p, req); err == nil || d.Payload != nil {
		t.Fatalf("a revoked token's principal delivered %q", d.Payload)
	}
}
