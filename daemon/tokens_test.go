package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// TestGraceIsBounded rotates one credential again and again with a
// grace: only the current token and the one before it work, the token
// table holds those two and no more, and a rotation during a grace ends
// the older grace at once.
func TestGraceIsBounded(t *testing.T) {
	e := newIdentityEnv(t)
	e.svc.authGate = newAuthGate(AuthLimit{Burst: -1}, time.Now, e.svc.log) // 19 refusals in a row
	ctx := context.Background()
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "alice"})
	g := e.grant(t, ActManageCredential, Resource{Credential: cred.ID})
	tokens := []string{iss.Token}
	for range 20 {
		_, next, err := e.svc.RotateCredential(ctx, g, CredentialRotate{Grace: time.Hour})
		wantCode(t, err, "")
		tokens = append(tokens, next.Token)
	}
	for i, tok := range tokens {
		_, _, err := e.svc.Login(ctx, tok)
		want := CodeUnauthenticated
		if i >= len(tokens)-2 {
			want = "" // the current token and the one before it, in its grace
		}
		wantCode(t, err, want)
	}
	var n int
	err := e.svc.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		n, err = tx.Count(tableTokens, kv.Query{Index: indexOwner, Value: cred.ID})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Errorf("%d tokens stored for the credential after 20 rotations with grace, want 2", n)
	}
}
