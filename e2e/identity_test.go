package e2e

// End-to-end tests of users, roles and their cascades (issue 3), plus the
// helpers the credential, session, OAuth2 and access-rule tests share. The
// CLI for this capability is not used: every call is raw HTTP on the Unix
// socket, as curl --unix-socket would make it.

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math/big"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// badTokenMessage is the one message of every refused token.
const badTokenMessage = "invalid or expired token"

// secretsPath is a reader+ endpoint used to prove a bearer works.
const secretsPath = "/v1/projects/default/secrets"

// bearer sends a request authenticated by token (none when empty).
func (d *daemonProc) bearer(t *testing.T, token, method, path string, body any) apiResp {
	t.Helper()
	hdr := http.Header{}
	if token != "" {
		hdr.Set("Authorization", "Bearer "+token)
	}
	return d.send(t, method, path, hdr, body)
}

// mustBearer is bearer that fails unless the status is want and decodes
// the body into out when out is not nil.
func (d *daemonProc) mustBearer(t *testing.T, token, method, path string, body any, want int, out any) apiResp {
	t.Helper()
	res := d.bearer(t, token, method, path, body)
	if res.status != want {
		t.Fatalf("%s %s (bearer %s): status %d, want %d; body: %s", method, path, tokenKind(token), res.status, want, res.body)
	}
	if out != nil {
		if err := json.Unmarshal(res.body, out); err != nil {
			t.Fatalf("%s %s: decode %s: %v", method, path, res.body, err)
		}
	}
	return res
}

// tokenKind names a token for messages without printing it.
func tokenKind(tok string) string {
	switch {
	case tok == "":
		return "none"
	case strings.Count(tok, ".") == 2:
		return "jwt"
	case len(tok) > 4 && tok[3] == '_':
		return tok[:4] + "…"
	}
	return "garbage"
}

// newUser creates a workload user with a 1h access-token TTL.
func (d *daemonProc) newUser(t *testing.T, name string) api.User {
	t.Helper()
	var u api.User
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": name, "kind": "workload", "access_token_ttl": "1h"}, http.StatusCreated, &u)
	return u
}

// setRole gives user role on proj.
func (d *daemonProc) setRole(t *testing.T, proj, user, role string) {
	t.Helper()
	d.mustAPI(t, "PUT", "/v1/projects/"+proj+"/roles/"+user+"/"+role, nil, http.StatusOK, nil)
}

// newPolicies creates policies names in proj ("" global) as the system
// admin: one deny rule that never holds each, so attaching them changes
// no decision.
func (d *daemonProc) newPolicies(t *testing.T, proj string, names ...string) {
	t.Helper()
	path := "/v1/policies"
	if proj != "" {
		path = "/v1/projects/" + proj + "/policies"
	}
	for _, n := range names {
		d.mustAPI(t, "POST", path, map[string]any{"name": n, "rules": []map[string]string{{"effect": "deny", "condition": "false"}}}, http.StatusCreated, nil)
	}
}

// newCred creates a credential in proj as the system admin.
func (d *daemonProc) newCred(t *testing.T, proj string, body map[string]any) api.Credential {
	t.Helper()
	var c api.Credential
	res := d.mustAPI(t, "POST", "/v1/projects/"+proj+"/credentials", body, http.StatusCreated, &c)
	if loc := res.header.Get("Location"); loc != "/v1/credentials/"+c.ID {
		t.Errorf("Location = %q, want /v1/credentials/%s", loc, c.ID)
	}
	return c
}

// getCred reads a credential as the system admin.
func (d *daemonProc) getCred(t *testing.T, id string) api.Credential {
	t.Helper()
	var c api.Credential
	d.mustAPI(t, "GET", "/v1/credentials/"+id, nil, http.StatusOK, &c)
	return c
}

// login exchanges an auth token for a session.
func (d *daemonProc) login(t *testing.T, authToken string) api.Session {
	t.Helper()
	var s api.Session
	d.mustBearer(t, authToken, "POST", "/v1/auth/login", nil, http.StatusCreated, &s)
	return s
}

// oauthToken runs the client-credentials grant with HTTP Basic and returns
// the response (status 200 expected).
func (d *daemonProc) oauthToken(t *testing.T, clientID, secret string) api.TokenResponse {
	t.Helper()
	res := d.oauthTokenRaw(t, clientID, secret, nil)
	if res.status != http.StatusOK {
		t.Fatalf("POST /oauth2/token: status %d, want 200; body: %s", res.status, res.body)
	}
	var tr api.TokenResponse
	if err := json.Unmarshal(res.body, &tr); err != nil {
		t.Fatalf("decode token response %s: %v", res.body, err)
	}
	return tr
}

// oauthTokenRaw runs the client-credentials grant with HTTP Basic plus
// extra form fields.
func (d *daemonProc) oauthTokenRaw(t *testing.T, clientID, secret string, extra url.Values) apiResp {
	t.Helper()
	form := url.Values{"grant_type": {"client_credentials"}}
	for k, v := range extra {
		form[k] = v
	}
	hdr := http.Header{}
	hdr.Set("Authorization", "Basic "+b64([]byte(url.QueryEscape(clientID)+":"+url.QueryEscape(secret))))
	return d.send(t, "POST", "/oauth2/token", hdr, form)
}

