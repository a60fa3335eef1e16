package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeClock is a clock tests move by hand.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)} }

func (c *fakeClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestLimiterBuckets(t *testing.T) {
	type step struct {
		advance  time.Duration
		fails    int
		wantWait time.Duration
	}
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"a fresh key may try", []step{{wantWait: 0}}},
		{"failures below the burst are free", []step{{fails: 2, wantWait: 0}}},
		{"the burst-th failure empties the bucket", []step{{fails: 3, wantWait: time.Second}}},
		{"waiting a refill admits one more", []step{{fails: 3, wantWait: time.Second}, {advance: time.Second, wantWait: 0}, {fails: 1, wantWait: time.Second}}},
		{"part of a refill is part of the wait", []step{{fails: 3, wantWait: time.Second}, {advance: 300 * time.Millisecond, wantWait: 700 * time.Millisecond}}},
		{"failures past empty all count", []step{{fails: 6, wantWait: 4 * time.Second}, {advance: 3 * time.Second, wantWait: time.Second}}},
		{"refill stops at the burst", []step{{fails: 1}, {advance: time.Hour}, {fails: 2, wantWait: 0}, {fails: 1, wantWait: time.Second}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock()
			l := newLimiter(3, time.Second, 16, clk.now)
			for i, s := range tc.steps {
				clk.add(s.advance)
				for range s.fails {
					l.fail("k")
				}
				if got := l.wait("k"); got != s.wantWait {
					t.Fatalf("step %d: wait %s, want %s", i, got, s.wantWait)
				}
			}
		})
	}
}

func TestLimiterWaitDoesNotConsume(t *testing.T) {
	clk := newFakeClock()
	l := newLimiter(2, time.Second, 16, clk.now)
	for range 100 {
		if w := l.wait("k"); w != 0 {
			t.Fatalf("wait %s after only successes", w)
		}
	}
	if l.len() != 0 {
		t.Fatalf("%d keys remembered without a failure", l.len())
	}
}

func TestLimiterKeysAreIndependent(t *testing.T) {
	clk := newFakeClock()
	l := newLimiter(2, time.Second, 16, clk.now)
	l.fail("a")
	l.fail("a")
	if l.wait("a") == 0 {
		t.Fatal("a is not limited after its burst")
	}
	if w := l.wait("b"); w != 0 {
		t.Fatalf("b waits %s for a's failures", w)
	}
}

func TestLimiterReportsEmptyingOnce(t *testing.T) {
	clk := newFakeClock()
	l := newLimiter(3, time.Second, 16, clk.now)
	var emptied []int
	for i := range 6 {
		if l.fail("k") {
			emptied = append(emptied, i)
		}
	}
	if fmt.Sprint(emptied) != "[2]" {
		t.Fatalf("emptied at failures %v, want [2] (the third)", emptied)
	}
}

func TestLimiterMemoryIsBounded(t *testing.T) {
	clk := newFakeClock()
	l := newLimiter(3, time.Second, 8, clk.now)
	// One caller drains its bucket; many others fail once each.
	for range 3 {
		l.fail("attacker")
	}
	for i := range 1000 {
		l.fail(fmt.Sprintf("k%d", i))
		if n := l.len(); n > 8 {
			t.Fatalf("%d keys remembered, cap 8", n)
		}
	}
	// The drained bucket has the most failure to remember: evicting
	// fuller ones first keeps it.
	if l.wait("attacker") == 0 {
		t.Fatal("the drained bucket was evicted before fuller ones")
	}
	// Buckets that have refilled go first.
	clk.add(time.Minute)
	l.fail("new")
	if n := l.len(); n != 1 {
		t.Fatalf("%d keys after every old bucket refilled, want 1", n)
	}
}

func TestCallerKey(t *testing.T) {
	for _, tc := range []struct {
		p    Principal
		want string
	}{
		{Principal{Channel: ChannelUnix, HasCred: true, UID: 1000, PID: 1}, "unix uid=1000"},
		{Principal{Channel: ChannelUnix, HasCred: true, UID: 1000, PID: 2}, "unix uid=1000"},
		{Principal{Channel: ChannelVsock, CID: 42}, "vsock cid=42"},
		{Principal{Channel: ChannelHybridVsock, VM: "fc1"}, "hybrid-vsock vm=fc1"},
		{Principal{Channel: ChannelUnix}, "anonymous (unix)"},
		// A bearer's session does not change who is connected.
		{Principal{Channel: ChannelUnix, HasCred: true, UID: 7, Token: &TokenIdentity{UserID: "u"}}, "unix uid=7"},
	} {
		if got := callerKey(tc.p); got != tc.want {
			t.Errorf("callerKey(%+v) = %q, want %q", tc.p, got, tc.want)
		}
	}
}

