package daemon

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestListCredentialsAnywhere: GET /v1/credentials lists what the caller
// owns or administers — a system admin all, a project admin its projects',
// a token its own project's only — with or without a user, page by page,
// and each cursor is a credential the caller sees.
func TestListCredentialsAnywhere(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "p2"); err != nil {
		t.Fatal(err)
	}
	for user, role := range map[string]string{"bob": "admin", "carol": "reader"} {
		if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p2"}), user, role); err != nil {
			t.Fatal(err)
		}
	}
	// alice: admin of p1; bob: member of p1, admin of p2; carol: reader of
	// both; dave: no role.
	names := map[string]string{}
	mk := func(name, project, user, typ string) Issued {
		c, iss := e.credential(t, project, CredentialInput{Type: typ, User: user, Name: name})
		names[c.ID] = name
		return iss
	}
	aliceTok := mk("a1", "p1", "alice", CredAccessToken)
	bobTok := mk("b1", "p1", "bob", CredAccessToken)
	mk("c1", "p1", "carol", CredAuthToken)
	mk("b2", "p2", "bob", CredAuthToken)
	mk("c2", "p2", "carol", CredOAuth2)

	principals := map[string]Principal{
		"root": rootPrincipal, "alice": uidPrincipal(1001), "bob": uidPrincipal(1002), "carol": uidPrincipal(1003),
		"dave": uidPrincipal(1004), "alice's p1 token": e.bearer(t, aliceTok.Token), "bob's p1 token": e.bearer(t, bobTok.Token),
	}
	tests := []struct {
		who, user string
		want      string
	}{
		{"root", "", "a1 b1 c1 b2 c2"},
		{"root", "bob", "b1 b2"},
		{"alice", "", "a1 b1 c1"},
		{"alice", "bob", "b1"},
		{"alice", "nobody", ""},
		{"bob", "", "b1 b2 c2"},
		{"bob", "carol", "c2"},
		{"bob", "alice", ""},
		{"carol", "", "c1 c2"},
		{"carol", "bob", ""},
		{"dave", "", ""},
		{"alice's p1 token", "", "a1 b1 c1"},
		{"alice's p1 token", "carol", "c1"},
		{"bob's p1 token", "", "b1"},
		{"bob's p1 token", "carol", ""},
	}
	for _, tt := range tests {
		t.Run(tt.who+" user="+tt.user, func(t *testing.T) {
			g := e.mustAuthorize(t, principals[tt.who], ActListOwnCredentials, Resource{})
			for _, limit := range []int{0, 1, 2} {
				var got []string
				var ids []string
				after := ""
				for range 10 {
					page, next, err := e.svc.ListCredentials(ctx, g, CredentialFilter{User: tt.user}, Page{Limit: limit, After: after})
					wantCode(t, err, "")
					for _, c := range page {
						got, ids = append(got, names[c.ID]), append(ids, c.ID)
					}
					if next == "" {
						break
					}
					if !slices.Contains(ids, next) {
						t.Fatalf("limit %d: cursor %s is not a credential shown", limit, next)
					}
					after = next
				}
				if s := strings.Join(got, " "); s != tt.want {
					t.Errorf("limit %d: listed %q, want %q", limit, s, tt.want)
				}
				if !slices.IsSorted(ids) {
					t.Errorf("limit %d: not in creation order: %v", limit, got)
				}
			}
		})
	}
	// A root asking for an unknown user is told so.
	_, _, err := e.svc.ListCredentials(ctx, e.grant(t, ActListOwnCredentials, Resource{}), CredentialFilter{User: "nobody"}, Page{})
	wantCode(t, err, CodeNotFound)
}