// introspect returns the raw introspection answer for token.
func (d *daemonProc) introspect(t *testing.T, token string) (apiResp, api.Introspection) {
	t.Helper()
	res := d.send(t, "POST", "/oauth2/introspect", nil, url.Values{"token": {token}})
	if res.status != http.StatusOK {
		t.Fatalf("POST /oauth2/introspect: status %d; body %s", res.status, res.body)
	}
	var in api.Introspection
	if err := json.Unmarshal(res.body, &in); err != nil {
		t.Fatalf("decode introspection %s: %v", res.body, err)
	}
	return res, in
}

// wantInactive asserts an introspection answer is exactly {"active":false}.
func (d *daemonProc) wantInactive(t *testing.T, what, token string) {
	t.Helper()
	res, _ := d.introspect(t, token)
	if got := strings.TrimSpace(string(res.body)); got != `{"active":false}` {
		t.Errorf("introspect %s: body %s, want exactly {\"active\":false}", what, got)
	}
}

// wantUnauthenticated asserts the one 401 answer of every refused token.
func wantUnauthenticated(t *testing.T, what string, res apiResp) {
	t.Helper()
	if res.status != http.StatusUnauthorized {
		t.Errorf("%s: status %d, want 401; body: %s", what, res.status, res.body)
		return
	}
	var e errorBody
	if err := json.Unmarshal(res.body, &e); err != nil {
		t.Errorf("%s: 401 body %q is not JSON: %v", what, res.body, err)
		return
	}
	if e.Error != "unauthenticated" || e.Message != badTokenMessage {
		t.Errorf("%s: 401 body %s, want unauthenticated / %q", what, res.body, badTokenMessage)
	}
}

// readsSecrets returns the status of a reader+ call made with token.
func (d *daemonProc) readsSecrets(t *testing.T, token string) int {
	t.Helper()
	return d.bearer(t, token, "GET", secretsPath, nil).status
}

// wantWorks asserts token lists the default project's secrets.
func (d *daemonProc) wantWorks(t *testing.T, what, token string) {
	t.Helper()
	if res := d.bearer(t, token, "GET", secretsPath, nil); res.status != http.StatusOK {
		t.Errorf("%s: GET %s status %d, want 200; body %s", what, secretsPath, res.status, res.body)
	}
}

// wantRefused asserts token gets the uniform 401 on a reader+ call.
func (d *daemonProc) wantRefused(t *testing.T, what, token string) {
	t.Helper()
	wantUnauthenticated(t, what, d.bearer(t, token, "GET", secretsPath, nil))
}

// ---- token forging (the documented format, DESIGN §6) ----

const b62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// decodeTokenRaw decodes a coffer token into its prefix and 52 raw bytes
// (16-byte id, 32-byte secret, CRC32); ok is false for a non-token.
func decodeTokenRaw(tok string) (string, [52]byte, bool) {
	var raw [52]byte
	if len(tok) != 74 || tok[3] != '_' {
		return "", raw, false
	}
	n := new(big.Int)
	for _, c := range []byte(tok[4:]) {
		i := strings.IndexByte(b62Alphabet, c)
		if i < 0 {
			return "", raw, false
		}
		n.Mul(n, big.NewInt(62))
		n.Add(n, big.NewInt(int64(i)))
	}
	if n.BitLen() > 52*8 {
		return "", raw, false
	}
	n.FillBytes(raw[:])
	return tok[:3], raw, true
}

// tokenRaw is decodeTokenRaw for a token that must be one.
func tokenRaw(t *testing.T, tok string) (string, [52]byte) {
	t.Helper()
	p, raw, ok := decodeTokenRaw(tok)
	if !ok {
		t.Fatalf("not a coffer token: %s", tokenKind(tok))
	}
	return p, raw
}

// tokenEncode builds a token from prefix and id||secret with a correct
// checksum.
func tokenEncode(prefix string, raw [52]byte) string {
	crc := crc32.ChecksumIEEE(append([]byte(prefix+"_"), raw[:48]...))
	binary.BigEndian.PutUint32(raw[48:], crc)
	n := new(big.Int).SetBytes(raw[:])
	out := make([]byte, 70)
	for i := range out {
		out[i] = '0'
	}
	m := new(big.Int)
	for i := 69; n.Sign() > 0; i-- {
		n.DivMod(n, big.NewInt(62), m)
		out[i] = b62Alphabet[m.Int64()]
	}
	return prefix + "_" + string(out)
}

// tokenIDOf is the public token id inside a token (what token_id shows).
func tokenIDOf(t *testing.T, tok string) string {
	t.Helper()
	_, raw := tokenRaw(t, tok)
	n := new(big.Int).SetBytes(raw[:16])
	out := make([]byte, 22)
	for i := range out {
		out[i] = '0'
	}
	m := new(big.Int)
	for i := 21; n.Sign() > 0; i-- {
		n.DivMod(n, big.NewInt(62), m)
		out[i] = b62Alphabet[m.Int64()]
	}
	return string(out)
}

