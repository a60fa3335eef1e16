package daemon

import (
	"context"
	"testing"
)

// With the bearer cache off every request reads its token from the store:
// nothing is kept, and a closed store shows at once.
func TestBearerCacheOff(t *testing.T) {
	e := newIdentityEnv(t)
	e.svc.bearers.max = -1 // Config.BearerCacheSize < 0
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", AccessRules: []AccessRule{{Service: "svc", Method: "GET", Path: "/x"}}})
	for range 3 {
		if d, err := e.svc.AuthorizeCall(ctx, Call{Token: iss.Token, Service: "svc", Method: "GET", Path: "/x"}); err != nil || !d.Allowed {
			t.Fatalf("authorize: %+v %v", d, err)
		}
	}
	e.svc.bearers.mu.RLock()
	n := len(e.svc.bearers.m)
	e.svc.bearers.mu.RUnlock()
	if n != 0 {
		t.Fatalf("%d entries kept with the cache off", n)
	}
	e.store.Close()
	if _, err := e.svc.AuthorizeCall(ctx, Call{Token: iss.Token, Service: "svc", Method: "GET", Path: "/x"}); err == nil {
		t.Fatal("a token was answered without the store with the cache off")
	}
}
