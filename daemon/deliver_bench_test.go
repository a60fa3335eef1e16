package daemon

import (
	"context"
	"testing"
)

// BenchmarkDeliver measures Service.Deliver by an access token of a bound
// user, with the fake keys: the daemon's cost around the one HSM unwrap
// (store reads, decoding, checks, logging).
func BenchmarkDeliver(b *testing.B) {
	e := newIdentityEnv(b)
	ctx := context.Background()
	sec := e.createSecret(b, "p1", SecretInput{DisplayName: "db", Payload: make([]byte, 256)})
	if _, err := e.svc.CreateBinding(ctx, e.grant(b, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "bob", Name: "dbpass"}); err != nil {
		b.Fatal(err)
	}
	_, tok := e.credential(b, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	p := e.bearer(b, tok.Token)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			d, err := e.svc.Deliver(ctx, p, DeliveryRequest{Name: "dbpass"})
			if err != nil || len(d.Payload) != 256 {
				b.Fatalf("deliver: %d bytes, %v", len(d.Payload), err)
			}
			clear(d.Payload)
		}
	})
}