// wrongSecret keeps tok's id and replaces its secret, with a valid
// checksum: only the store lookup can tell.
func wrongSecret(t *testing.T, tok string) string {
	t.Helper()
	p, raw := tokenRaw(t, tok)
	if _, err := rand.Read(raw[16:48]); err != nil {
		t.Fatal(err)
	}
	return tokenEncode(p, raw)
}

// unknownID keeps tok's secret and replaces its id, with a valid checksum.
func unknownID(t *testing.T, tok string) string {
	t.Helper()
	p, raw := tokenRaw(t, tok)
	if _, err := rand.Read(raw[:16]); err != nil {
		t.Fatal(err)
	}
	return tokenEncode(p, raw)
}

// badChecksum changes one character of tok's body, breaking the checksum.
func badChecksum(tok string) string {
	b := []byte(tok)
	i := len(b) - 5
	if b[i] == 'a' {
		b[i] = 'b'
	} else {
		b[i] = 'a'
	}
	return string(b)
}

func TestTokenForgeryHelpers(t *testing.T) {
	// The helpers must round-trip a real token or the forged cases above
	// would test nothing.
	d := startDaemon(t, workDir(t))
	d.newUser(t, "forge")
	d.setRole(t, "default", "forge", "reader")
	c := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "forge"})
	p, raw := tokenRaw(t, c.Token)
	if again := tokenEncode(p, raw); again != c.Token {
		t.Fatalf("re-encoding a token changed it")
	}
	if id := tokenIDOf(t, c.Token); id != c.TokenID {
		t.Fatalf("token id in the token %q != token_id %q", id, c.TokenID)
	}
	d.wantWorks(t, "real token", c.Token)
}

// ---- users ----

