package daemon

import (
	"context"
	"testing"
)

// TestSharedIdentityRecords: a token resolved for the first time after an
// identity change sees the change, even though another token of the same
// user and project filled the shared user, project and role records
// before it.
func TestSharedIdentityRecords(t *testing.T) {
	rules := []AccessRule{{Service: "svc", Method: "GET", Path: "/x"}}
	disabled := true
	tests := []struct {
		name   string
		change func(t *testing.T, e *identityEnv)
	}{
		{"user disabled", func(t *testing.T, e *identityEnv) {
			g := e.grant(t, ActManageUser, Resource{User: "bob"})
			if _, err := e.svc.PatchUser(context.Background(), g, UserPatch{Disabled: &disabled}); err != nil {
				t.Fatal(err)
			}
		}},
		{"role removed", func(t *testing.T, e *identityEnv) {
			g := e.grant(t, ActManageRoles, Resource{Project: "p1"})
			if err := e.svc.RemoveRole(context.Background(), g, "bob", "member"); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newIdentityEnv(t)
			ctx := context.Background()
			_, first := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", AccessRules: rules})
			_, second := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", AccessRules: rules})
			if d, err := e.svc.AuthorizeCall(ctx, Call{Token: first.Token, Service: "svc", Method: "GET", Path: "/x"}); err != nil || !d.Allowed {
				t.Fatalf("before the change: %+v %v", d, err)
			}
			if _, ok := e.svc.ids.users.get(e.userID(t, "bob"), e.svc.idGen.Load()); !ok {
				t.Fatal("resolving a token did not keep its user record")
			}
			tt.change(t, e)
			for name, tok := range map[string]string{"first": first.Token, "second": second.Token} {
				if d, err := e.svc.AuthorizeCall(ctx, Call{Token: tok, Service: "svc", Method: "GET", Path: "/x"}); err != nil || d.Allowed {
					t.Errorf("%s token after the change: %+v %v", name, d, err)
				}
			}
		})
	}
}

func (e *identityEnv) userID(t *testing.T, name string) string {
	t.Helper()
	u, err := e.svc.GetUser(context.Background(), e.grant(t, ActReadUser, Resource{User: name}))
	if err != nil {
		t.Fatal(err)
	}
	return u.ID
}