// limitedEnv is an identity env whose auth limit runs on a fake clock:
// burst 3, one refill a second.
func limitedEnv(t *testing.T) (*identityEnv, *fakeClock) {
	t.Helper()
	e := newIdentityEnv(t)
	clk := newFakeClock()
	e.svc.authGate = newAuthGate(AuthLimit{Burst: 3, Refill: time.Second}, clk.now, e.svc.log)
	return e, clk
}

// wantRateLimited fails unless err is 429 rate_limited asking to wait
// between 1 and max seconds.
func wantRateLimited(t *testing.T, err error, max int64) {
	t.Helper()
	wantCode(t, err, CodeRateLimited)
	if !errors.Is(err, ErrRateLimited) {
		t.Fatalf("%v is not ErrRateLimited", err)
	}
	r, ok := RetryAfterOf(err)
	if !ok || r.RetrySeconds() < 1 || r.RetrySeconds() > max {
		t.Fatalf("retry after %v (%v), want 1..%d seconds", r, ok, max)
	}
	if !strings.Contains(MessageOf(err), "retry in") {
		t.Fatalf("message %q does not say when to retry", MessageOf(err))
	}
}

func TestLoginFailuresAreRateLimited(t *testing.T) {
	e, clk := limitedEnv(t)
	goodCred, good := e.credential(t, "p1", CredentialInput{User: "bob", Type: CredAuthToken})
	_, other := e.credential(t, "p1", CredentialInput{User: "bob", Type: CredAuthToken})
	alice, bob := WithPrincipal(context.Background(), uidPrincipal(1001)), WithPrincipal(context.Background(), uidPrincipal(1002))
	bad := []string{"cfa_nonsense", corrupt(good.Token), strings.Replace(other.Token, "cfa_", "cfs_", 1)}
	for _, tok := range bad {
		_, _, err := e.svc.Login(alice, tok)
		wantCode(t, err, CodeUnauthenticated)
	}
	// Now even the right token is refused, before it is looked at: its
	// authentication is not counted.
	_, _, err := e.svc.Login(alice, good.Token)
	wantRateLimited(t, err, 1)
	c, err := e.svc.GetCredential(context.Background(), e.grant(t, ActReadCredential, Resource{Credential: goodCred.ID}))
	if err != nil {
		t.Fatal(err)
	}
	if c.AuthnCount != 0 {
		t.Fatalf("a refused login counted an authentication: %d", c.AuthnCount)
	}
	// Another caller is not affected.
	if _, _, err := e.svc.Login(bob, good.Token); err != nil {
		t.Fatalf("bob's login: %v", err)
	}
	// After the wait, alice may try again; successes cost nothing.
	clk.add(time.Second)
	for range 5 {
		if _, _, err := e.svc.Login(alice, other.Token); err != nil {
			t.Fatalf("alice's login after the wait: %v", err)
		}
	}
	if !strings.Contains(e.logs.String(), "too many failed authentications") || !strings.Contains(e.logs.String(), "unix uid=1001") {
		t.Fatalf("no log line names the limited caller:\n%s", e.logs)
	}
}

func TestBearerFailuresAreRateLimited(t *testing.T) {
	e, clk := limitedEnv(t)
	_, iss := e.credential(t, "p1", CredentialInput{User: "bob", Type: CredAccessToken})
	ctx := context.Background()
	for range 3 {
		_, err := e.svc.Authenticate(ctx, vsockGuest, corrupt(iss.Token))
		wantCode(t, err, CodeUnauthenticated)
	}
	_, err := e.svc.Authenticate(ctx, vsockGuest, iss.Token)
	wantRateLimited(t, err, 1)
	// Same token, other channel: a different caller.
	if _, err := e.svc.Authenticate(ctx, uidPrincipal(1002), iss.Token); err != nil {
		t.Fatalf("uid 1002: %v", err)
	}
	clk.add(time.Second)
	if _, err := e.svc.Authenticate(ctx, vsockGuest, iss.Token); err != nil {
		t.Fatalf("after the wait: %v", err)
	}
}