func TestIdentityUsers(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))

	var u api.User
	res := d.mustAPI(t, "POST", "/v1/users", map[string]any{
		"name": "svc-a", "kind": "workload", "unix_uids": []int{4242}, "vsock_cids": []int{7}, "access_token_ttl": "1h",
	}, http.StatusCreated, &u)
	if loc := res.header.Get("Location"); loc != "/v1/users/svc-a" {
		t.Errorf("Location %q", loc)
	}
	if u.ID == "" || u.Name != "svc-a" || u.Kind != "workload" || u.Disabled || !slices.Equal(u.UnixUIDs, []uint32{4242}) ||
		!slices.Equal(u.VsockCIDs, []uint32{7}) || u.AccessTokenTTL != "1h0m0s" {
		t.Errorf("created user %+v", u)
	}
	human := d.newUser(t, "alice")

	// read by name and by id
	var byName, byID api.User
	d.mustAPI(t, "GET", "/v1/users/svc-a", nil, http.StatusOK, &byName)
	d.mustAPI(t, "GET", "/v1/users/"+u.ID, nil, http.StatusOK, &byID)
	if byName.ID != u.ID || byID.Name != "svc-a" {
		t.Errorf("GET by name %+v, by id %+v", byName, byID)
	}
	wantError(t, d.api(t, "GET", "/v1/users/nobody", nil), http.StatusNotFound, "not_found")

	// refused bindings and duplicates
	for _, c := range []struct {
		name   string
		body   map[string]any
		status int
		code   string
	}{
		{"uid 0", map[string]any{"name": "root-ish", "kind": "workload", "unix_uids": []int{0}}, 400, "invalid_user"},
		{"cid 0", map[string]any{"name": "c0", "kind": "workload", "vsock_cids": []int{0}}, 400, "invalid_user"},
		{"cid 1", map[string]any{"name": "c1", "kind": "workload", "vsock_cids": []int{1}}, 400, "invalid_user"},
		{"cid 2", map[string]any{"name": "c2", "kind": "workload", "vsock_cids": []int{2}}, 400, "invalid_user"},
		{"bad kind", map[string]any{"name": "k", "kind": "robot"}, 400, "invalid_user"},
		{"bad name", map[string]any{"name": "Not OK", "kind": "human"}, 400, "invalid_name"},
		{"dup name", map[string]any{"name": "svc-a", "kind": "workload"}, 409, "already_exists"},
		{"dup uid", map[string]any{"name": "svc-b", "kind": "workload", "unix_uids": []int{4242}}, 409, "already_exists"},
		{"dup cid", map[string]any{"name": "svc-c", "kind": "workload", "vsock_cids": []int{7}}, 409, "already_exists"},
		{"bad ttl", map[string]any{"name": "svc-d", "kind": "workload", "access_token_ttl": "forever"}, 400, "invalid_argument"},
		{"unknown field", map[string]any{"name": "svc-e", "kind": "workload", "admin": true}, 400, "invalid_json"},
	} {
		t.Run(c.name, func(t *testing.T) {
			wantError(t, d.api(t, "POST", "/v1/users", c.body), c.status, c.code)
		})
	}
	wantError(t, d.api(t, "PATCH", "/v1/users/alice", map[string]any{"unix_uids": []int{4242}}), 409, "already_exists")
	wantError(t, d.api(t, "PATCH", "/v1/users/alice", map[string]any{"vsock_cids": []int{2}}), 400, "invalid_user")
	wantError(t, d.api(t, "PATCH", "/v1/users/alice", map[string]any{"unix_uids": []int{0}}), 400, "invalid_user")

	// list, and list by project
	var all api.List[api.User]
	d.mustAPI(t, "GET", "/v1/users", nil, http.StatusOK, &all)
	if len(all.Items) != 2 {
		t.Errorf("GET /v1/users: %d users, want 2: %+v", len(all.Items), all.Items)
	}
	d.setRole(t, "default", "alice", "member")
	var inDefault api.List[api.User]
	d.mustAPI(t, "GET", "/v1/users?project=default", nil, http.StatusOK, &inDefault)
	if len(inDefault.Items) != 1 || inDefault.Items[0].Name != "alice" {
		t.Errorf("GET /v1/users?project=default: %+v, want alice only", inDefault.Items)
	}

	// patch: ttl, bindings, disable; absent fields stay
	var p api.User
	d.mustAPI(t, "PATCH", "/v1/users/svc-a", map[string]any{"access_token_ttl": "30m"}, http.StatusOK, &p)
	if p.AccessTokenTTL != "30m0s" || !slices.Equal(p.UnixUIDs, []uint32{4242}) || p.Disabled {
		t.Errorf("after ttl patch %+v", p)
	}
	d.mustAPI(t, "PATCH", "/v1/users/"+u.ID, map[string]any{"unix_uids": []int{}, "vsock_cids": []int{9}}, http.StatusOK, &p)
	if len(p.UnixUIDs) != 0 || !slices.Equal(p.VsockCIDs, []uint32{9}) || p.AccessTokenTTL != "30m0s" {
		t.Errorf("after bindings patch %+v", p)
	}
	// the freed uid can be bound elsewhere now
	d.mustAPI(t, "PATCH", "/v1/users/alice", map[string]any{"unix_uids": []int{4242}}, http.StatusOK, nil)
	d.mustAPI(t, "PATCH", "/v1/users/svc-a", map[string]any{"disabled": true}, http.StatusOK, &p)
	if !p.Disabled {
		t.Errorf("after disable %+v", p)
	}

	// a user's bearer may read itself, nobody else, and manage no users
	c := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "alice"})
	d.mustBearer(t, c.Token, "GET", "/v1/users/alice", nil, http.StatusOK, nil)
	d.mustBearer(t, c.Token, "GET", "/v1/users/"+human.ID, nil, http.StatusOK, nil)
	wantError(t, d.bearer(t, c.Token, "GET", "/v1/users/svc-a", nil), 403, "forbidden")
	wantError(t, d.bearer(t, c.Token, "GET", "/v1/users", nil), 403, "forbidden")
	wantError(t, d.bearer(t, c.Token, "POST", "/v1/users", map[string]any{"name": "x", "kind": "human"}), 403, "forbidden")
	wantError(t, d.bearer(t, c.Token, "PATCH", "/v1/users/alice", map[string]any{"disabled": false}), 403, "forbidden")
	wantError(t, d.bearer(t, c.Token, "DELETE", "/v1/users/alice", nil), 403, "forbidden")
	// ... nor give itself roles
	wantError(t, d.bearer(t, c.Token, "PUT", "/v1/projects/default/roles/alice/admin", nil), 403, "forbidden")

	// delete
	d.mustAPI(t, "DELETE", "/v1/users/svc-a", nil, http.StatusNoContent, nil)
	wantError(t, d.api(t, "GET", "/v1/users/svc-a", nil), http.StatusNotFound, "not_found")
	wantError(t, d.api(t, "DELETE", "/v1/users/svc-a", nil), http.StatusNotFound, "not_found")
	// its cid is free again
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "svc-f", "kind": "workload", "vsock_cids": []int{9}}, http.StatusCreated, nil)
}

// ---- roles ----

// credSet is one credential per role-set, to watch role cascades.
type credSet map[string]api.Credential

