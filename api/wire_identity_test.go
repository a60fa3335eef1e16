package api

import (
	"encoding/json"
	"slices"
	"testing"
)

// TestRoleNamesJSON: roles are read as names or as {"name": ...} objects,
// the form application-credential clients send (issue 14), and written as
// names.
func TestRoleNamesJSON(t *testing.T) {
	tests := []struct {
		in      string
		want    RoleNames
		wantErr string
	}{
		{in: `["reader"]`, want: RoleNames{"reader"}},
		{in: `[{"name":"reader"}]`, want: RoleNames{"reader"}},
		{in: `["reader",{"name":"member"}]`, want: RoleNames{"reader", "member"}},
		{in: `[]`, want: RoleNames{}},
		{in: `null`, want: nil},
		{in: `[{"id":"0a1b"}]`, wantErr: `roles[0] must be a role name or {"name": ROLE} (coffer's roles reader, member and admin have no ids)`},
		{in: `["reader",{"name":"admin","domain":"x"}]`, wantErr: `roles[1] must be a role name or {"name": ROLE} (coffer's roles reader, member and admin have no ids)`},
		{in: `[{}]`, wantErr: `roles[0] must be a role name or {"name": ROLE} (coffer's roles reader, member and admin have no ids)`},
		{in: `[7]`, wantErr: `roles[0] must be a role name or {"name": ROLE} (coffer's roles reader, member and admin have no ids)`},
		{in: `"reader"`, wantErr: "roles must be a list of role names"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			var req CredentialCreateRequest
			err := json.Unmarshal([]byte(`{"type":"auth-token","roles":`+tt.in+`}`), &req)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(req.Roles, tt.want) || (req.Roles == nil) != (tt.want == nil) {
				t.Fatalf("roles %#v, want %#v", req.Roles, tt.want)
			}
		})
	}
	b, err := json.Marshal(CredentialCreateRequest{Type: "oauth2", Roles: RoleNames{"reader"}})
	if err != nil || string(b) != `{"type":"oauth2","roles":["reader"],"access_rules":null}` {
		t.Fatalf("marshal: %s %v", b, err)
	}
}