func TestClientCredentialFailuresAreRateLimited(t *testing.T) {
	e, clk := limitedEnv(t)
	_, iss := e.credential(t, "p1", CredentialInput{User: "bob", Type: CredOAuth2})
	ctx := func(uid uint32) context.Context { return WithPrincipal(context.Background(), uidPrincipal(uid)) }
	wrong := corrupt(iss.ClientSecret)

	// One caller: its own bucket (3) empties long before the client's (15).
	for range 3 {
		_, err := e.svc.ClientCredentials(ctx(1001), iss.ClientID, wrong, "")
		wantCode(t, err, CodeInvalidClient)
	}
	_, err := e.svc.ClientCredentials(ctx(1001), iss.ClientID, iss.ClientSecret, "")
	wantRateLimited(t, err, 1)
	if _, err := e.svc.ClientCredentials(ctx(1002), iss.ClientID, iss.ClientSecret, ""); err != nil {
		t.Fatalf("the client itself, from another uid: %v", err)
	}

	// Many callers guessing the same client together empty the client's
	// bucket: then every caller waits for that client, and only for it.
	clk.add(time.Minute)
	for uid := uint32(2000); uid < 2005; uid++ {
		for range 3 {
			_, err := e.svc.ClientCredentials(ctx(uid), iss.ClientID, wrong, "")
			wantCode(t, err, CodeInvalidClient)
		}
	}
	_, err = e.svc.ClientCredentials(ctx(1002), iss.ClientID, iss.ClientSecret, "")
	wantRateLimited(t, err, 1)
	_, _, err = e.svc.Login(ctx(1002), "cfa_nonsense")
	wantCode(t, err, CodeUnauthenticated)

	// Client ids that cannot exist are not remembered.
	clk.add(time.Minute)
	for i := range 3 {
		e.svc.ClientCredentials(ctx(uint32(3000+i)), strings.Repeat("x", 4000), wrong, "")
	}
	if n := e.svc.authGate.clients.len(); n != 1 {
		t.Fatalf("%d client ids remembered, want 1 (the real one, from before)", n)
	}
}

func TestScopeErrorsAndOutagesAreNotFailures(t *testing.T) {
	e, _ := limitedEnv(t)
	_, iss := e.credential(t, "p1", CredentialInput{User: "bob", Type: CredOAuth2})
	ctx := WithPrincipal(context.Background(), uidPrincipal(1001))
	for range 5 {
		_, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "admin")
		wantCode(t, err, CodeInvalidScope)
	}
	e.keys.setFail(errFakeHSM) // the JWT cannot be signed
	for range 5 {
		_, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
		wantCode(t, err, CodeHSMUnavailable)
	}
	e.keys.setFail(nil)
	if _, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, ""); err != nil {
		t.Fatalf("after scope errors: %v", err)
	}
}

func TestAuthLimitOff(t *testing.T) {
	e := newIdentityEnv(t)
	e.svc.authGate = newAuthGate(AuthLimit{Burst: -1}, time.Now, e.svc.log)
	for range 3 * DefaultAuthFailBurst {
		_, _, err := e.svc.Login(context.Background(), "cfa_nonsense")
		wantCode(t, err, CodeUnauthenticated)
	}
}

// TestSystemAdminsAreNotLimited: root can issue itself any credential, so
// its failures are not counted (and root's services cannot lock each other
// out).
func TestSystemAdminsAreNotLimited(t *testing.T) {
	e, _ := limitedEnv(t)
	_, good := e.credential(t, "p1", CredentialInput{User: "bob", Type: CredAuthToken})
	_, oc := e.credential(t, "p1", CredentialInput{User: "bob", Type: CredOAuth2})
	root := WithPrincipal(context.Background(), rootPrincipal)
	for range 10 {
		_, _, err := e.svc.Login(root, corrupt(good.Token))
		wantCode(t, err, CodeUnauthenticated)
		_, err = e.svc.Authenticate(root, rootPrincipal, corrupt(good.Token))
		wantCode(t, err, CodeUnauthenticated)
		_, err = e.svc.ClientCredentials(root, oc.ClientID, corrupt(oc.ClientSecret), "")
		wantCode(t, err, CodeInvalidClient)
	}
	if _, _, err := e.svc.Login(root, good.Token); err != nil {
		t.Fatalf("root's login after failures: %v", err)
	}
	if n, m := e.svc.authGate.callers.len(), e.svc.authGate.clients.len(); n != 0 || m != 0 {
		t.Fatalf("root's failures were remembered: %d callers, %d clients", n, m)
	}
}