func TestRoleSubsetAndCascades(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.mustAPI(t, "POST", "/v1/projects", map[string]any{"name": "team"}, http.StatusCreated, nil)
	d.newUser(t, "bob")
	d.newUser(t, "carol")
	d.setRole(t, "default", "bob", "member")

	t.Run("roles beyond the user's are refused", func(t *testing.T) {
		for _, roles := range [][]string{{"admin"}, {"reader", "admin"}} {
			res := d.api(t, "POST", "/v1/projects/default/credentials", map[string]any{"type": "access-token", "user": "bob", "roles": roles})
			wantError(t, res, http.StatusForbidden, "forbidden")
		}
		wantError(t, d.api(t, "POST", "/v1/projects/default/credentials",
			map[string]any{"type": "access-token", "user": "bob", "roles": []string{"owner"}}), 400, "invalid_role")
		// no role at all on the project: a system admin is told to admit bob
		wantError(t, d.api(t, "POST", "/v1/projects/team/credentials",
			map[string]any{"type": "access-token", "user": "bob"}), http.StatusConflict, "user_not_admitted")
		// default roles: everything the user holds, implied roles included
		c := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "bob"})
		if !slices.Equal(c.Roles, []string{"member", "reader"}) {
			t.Errorf("default roles %v, want [member reader]", c.Roles)
		}
		d.mustAPI(t, "DELETE", "/v1/credentials/"+c.ID, nil, http.StatusNoContent, nil)
	})

	t.Run("roles listing", func(t *testing.T) {
		var l api.List[api.ProjectRole]
		d.mustAPI(t, "GET", "/v1/projects/default/roles", nil, http.StatusOK, &l)
		if len(l.Items) != 1 || l.Items[0].User != "bob" || l.Items[0].Role != "member" || l.Items[0].Project != "default" {
			t.Errorf("roles %+v", l.Items)
		}
		wantError(t, d.api(t, "PUT", "/v1/projects/default/roles/bob/owner", nil), 400, "invalid_role")
		wantError(t, d.api(t, "PUT", "/v1/projects/default/roles/nobody/reader", nil), 404, "not_found")
		// a project that does not exist is forbidden, not revealed (DESIGN §4)
		wantError(t, d.api(t, "PUT", "/v1/projects/nope/roles/bob/reader", nil), 403, "forbidden")
	})

	t.Run("removing the role deletes the credentials and stops their tokens", func(t *testing.T) {
		d.setRole(t, "team", "carol", "member")
		d.setRole(t, "default", "carol", "member")
		onTeam := d.newCred(t, "team", map[string]any{"type": "access-token", "user": "carol"})
		auth := d.newCred(t, "team", map[string]any{"type": "auth-token", "user": "carol", "roles": []string{"reader"}})
		sess := d.login(t, auth.Token)
		oc := d.newCred(t, "team", map[string]any{"type": "oauth2", "user": "carol"})
		jwt := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
		onDefault := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "carol"})
		teamSecrets := "/v1/projects/team/secrets"
		for _, tok := range []string{onTeam.Token, sess.Token, jwt} {
			d.mustBearer(t, tok, "GET", teamSecrets, nil, http.StatusOK, nil)
		}

		d.mustAPI(t, "DELETE", "/v1/projects/team/roles/carol/member", nil, http.StatusNoContent, nil)
		for _, tok := range []string{onTeam.Token, sess.Token, jwt} {
			wantUnauthenticated(t, "token of a credential whose role went ("+tokenKind(tok)+")", d.bearer(t, tok, "GET", teamSecrets, nil))
		}
		wantUnauthenticated(t, "login after role removal", d.bearer(t, auth.Token, "POST", "/v1/auth/login", nil))
		for _, c := range []api.Credential{onTeam, auth, oc} {
			wantError(t, d.api(t, "GET", "/v1/credentials/"+c.ID, nil), 404, "not_found")
		}
		var l api.List[api.Credential]
		d.mustAPI(t, "GET", "/v1/projects/team/credentials?user=carol", nil, http.StatusOK, &l)
		if len(l.Items) != 0 {
			t.Errorf("carol still has %d credentials on team", len(l.Items))
		}
		// the other project is untouched
		d.wantWorks(t, "credential on another project", onDefault.Token)
		if c := d.getCred(t, onDefault.ID); c.Status != "active" {
			t.Errorf("other project's credential status %q", c.Status)
		}
		// removing a role not held is not_found
		wantError(t, d.api(t, "DELETE", "/v1/projects/team/roles/carol/member", nil), 404, "not_found")
	})

	t.Run("lowering admin to reader keeps only reader credentials", func(t *testing.T) {
		d.newUser(t, "dave")
		d.setRole(t, "default", "dave", "admin")
		creds := credSet{}
		for _, set := range [][]string{{"admin"}, {"member"}, {"reader"}, {"admin", "member", "reader"}, {"member", "reader"}} {
			c := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "dave", "roles": set})
			creds[strings.Join(set, "+")] = c
			d.wantWorks(t, "dave "+strings.Join(set, "+"), c.Token)
		}
		// admin-level credential can create a secret now
		adminTok := creds["admin+member+reader"].Token
		d.mustBearer(t, adminTok, "POST", secretsPath, map[string]any{"display_name": "x", "payload": b64([]byte("p"))}, http.StatusCreated, nil)

		d.setRole(t, "default", "dave", "reader")
		for name, c := range creds {
			if name == "reader" {
				d.wantWorks(t, "reader credential after lowering", c.Token)
				if got := d.getCred(t, c.ID); got.Status != "active" {
					t.Errorf("reader credential status %q", got.Status)
				}
				wantError(t, d.bearer(t, c.Token, "POST", secretsPath, map[string]any{"display_name": "x", "payload": b64([]byte("p"))}),
					http.StatusForbidden, "forbidden")
				continue
			}
			d.wantRefused(t, name+" credential after lowering to reader", c.Token)
			wantError(t, d.api(t, "GET", "/v1/credentials/"+c.ID, nil), 404, "not_found")
		}
		// raising back does not resurrect anything, and keeps the reader one
		d.setRole(t, "default", "dave", "admin")
		var l api.List[api.Credential]
		d.mustAPI(t, "GET", "/v1/projects/default/credentials?user=dave", nil, http.StatusOK, &l)
		if len(l.Items) != 1 || !slices.Equal(l.Items[0].Roles, []string{"reader"}) {
			t.Errorf("dave's credentials after raising back: %+v", l.Items)
		}
	})

	t.Run("a bearer never has more than its user holds now", func(t *testing.T) {
		d.newUser(t, "erin")
		d.setRole(t, "default", "erin", "admin")
		c := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "erin", "roles": []string{"reader"}})
		// a reader credential of an admin user reads but cannot manage
		d.wantWorks(t, "reader credential", c.Token)
		wantError(t, d.bearer(t, c.Token, "PUT", "/v1/projects/default/roles/bob/reader", nil), http.StatusForbidden, "forbidden")
		wantError(t, d.bearer(t, c.Token, "POST", secretsPath, map[string]any{"display_name": "x", "payload": b64([]byte("p"))}),
			http.StatusForbidden, "forbidden")
		// nor anything on another project
		wantError(t, d.bearer(t, c.Token, "GET", "/v1/projects/team/secrets", nil), http.StatusForbidden, "forbidden")
		// dropping the user to no role stops it at once
		d.mustAPI(t, "DELETE", "/v1/projects/default/roles/erin/admin", nil, http.StatusNoContent, nil)
		d.wantRefused(t, "reader credential after role removal", c.Token)
	})
}

