package daemon

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestBindingsAndDelivery(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "db", Payload: []byte("dbpw"), KeyValues: map[string]string{"k": "v"}})
	g := e.grant(t, ActManageBindings, Resource{Secret: sec.ID})
	tests := []struct {
		name string
		in   BindingInput
		want string
	}{
		{"unit", BindingInput{Unit: "nginx.service", Credential: "tls-key"}, ""},
		{"template unit", BindingInput{Unit: "worker@3.service", Credential: "dbpass"}, ""},
		{"user", BindingInput{User: "bob", Name: "dbpass"}, ""},
		{"vm user", BindingInput{User: "vm", Name: "dbpass"}, ""},
		{"same unit and credential again", BindingInput{Unit: "nginx.service", Credential: "tls-key"}, CodeAlreadyExists},
		{"same user and name again", BindingInput{User: "bob", Name: "dbpass"}, CodeAlreadyExists},
		{"unit without suffix", BindingInput{Unit: "nginx", Credential: "x"}, CodeInvalidBinding},
		{"unit with slash", BindingInput{Unit: "../x.service", Credential: "x"}, CodeInvalidBinding},
		{"credential with slash", BindingInput{Unit: "a.service", Credential: "a/b"}, CodeInvalidBinding},
		{"both kinds", BindingInput{Unit: "a.service", Credential: "x", User: "bob", Name: "y"}, CodeInvalidBinding},
		{"neither", BindingInput{}, CodeInvalidBinding},
		{"unknown user", BindingInput{User: "zed", Name: "x"}, CodeNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.CreateBinding(ctx, g, tt.in)
			wantCode(t, err, tt.want)
		})
	}
	bs, err := e.svc.ListBindings(ctx, e.grant(t, ActReadSecret, Resource{Secret: sec.ID}))
	if err != nil || len(bs) != 4 {
		t.Fatalf("bindings %v %v", bs, err)
	}

	// The unit gets the payload alone (not the key values).
	d, err := e.svc.DeliverCredential(ctx, "nginx.service", "tls-key")
	if err != nil || string(d.Payload) != "dbpw" || d.Version != 1 {
		t.Fatalf("unit delivery %q %v", d.Payload, err)
	}
	for _, c := range [][2]string{{"nginx.service", "other"}, {"other.service", "tls-key"}, {"bad", "x"}} {
		if _, err := e.svc.DeliverCredential(ctx, c[0], c[1]); err == nil {
			t.Fatalf("delivered %v", c)
		}
	}
	// Bound users by uid, vsock CID and token; everyone else not_found.
	_, bobTok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	for name, p := range map[string]Principal{"uid": uidPrincipal(1002), "cid": vsockGuest, "token": e.bearer(t, bobTok.Token)} {
		d, err := e.svc.Deliver(ctx, p, DeliveryRequest{Name: "dbpass"})
		if err != nil || string(d.Payload) != "dbpw" {
			t.Fatalf("%s delivery %q %v", name, d.Payload, err)
		}
	}
	for _, p := range []Principal{rootPrincipal, uidPrincipal(1001), anonPrincipal, uidPrincipal(9999)} {
		_, err := e.svc.Deliver(ctx, p, DeliveryRequest{Name: "dbpass"})
		wantCode(t, err, CodeNotFound)
	}
	_, err = e.svc.Deliver(ctx, uidPrincipal(1002), DeliveryRequest{Name: "nope"})
	wantCode(t, err, CodeNotFound)
	// One key_values entry instead of the payload; unknown keys are 404.
	if d, err := e.svc.Deliver(ctx, uidPrincipal(1002), DeliveryRequest{Name: "dbpass", Key: "k"}); err != nil || string(d.Payload) != "v" {
		t.Fatalf("key delivery %q %v", d.Payload, err)
	}
	for _, key := range []string{"nope", "../k", "k k"} {
		_, err = e.svc.Deliver(ctx, uidPrincipal(1002), DeliveryRequest{Name: "dbpass", Key: key})
		wantCode(t, err, CodeNotFound)
	}
	if _, err := e.svc.Deliver(ctx, uidPrincipal(1001), DeliveryRequest{Name: "dbpass", Key: "k"}); CodeOf(err) != CodeNotFound {
		t.Fatalf("an unbound user got a key: %v", err)
	}
	_, err = e.svc.Deliver(ctx, uidPrincipal(1002), DeliveryRequest{Name: "../etc"})
	wantCode(t, err, CodeNotFound)
	es := e.events()
	if _, ok := findEvent(es, "deliver", "ok", map[string]string{"one_key": "true", "secret": sec.ID}); !ok {
		t.Error("the delivery is not audited")
	}
	refused := false
	for _, ev := range es {
		refused = refused || (ev.Action == "deliver" && ev.Outcome == "denied" && ev.Reason == "invalid name")
	}
	if !refused {
		t.Error("the refused delivery is not audited")
	}
	if strings.Contains(e.logs.String(), "dbpw") {
		t.Fatal("the log holds the payload")
	}

	// A token's coffer rules apply to delivery.
	_, ruled := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", AccessRules: []AccessRule{{Service: "coffer", Method: "GET", Path: "/v1/deliver/other"}}})
	_, err = e.svc.Deliver(ctx, e.bearer(t, ruled.Token), DeliveryRequest{Name: "dbpass"})
	wantCode(t, err, CodeNotFound)

	// Rotation delivers the new version; revocation and expiry deliver nothing.
	mg := e.grant(t, ActManageSecret, Resource{Secret: sec.ID})
	if _, err := e.svc.RotateSecret(ctx, mg, RotateInput{Payload: []byte("dbpw2")}); err != nil {
		t.Fatal(err)
	}
	d, _ = e.svc.Deliver(ctx, uidPrincipal(1002), DeliveryRequest{Name: "dbpass"})
	if string(d.Payload) != "dbpw2" || d.Version != 2 {
		t.Fatalf("after rotation %q v%d", d.Payload, d.Version)
	}
	e.svc.now = func() time.Time { return time.Now().Add(time.Hour).UTC() }
	if _, err := e.svc.RevokeSecret(ctx, mg); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Deliver(ctx, uidPrincipal(1002), DeliveryRequest{Name: "dbpass"})
	wantCode(t, err, CodeNotFound)
	if _, err := e.svc.DeliverCredential(ctx, "nginx.service", "tls-key"); err == nil {
		t.Fatal("a revoked secret was delivered")
	}
	_, err = e.svc.CreateBinding(ctx, g, BindingInput{Unit: "new.service", Credential: "x"})
	wantCode(t, err, CodeSecretRevoked)

	// Deleting the secret deletes its bindings; the names are free again.
	if err := e.svc.DeleteSecret(ctx, mg); err != nil {
		t.Fatal(err)
	}
	sec2 := e.createSecret(t, "p1", SecretInput{DisplayName: "db2", Payload: []byte("x")})
	if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec2.ID}), BindingInput{Unit: "nginx.service", Credential: "tls-key"}); err != nil {
		t.Fatalf("rebinding after delete: %v", err)
	}
	// Deleting a user deletes its bindings.
	if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec2.ID}), BindingInput{User: "carol", Name: "n"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteUser(ctx, e.grant(t, ActManageUser, Resource{User: "carol"})); err != nil {
		t.Fatal(err)
	}
	bs, _ = e.svc.ListBindings(ctx, e.grant(t, ActReadSecret, Resource{Secret: sec2.ID}))
	if len(bs) != 1 {
		t.Fatalf("bindings after user delete: %+v", bs)
	}
}

// Bindings follow roles: nobody binds a secret to a user outside its
// project (that user would receive content chosen by another tenant). To a
// project admin such a user does not exist; a system admin is told to
// admit it first.
func TestBindingToUserOutsideTheProject(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "db", Payload: []byte("dbpw")})
	projectAdmin, err := e.svc.Authorize(ctx, uidPrincipal(1001), ActManageBindings, Resource{Secret: sec.ID})
	wantCode(t, err, "")
	tests := []struct {
		name string
		g    Grant
		in   BindingInput
		want string
	}{
		{"project admin, user without a role", projectAdmin, BindingInput{User: "dave", Name: "a"}, CodeNotFound},
		{"project admin, no such user", projectAdmin, BindingInput{User: "nobody", Name: "a"}, CodeNotFound},
		{"project admin, reader of the project", projectAdmin, BindingInput{User: "carol", Name: "a"}, ""},
		{"project admin, workload of the project", projectAdmin, BindingInput{User: "vm", Name: "a"}, ""},
		{"system admin, user without a role", e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "dave", Name: "b"}, CodeUserNotAdmitted},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.CreateBinding(ctx, tt.g, tt.in)
			wantCode(t, err, tt.want)
		})
	}
}