// ---- user cascades ----

func TestIdentityUserCascades(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "wl")
	d.setRole(t, "default", "wl", "reader")

	auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "wl"})
	sess := d.login(t, auth.Token)
	at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "wl"})
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "wl"})
	jwt := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
	bearers := map[string]string{"session": sess.Token, "access token": at.Token, "jwt": jwt}
	creds := []api.Credential{auth, at, oc}
	for what, tok := range bearers {
		d.wantWorks(t, what, tok)
	}

	t.Run("disable", func(t *testing.T) {
		d.mustAPI(t, "PATCH", "/v1/users/wl", map[string]any{"disabled": true}, http.StatusOK, nil)
		for what, tok := range bearers {
			d.wantRefused(t, what+" of a disabled user", tok)
			d.wantInactive(t, what+" of a disabled user", tok)
		}
		wantUnauthenticated(t, "login of a disabled user", d.bearer(t, auth.Token, "POST", "/v1/auth/login", nil))
		if res := d.oauthTokenRaw(t, oc.ClientID, oc.ClientSecret, nil); res.status != 401 || !strings.Contains(string(res.body), "invalid_client") {
			t.Errorf("oauth2 token of a disabled user: %d %s", res.status, res.body)
		}
		for _, c := range creds {
			if got := d.getCred(t, c.ID); got.Status != "disabled" {
				t.Errorf("%s credential of a disabled user: status %q", c.Type, got.Status)
			}
		}
	})

	t.Run("enable", func(t *testing.T) {
		d.mustAPI(t, "PATCH", "/v1/users/wl", map[string]any{"disabled": false}, http.StatusOK, nil)
		for what, tok := range bearers {
			d.wantWorks(t, what+" after enabling", tok)
		}
		d.login(t, auth.Token)
		d.oauthToken(t, oc.ClientID, oc.ClientSecret)
		for _, c := range creds {
			if got := d.getCred(t, c.ID); got.Status != "active" {
				t.Errorf("%s credential after enabling: status %q", c.Type, got.Status)
			}
		}
	})

	t.Run("delete", func(t *testing.T) {
		var before api.List[api.Session]
		d.mustAPI(t, "GET", "/v1/sessions", nil, http.StatusOK, &before)
		if n := countSessions(before.Items, "wl"); n < 4 {
			t.Errorf("wl has %d sessions before deletion, want >= 4", n)
		}
		d.mustAPI(t, "DELETE", "/v1/users/wl", nil, http.StatusNoContent, nil)
		for what, tok := range bearers {
			d.wantRefused(t, what+" of a deleted user", tok)
			d.wantInactive(t, what+" of a deleted user", tok)
		}
		wantUnauthenticated(t, "login of a deleted user", d.bearer(t, auth.Token, "POST", "/v1/auth/login", nil))
		if res := d.oauthTokenRaw(t, oc.ClientID, oc.ClientSecret, nil); res.status != 401 {
			t.Errorf("oauth2 token of a deleted user: %d %s", res.status, res.body)
		}
		for _, c := range creds {
			wantError(t, d.api(t, "GET", "/v1/credentials/"+c.ID, nil), 404, "not_found")
		}
		var after api.List[api.Session]
		d.mustAPI(t, "GET", "/v1/sessions", nil, http.StatusOK, &after)
		if n := countSessions(after.Items, "wl"); n != 0 {
			t.Errorf("deleted user still has %d sessions", n)
		}
		var l api.List[api.Credential]
		d.mustAPI(t, "GET", "/v1/projects/default/credentials", nil, http.StatusOK, &l)
		if len(l.Items) != 0 {
			t.Errorf("credentials left after deleting their user: %+v", l.Items)
		}
		var roles api.List[api.ProjectRole]
		d.mustAPI(t, "GET", "/v1/projects/default/roles", nil, http.StatusOK, &roles)
		if len(roles.Items) != 0 {
			t.Errorf("roles left after deleting their user: %+v", roles.Items)
		}
		// a new user of the same name inherits nothing
		d.newUser(t, "wl")
		for what, tok := range bearers {
			d.wantRefused(t, what+" after the name was reused", tok)
		}
	})
}

func countSessions(ss []api.Session, user string) int {
	n := 0
	for _, s := range ss {
		if s.User == user {
			n++
		}
	}
	return n
}

// ---- the uniform 401 ----

func TestTokenRefusalsIdentical(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	other := startDaemon(t, workDir(t))
	for _, x := range []*daemonProc{d, other} {
		x.newUser(t, "u")
		x.setRole(t, "default", "u", "reader")
	}
	d.newUser(t, "off")
	d.setRole(t, "default", "off", "reader")

	// expiring credentials first: they must be dead by the time we look
	expAT := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "u", "expire_in": "2s"})
	expAuth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "u", "expire_in": "2s"})
	expSess := d.login(t, expAuth.Token)
	deadline := time.Now().Add(3 * time.Second)

	live := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "u"})
	liveAuth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "u"})
	liveSess := d.login(t, liveAuth.Token)
	revoked := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "u"})
	d.mustAPI(t, "POST", "/v1/credentials/"+revoked.ID+"/revoke", nil, http.StatusOK, nil)
	revokedAuth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "u"})
	d.mustAPI(t, "POST", "/v1/credentials/"+revokedAuth.ID+"/revoke", nil, http.StatusOK, nil)
	rotated := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "u"})
	d.mustAPI(t, "POST", "/v1/credentials/"+rotated.ID+"/rotate", nil, http.StatusOK, nil)
	deleted := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "u"})
	d.mustAPI(t, "DELETE", "/v1/credentials/"+deleted.ID, nil, http.StatusNoContent, nil)
	endedSess := d.login(t, liveAuth.Token)
	d.mustAPI(t, "DELETE", "/v1/sessions/"+endedSess.ID, nil, http.StatusNoContent, nil)
	offAT := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "off"})
	offAuth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "off"})
	d.mustAPI(t, "PATCH", "/v1/users/off", map[string]any{"disabled": true}, http.StatusOK, nil)
	exhausted := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "u", "one_time": true})
	d.login(t, exhausted.Token)
	foreign := other.newCred(t, "default", map[string]any{"type": "access-token", "user": "u"})
	foreignAuth := other.newCred(t, "default", map[string]any{"type": "auth-token", "user": "u"})
	foreignOC := other.newCred(t, "default", map[string]any{"type": "oauth2", "user": "u"})
	foreignJWT := other.oauthToken(t, foreignOC.ClientID, foreignOC.ClientSecret).AccessToken
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "u"})

	d.wantWorks(t, "live access token", live.Token)
	d.wantWorks(t, "live session", liveSess.Token)
	other.wantWorks(t, "foreign token at home", foreign.Token)

	if w := time.Until(deadline); w > 0 {
		time.Sleep(w)
	}

	bearers := []struct{ what, tok string }{
		{"garbage", "hello"},
		{"garbage with a prefix", "cft_hello"},
		{"bad checksum", badChecksum(live.Token)},
		{"bad checksum session", badChecksum(liveSess.Token)},
		{"unknown id", unknownID(t, live.Token)},
		{"wrong secret", wrongSecret(t, live.Token)},
		{"wrong secret session", wrongSecret(t, liveSess.Token)},
		{"another prefix, same body", "cfs" + live.Token[3:]},
		{"token of another daemon", foreign.Token},
		{"jwt of another daemon", foreignJWT},
		{"jwt tampered", tamperJWT(t, foreignJWT)},
		{"revoked", revoked.Token},
		{"rotated away", rotated.Token},
		{"deleted credential", deleted.Token},
		{"revoked session", endedSess.Token},
		{"expired access token", expAT.Token},
		{"expired session", expSess.Token},
		{"disabled user", offAT.Token},
		{"auth token as bearer", liveAuth.Token},
		{"oauth2 client secret as bearer", oc.ClientSecret},
	}
	var first []byte
	for _, b := range bearers {
		res := d.bearer(t, b.tok, "GET", secretsPath, nil)
		wantUnauthenticated(t, b.what, res)
		if first == nil {
			first = res.body
		} else if !bytes.Equal(res.body, first) {
			t.Errorf("%s: body %s differs from %s", b.what, res.body, first)
		}
		// same on another endpoint, a self-service one
		if res := d.bearer(t, b.tok, "GET", "/v1/credentials", nil); !bytes.Equal(res.body, first) || res.status != 401 {
			t.Errorf("%s on GET /v1/credentials: %d %s", b.what, res.status, res.body)
		}
	}

	logins := []struct{ what, tok string }{
		{"garbage", "hello"},
		{"bad checksum", badChecksum(liveAuth.Token)},
		{"unknown id", unknownID(t, liveAuth.Token)},
		{"wrong secret", wrongSecret(t, liveAuth.Token)},
		{"auth token of another daemon", foreignAuth.Token},
		{"revoked", revokedAuth.Token},
		{"expired", expAuth.Token},
		{"disabled user", offAuth.Token},
		{"exhausted", exhausted.Token},
		{"access token", live.Token},
		{"session token", liveSess.Token},
		{"oauth2 client secret", oc.ClientSecret},
	}
	for _, l := range logins {
		res := d.bearer(t, l.tok, "POST", "/v1/auth/login", nil)
		wantUnauthenticated(t, "login with "+l.what, res)
		if !bytes.Equal(res.body, first) {
			t.Errorf("login with %s: body %s differs from %s", l.what, res.body, first)
		}
	}
	// the good ones still work: nothing above was collateral damage
	d.wantWorks(t, "live access token", live.Token)
	d.login(t, liveAuth.Token)
	// the reasons are in the audit log, the tokens are not
	for _, want := range []string{"wrong token secret", "unknown token id", "session expired", "user disabled"} {
		d.waitAudit(t, "the refusal "+want, "", "denied", nil, want)
	}
}

// TestRoleLoweringRacesCredentialCreation: lowering a role must leave no
// credential beyond the new role, also when credentials are being created
// at the same moment (no write skew between the role change and a create
// that read the old role).
func TestRoleLoweringRacesCredentialCreation(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "racer")
	for round := 0; round < 8; round++ {
		d.setRole(t, "default", "racer", "admin")
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		tokens := map[string]string{}
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res := d.api(t, "POST", "/v1/projects/default/credentials",
					map[string]any{"type": "access-token", "user": "racer", "roles": []string{"admin"}})
				if res.status != http.StatusCreated && res.status != http.StatusForbidden {
					t.Errorf("create during a role change: %d %s", res.status, res.body)
				}
				var c api.Credential
				if res.status == http.StatusCreated && json.Unmarshal(res.body, &c) == nil {
					mu.Lock()
					tokens[c.ID] = c.Token
					mu.Unlock()
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			time.Sleep(time.Duration(round) * time.Millisecond)
			if res := d.api(t, "PUT", "/v1/projects/default/roles/racer/reader", nil); res.status != http.StatusOK {
				t.Errorf("lower role: %d %s", res.status, res.body)
			}
		}()
		close(start)
		wg.Wait()
		var l api.List[api.Credential]
		d.mustAPI(t, "GET", "/v1/projects/default/credentials?user=racer", nil, http.StatusOK, &l)
		if len(l.Items) > 0 {
			t.Errorf("round %d: user holds reader, yet %d credentials with roles [admin] survive the lowering (e.g. %s, status %s)",
				round, len(l.Items), l.Items[0].ID, l.Items[0].Status)
			// the harm: raising the user again revives them as admin tokens,
			// which the role-lowering cascade exists to prevent
			d.setRole(t, "default", "racer", "admin")
			res := d.bearer(t, tokens[l.Items[0].ID], "POST", secretsPath, map[string]any{"display_name": "revived", "payload": b64([]byte("x"))})
			if res.status == http.StatusCreated {
				t.Errorf("after raising the user back to admin, a surviving token created a secret (admin power)")
			}
			for _, x := range l.Items {
				d.mustAPI(t, "DELETE", "/v1/credentials/"+x.ID, nil, http.StatusNoContent, nil)
			}
			return
		}
	}
}

// TestIdentityUserDeleteRacesCredentialCreation: deleting a user deletes
// its credentials, also those being created at the same moment; nothing
// may be left that points at a user that is gone.
func TestIdentityUserDeleteRacesCredentialCreation(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	for round := 0; round < 16; round++ {
		d.newUser(t, "victim")
		d.setRole(t, "default", "victim", "reader")
		start := make(chan struct{})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var tokens []string
		for i := 0; i < 16; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				res := d.api(t, "POST", "/v1/projects/default/credentials", map[string]any{"type": "access-token", "user": "victim"})
				var c api.Credential
				if res.status == http.StatusCreated && json.Unmarshal(res.body, &c) == nil {
					mu.Lock()
					tokens = append(tokens, c.Token)
					mu.Unlock()
				}
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			time.Sleep(time.Duration(round) * time.Millisecond)
			if res := d.api(t, "DELETE", "/v1/users/victim", nil); res.status != http.StatusNoContent {
				t.Errorf("delete user: %d %s", res.status, res.body)
			}
		}()
		close(start)
		wg.Wait()
		res := d.api(t, "GET", "/v1/projects/default/credentials", nil)
		if res.status != http.StatusOK || !strings.Contains(string(res.body), `"items":[]`) {
			t.Errorf("round %d: after deleting the user, GET /v1/projects/default/credentials = %d %s; want 200 and no credentials", round, res.status, res.body)
			for _, tok := range tokens {
				if st := d.readsSecrets(t, tok); st != http.StatusUnauthorized {
					t.Errorf("a token of the deleted user answers %d", st)
				}
			}
			return
		}
	}
}
