package daemon

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/policy"
)

// identityEnv has project p1 and users alice (admin), bob (member), carol
// (reader) and dave (no role) bound to uids 1001-1004, and vm (reader) bound
// to vsock cid 42.
type identityEnv struct {
	*testEnv
	secret Secret
}

func uidPrincipal(uid uint32) Principal {
	return Principal{Channel: ChannelUnix, HasCred: true, UID: uid, GID: uid, PID: 10}
}

func newIdentityEnv(t testing.TB) *identityEnv {
	t.Helper()
	return newIdentityEnvKeys(t, newFakeKeys())
}

// newIdentityEnvKeys is newIdentityEnv with these keys.
func newIdentityEnvKeys(t testing.TB, keys *fakeKeys) *identityEnv {
	t.Helper()
	e := newEnvKeys(t, keys)
	ctx := context.Background()
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "p1"); err != nil {
		t.Fatal(err)
	}
	users := []struct {
		name string
		uid  uint32
		cid  uint32
		role string
	}{{"alice", 1001, 0, "admin"}, {"bob", 1002, 0, "member"}, {"carol", 1003, 0, "reader"}, {"dave", 1004, 0, ""}, {"vm", 0, 42, "reader"}}
	for _, u := range users {
		in := UserInput{Name: u.name}
		if u.uid != 0 {
			in.UnixUIDs = []uint32{u.uid}
		}
		if u.cid != 0 {
			in.VsockCIDs = []uint32{u.cid}
		}
		if _, err := e.svc.CreateUser(ctx, e.grant(t, ActManageUsers, Resource{}), in); err != nil {
			t.Fatal(err)
		}
		if u.role != "" {
			if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), u.name, u.role); err != nil {
				t.Fatal(err)
			}
		}
	}
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "s", Payload: []byte("p")})
	return &identityEnv{testEnv: e, secret: sec}
}

// policy saves a policy in project ("" global) as root.
func (e *identityEnv) policy(t testing.TB, project, name string, rules ...policy.Rule) Policy {
	t.Helper()
	p, err := e.svc.CreatePolicy(context.Background(), e.grant(t, ActManagePolicies, Resource{Project: project}), PolicyInput{Name: name, Document: policy.Document{Rules: rules}})
	if err != nil {
		t.Fatalf("create policy %s: %v", name, err)
	}
	return p
}

// credential issues a credential as root and returns it with its secret.
func (e *identityEnv) credential(t testing.TB, project string, in CredentialInput) (Credential, Issued) {
	t.Helper()
	c, iss, err := e.svc.CreateCredential(context.Background(), e.grant(t, ActCreateCredential, Resource{Project: project}), in)
	if err != nil {
		t.Fatalf("create credential: %v", err)
	}
	return c, iss
}

// bearer returns the principal a token stands for, or fails.
func (e *identityEnv) bearer(t testing.TB, token string) Principal {
	t.Helper()
	p, err := e.svc.Authenticate(context.Background(), anonPrincipal, token)
	if err != nil {
		t.Fatalf("authenticate: %v", err)
	}
	return p
}

func TestAuthorizationMatrix(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	bobAccess, bobTok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Roles: []string{"reader"}})
	bobBearer := e.bearer(t, bobTok.Token)
	principals := map[string]Principal{
		"root": rootPrincipal, "alice": uidPrincipal(1001), "bob": uidPrincipal(1002), "carol": uidPrincipal(1003),
		"dave": uidPrincipal(1004), "anon": uidPrincipal(5555), "vm": vsockGuest, "bob-token": bobBearer,
	}
	sec := Resource{Secret: e.secret.ID}
	tests := []struct {
		a       Action
		r       Resource
		allowed string // principals allowed, space-separated
	}{
		{ActReadStatus, Resource{}, "root alice bob carol dave anon vm bob-token"},
		{ActManageProjects, Resource{}, "root"},
		{ActManageUsers, Resource{}, "root"},
		{ActReadProject, Resource{Project: "p1"}, "root alice bob carol vm bob-token"},
		{ActReadProject, Resource{Project: "default"}, "root"},
		{ActManageProject, Resource{Project: "p1"}, "root alice"},
		{ActCreateCredential, Resource{Project: "p1"}, "root alice bob"},
		{ActReadSecret, sec, "root alice bob carol vm bob-token"},
		{ActManageSecret, sec, "root alice"},
		{ActReadUser, Resource{User: "bob"}, "root bob bob-token"},
		{ActManageUser, Resource{User: "bob"}, "root"},
		{ActReadCredential, Resource{Credential: bobAccess.ID}, "root alice bob carol vm bob-token"},
		{ActManageCredential, Resource{Credential: bobAccess.ID}, "root alice bob"},
		{ActListOwnCredentials, Resource{}, "root alice bob carol dave vm bob-token"},
		{ActListSessions, Resource{}, "root alice bob carol dave vm bob-token"},
		{ActManageRules, Resource{}, "root alice bob"},
	}
	for _, tt := range tests {
		for name, p := range principals {
			t.Run(tt.a.String()+"/"+name, func(t *testing.T) {
				_, err := e.svc.Authorize(ctx, p, tt.a, tt.r)
				want := strings.Contains(" "+tt.allowed+" ", " "+name+" ")
				if (err == nil) != want {
					t.Fatalf("allowed = %v, want %v (%v)", err == nil, want, err)
				}
				if err != nil && CodeOf(err) != CodeForbidden {
					t.Fatalf("denial code %s", CodeOf(err))
				}
			})
		}
	}
}

func TestCredentialRolesAndIssuers(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	grantAs := func(uid uint32) Grant {
		g, err := e.svc.Authorize(ctx, uidPrincipal(uid), ActCreateCredential, Resource{Project: "p1"})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	tests := []struct {
		name string
		as   uint32
		in   CredentialInput
		want string
	}{
		{"member for itself", 1002, CredentialInput{Type: CredAuthToken}, ""},
		{"member for itself by name", 1002, CredentialInput{Type: CredAuthToken, User: "bob"}, ""},
		{"member beyond its role", 1002, CredentialInput{Type: CredAuthToken, Roles: []string{"admin"}}, CodeForbidden},
		{"member for another", 1002, CredentialInput{Type: CredAuthToken, User: "carol"}, CodeForbidden},
		{"member unrestricted", 1002, CredentialInput{Type: CredAuthToken, Unrestricted: true}, CodeForbidden},
		{"admin for another within its role", 1001, CredentialInput{Type: CredOAuth2, User: "carol", Roles: []string{"reader"}}, ""},
		{"admin for another beyond its role", 1001, CredentialInput{Type: CredOAuth2, User: "carol", Roles: []string{"member"}}, CodeForbidden},
		// Outside the project: to a project admin, like a user that does not exist.
		{"user without a role", 1001, CredentialInput{Type: CredAuthToken, User: "dave"}, CodeNotFound},
		{"member, user without a role", 1002, CredentialInput{Type: CredAuthToken, User: "dave"}, CodeNotFound},
		{"unknown user", 1001, CredentialInput{Type: CredAuthToken, User: "zed"}, CodeNotFound},
		{"bad type", 1001, CredentialInput{Type: "password"}, CodeInvalidCredential},
		{"bad role name", 1001, CredentialInput{Type: CredAuthToken, Roles: []string{"owner"}}, CodeInvalidRole},
		{"past expiry", 1001, CredentialInput{Type: CredAuthToken, ExpireIn: "-5m"}, CodeInvalidExpiry},
		{"too long expiry", 1001, CredentialInput{Type: CredAuthToken, ExpireIn: "3years"}, CodeInvalidExpiry},
		{"one time and max authn", 1001, CredentialInput{Type: CredAuthToken, OneTime: true, MaxAuthn: 3}, CodeInvalidCredential},
		{"empty roles", 1001, CredentialInput{Type: CredAuthToken, Roles: []string{}}, CodeInvalidCredential},
		{"bad session type", 1001, CredentialInput{Type: CredAuthToken, SessionType: "web"}, CodeInvalidCredential},
		{"bad rule", 1001, CredentialInput{Type: CredAuthToken, AccessRules: []AccessRule{{Service: "x", Method: "GET", Path: "nope"}}}, CodeInvalidAccessRule},
		{"unknown saved rule", 1001, CredentialInput{Type: CredAuthToken, AccessRules: []AccessRule{{ID: newID()}}}, CodeInvalidAccessRule},
		{"bad name", 1001, CredentialInput{Type: CredAuthToken, Name: "Bad Name"}, CodeInvalidName},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, iss, err := e.svc.CreateCredential(ctx, grantAs(tt.as), tt.in)
			wantCode(t, err, tt.want)
			if err != nil {
				return
			}
			if c.Status != StatusActive || c.TokenID == "" || (iss.Token == "" && iss.ClientSecret == "") {
				t.Fatalf("credential %+v issued %v", c, iss)
			}
			if tt.in.Type == CredOAuth2 && (iss.ClientID == "" || !strings.HasPrefix(iss.ClientSecret, "cfo_")) {
				t.Fatalf("oauth2 issued %v", iss)
			}
		})
	}
	// Names are unique per project.
	e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", Name: "ci"})
	_, _, err := e.svc.CreateCredential(ctx, e.grant(t, ActCreateCredential, Resource{Project: "p1"}), CredentialInput{Type: CredAuthToken, User: "bob", Name: "ci"})
	wantCode(t, err, CodeAlreadyExists)
}

func TestLoginCountsAtomically(t *testing.T) {
	e := newIdentityEnv(t)
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", MaxAuthn: 5})
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, _, err := e.svc.Login(context.Background(), iss.Token); err == nil {
				mu.Lock()
				ok++
				mu.Unlock()
			} else if CodeOf(err) != CodeUnauthenticated {
				t.Errorf("login: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 5 {
		t.Fatalf("%d logins succeeded, want exactly 5", ok)
	}
}

func TestTokensAndSessions(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	e.policy(t, "p1", "p1", policy.Rule{Effect: policy.Deny, Condition: `request.method == "DELETE"`})
	e.policy(t, "p1", "p2", policy.Rule{Effect: policy.Deny, Condition: `request.method == "PATCH"`})
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", Policies: []string{"p2", "p1"}})
	sess, tok, err := e.svc.Login(ctx, iss.Token)
	wantCode(t, err, "")
	if !strings.HasPrefix(tok, "cfs_") || sess.CredentialID != cred.ID || len(sess.Policies) != 2 {
		t.Fatalf("session %+v token prefix %q", sess, tok[:4])
	}
	p := e.bearer(t, tok)
	if p.Token.SessionID != sess.ID || p.Token.ProjectID != cred.ProjectID {
		t.Fatalf("identity %+v", p.Token)
	}
	// An auth token is not a bearer; a session token does not log in.
	for _, bad := range []string{iss.Token, "cfs_garbage", "", corrupt(tok)} {
		if _, err := e.svc.Authenticate(ctx, anonPrincipal, bad); CodeOf(err) != CodeUnauthenticated || MessageOf(err) != "invalid or expired token" {
			t.Fatalf("bad bearer: %v", err)
		}
	}
	_, _, err = e.svc.Login(ctx, tok)
	wantCode(t, err, CodeUnauthenticated)

	// Rotation without grace: the old auth token stops at once.
	g := e.grant(t, ActManageCredential, Resource{Credential: cred.ID})
	rot, iss2, err := e.svc.RotateCredential(ctx, g, CredentialRotate{})
	wantCode(t, err, "")
	if rot.TokenID == cred.TokenID || iss2.Token == iss.Token {
		t.Fatal("rotation kept the token id")
	}
	_, _, err = e.svc.Login(ctx, iss.Token)
	wantCode(t, err, CodeUnauthenticated)
	_, _, err = e.svc.Login(ctx, iss2.Token)
	wantCode(t, err, "")
	// With grace: both work until the grace ends.
	_, iss3, err := e.svc.RotateCredential(ctx, g, CredentialRotate{Grace: 10 * time.Minute})
	wantCode(t, err, "")
	_, _, err = e.svc.Login(ctx, iss2.Token)
	wantCode(t, err, "")
	_, _, err = e.svc.Login(ctx, iss3.Token)
	wantCode(t, err, "")
	later := time.Now().Add(11 * time.Minute)
	e.svc.now = func() time.Time { return later }
	_, _, err = e.svc.Login(ctx, iss2.Token)
	wantCode(t, err, CodeUnauthenticated)
	_, _, err = e.svc.Login(ctx, iss3.Token)
	wantCode(t, err, "")
	e.svc.now = func() time.Time { return time.Now().UTC() }

	// Revoking the credential ends its sessions.
	_, err = e.svc.RevokeCredential(ctx, g)
	wantCode(t, err, "")
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, tok); CodeOf(err) != CodeUnauthenticated {
		t.Fatalf("session of a revoked credential: %v", err)
	}
	got, _ := e.svc.GetCredential(ctx, e.grant(t, ActReadCredential, Resource{Credential: cred.ID}))
	if got.Status != StatusRevoked {
		t.Fatalf("status %s", got.Status)
	}
}

func TestCascades(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, member := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Roles: []string{"member"}})
	readerCred, reader := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Roles: []string{"reader"}})
	_, admin := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
	// admin -> reader drops credentials with member or admin.
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "alice", "reader"); err != nil {
		t.Fatal(err)
	}
	for name, tok := range map[string]string{"member": member.Token, "admin": admin.Token} {
		if _, err := e.svc.Authenticate(ctx, anonPrincipal, tok); err == nil {
			t.Errorf("%s credential survived the downgrade", name)
		}
	}
	p := e.bearer(t, reader.Token)

	// Disabling the user stops its tokens; enabling brings them back.
	disable, enable := true, false
	ug := e.grant(t, ActManageUser, Resource{User: "alice"})
	if _, err := e.svc.PatchUser(ctx, ug, UserPatch{Disabled: &disable}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, reader.Token); err == nil {
		t.Fatal("a disabled user's token works")
	}
	if _, err := e.svc.Authorize(ctx, p, ActReadProject, Resource{Project: "p1"}); err == nil {
		t.Fatal("a principal of a disabled user is still authorized")
	}
	c, _ := e.svc.GetCredential(ctx, e.grant(t, ActReadCredential, Resource{Credential: readerCred.ID}))
	if c.Status != StatusDisabled {
		t.Fatalf("status %s, want disabled", c.Status)
	}
	if _, err := e.svc.PatchUser(ctx, ug, UserPatch{Disabled: &enable}); err != nil {
		t.Fatal(err)
	}
	e.bearer(t, reader.Token)

	// Removing the role drops the rest.
	if err := e.svc.RemoveRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "alice", "reader"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, reader.Token); err == nil {
		t.Fatal("credential survived the role removal")
	}

	// Deleting a user deletes its credentials and sessions.
	_, bobAuth := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob"})
	_, bobSess, err := e.svc.Login(ctx, bobAuth.Token)
	wantCode(t, err, "")
	if err := e.svc.DeleteUser(ctx, e.grant(t, ActManageUser, Resource{User: "bob"})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, bobSess); err == nil {
		t.Fatal("session of a deleted user works")
	}
	var left int
	e.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableCredentials, kv.Query{}, func(_ string, decode func(any) error) error {
			var rec credentialRecord
			decode(&rec)
			var u userRecord
			if tx.Get(tableUsers, rec.UserID, &u) != nil {
				left++
			}
			return nil
		})
	})
	if left != 0 {
		t.Fatalf("%d credentials of deleted users remain", left)
	}
}

func TestRestrictedBearers(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, plain := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
	_, unres := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Unrestricted: true})
	_, err := e.svc.Authorize(ctx, e.bearer(t, plain.Token), ActCreateCredential, Resource{Project: "p1"})
	wantCode(t, err, CodeForbidden)
	_, err = e.svc.Authorize(ctx, e.bearer(t, unres.Token), ActCreateCredential, Resource{Project: "p1"})
	wantCode(t, err, "")

	// Rules with service coffer restrict calls to coffer itself.
	_, ruled := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", AccessRules: []AccessRule{
		{Service: "coffer", Method: "GET", Path: "/v1/secrets/*"},
		{Service: "billing", Method: "POST", Path: "/invoices/**"},
	}})
	p := e.bearer(t, ruled.Token)
	_, err = e.svc.Authorize(ctx, p, ActReadSecret, Resource{Secret: e.secret.ID, Method: "GET", Path: "/v1/secrets/" + e.secret.ID})
	wantCode(t, err, "")
	_, err = e.svc.Authorize(ctx, p, ActReadProject, Resource{Project: "p1", Method: "GET", Path: "/v1/projects/p1/secrets"})
	wantCode(t, err, CodeForbidden)

	d, err := e.svc.AuthorizeCall(ctx, Call{Token: ruled.Token, Service: "billing", Method: "POST", Path: "/invoices/2026/11"})
	wantCode(t, err, "")
	if !d.Allowed || d.User != "alice" || d.Project != "p1" {
		t.Fatalf("decision %+v", d)
	}
	d, _ = e.svc.AuthorizeCall(ctx, Call{Token: ruled.Token, Service: "billing", Method: "GET", Path: "/invoices/2026/11"})
	if d.Allowed {
		t.Fatalf("decision %+v", d)
	}
	d, _ = e.svc.AuthorizeCall(ctx, Call{Token: "cft_nonsense", Service: "billing", Method: "POST", Path: "/invoices/1"})
	if d.Allowed || d.Reason != "invalid or expired token" || d.User != "" {
		t.Fatalf("decision for a bad token %+v", d)
	}
	// An empty rule list allows nothing.
	_, none := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", AccessRules: []AccessRule{}})
	d, _ = e.svc.AuthorizeCall(ctx, Call{Token: none.Token, Service: "billing", Method: "POST", Path: "/invoices/1"})
	if d.Allowed {
		t.Fatal("an empty rule list allowed a call")
	}
}

func TestOAuth2AndIntrospection(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	e.policy(t, "p1", "billing", policy.Rule{Effect: policy.Deny, Condition: `request.service == "payroll"`})
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob", Policies: []string{"billing"}})
	at, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
	wantCode(t, err, "")
	if !LooksLikeJWT(at.Token) || at.ExpiresIn <= 0 || at.Scope != "member reader" {
		t.Fatalf("access token %+v", at)
	}
	claims, err := VerifyJWT(at.Token, e.svc.jwtKeys(), time.Now())
	if err != nil || claims.ClientID != iss.ClientID || claims.JTI != at.SessionID || claims.Policies[0] != "billing" {
		t.Fatalf("claims %+v %v", claims, err)
	}
	p := e.bearer(t, at.Token)
	if p.Token.Kind != SessionOAuth2 {
		t.Fatalf("kind %s", p.Token.Kind)
	}
	in, err := e.svc.Introspect(ctx, at.Token)
	if err != nil || !in.Active || in.CredentialID != cred.ID || in.Username != "bob" || in.TokenType != "oauth2-access-token" {
		t.Fatalf("introspection %+v %v", in, err)
	}
	// Scope narrows; unknown scope and bad clients are refused.
	at2, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "reader")
	if err != nil || at2.Scope != "reader" {
		t.Fatalf("scoped %+v %v", at2, err)
	}
	_, err = e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "admin")
	wantCode(t, err, CodeInvalidScope)
	_, err = e.svc.ClientCredentials(ctx, "other", iss.ClientSecret, "")
	wantCode(t, err, CodeInvalidClient)
	_, err = e.svc.ClientCredentials(ctx, iss.ClientID, "cfo_bad", "")
	wantCode(t, err, CodeInvalidClient)
	// Revoking the JWT's session makes coffer refuse it.
	if err := e.svc.RevokeSession(ctx, e.grant(t, ActManageSession, Resource{Session: at.SessionID})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, at.Token); err == nil {
		t.Fatal("a JWT of a revoked session works")
	}
	for _, tok := range []string{at.Token, "garbage", corrupt(iss.ClientSecret)} {
		in, err := e.svc.Introspect(ctx, tok)
		if err != nil || in.Active || in.Username != "" {
			t.Fatalf("introspection of a dead token: %+v %v", in, err)
		}
	}
	in, _ = e.svc.Introspect(ctx, iss.ClientSecret)
	if !in.Active || in.TokenType != "oauth2-client-secret" {
		t.Fatalf("client secret introspection %+v", in)
	}
	if e.keys.signs != 1+2 { // the start-up check, then one per issued token
		t.Fatalf("%d HSM signatures for 2 issued tokens (refused clients must not cost one)", e.keys.signs-1)
	}
}

func TestSavedRules(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	g := e.grant(t, ActManageRules, Resource{})
	r, err := e.svc.CreateAccessRule(ctx, g, AccessRule{Service: "billing", Method: "GET", Path: "/invoices/{id}"})
	wantCode(t, err, "")
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", AccessRules: []AccessRule{{ID: r.ID}}})
	d, _ := e.svc.AuthorizeCall(ctx, Call{Token: iss.Token, Service: "billing", Method: "GET", Path: "/invoices/7"})
	if !d.Allowed {
		t.Fatalf("saved rule: %+v", d)
	}
	wantCode(t, e.svc.DeleteAccessRule(ctx, g, r.ID), CodeConflict)
	_, err = e.svc.CreateAccessRule(ctx, g, AccessRule{Service: "billing", Method: "FETCH", Path: "/x"})
	wantCode(t, err, CodeInvalidAccessRule)
}

func TestNoTokenInStoreOrLogs(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, a := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob"})
	_, o := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	_, c := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	_, s, err := e.svc.Login(ctx, a.Token)
	wantCode(t, err, "")
	e.svc.Login(ctx, "cfa_"+a.Token[4:len(a.Token)-2]+"zz")
	e.svc.Authenticate(ctx, anonPrincipal, c.Token[:20])
	secrets := []string{a.Token, o.ClientSecret, c.Token, s}
	e.svc.Close()
	for _, tok := range secrets {
		body := tok[4:] // the part after the prefix
		if strings.Contains(e.logs.String(), body[22:]) {
			t.Errorf("log contains a token secret")
		}
		filepath.Walk(e.dir, func(path string, fi os.FileInfo, err error) error {
			if err != nil || fi.IsDir() {
				return err
			}
			b, _ := os.ReadFile(path)
			if bytes.Contains(b, []byte(body)) {
				t.Errorf("%s holds a token in the clear", path)
			}
			return nil
		})
	}
}

// corrupt changes the last character of a token.
func corrupt(tok string) string {
	last := byte('0')
	if tok[len(tok)-1] == '0' {
		last = '1'
	}
	return tok[:len(tok)-1] + string(last)
}

func TestMaintenance(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", ExpireIn: "3days"})
	e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", ExpireIn: "30days"})
	exp := time.Now().Add(48 * time.Hour)
	e.createSecret(t, "p1", SecretInput{DisplayName: "soon", Payload: []byte("p"), ExpiresAt: &exp})
	if n := e.svc.WarnExpiring(ctx); n != 2 {
		t.Fatalf("warned about %d, want 2 (one credential, one secret)", n)
	}
	if !strings.Contains(e.logs.String(), "credential expires soon") || !strings.Contains(e.logs.String(), cred.ID) {
		t.Fatal("no warning logged")
	}
	_, tok, err := e.svc.Login(ctx, iss.Token)
	wantCode(t, err, "")
	if _, _, err := e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: cred.ID}), CredentialRotate{Grace: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if n, err := e.svc.Sweep(ctx); err != nil || n != 0 {
		t.Fatalf("sweep of live records deleted %d (%v)", n, err)
	}
	e.svc.now = func() time.Time { return time.Now().Add(2 * time.Hour).UTC() }
	n, err := e.svc.Sweep(ctx)
	if err != nil || n != 2 { // the login session and the token past its grace
		t.Fatalf("sweep deleted %d (%v), want 2", n, err)
	}
	e.svc.now = func() time.Time { return time.Now().UTC() }
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, tok); err == nil {
		t.Fatal("a swept session works")
	}
}

func TestBearerCache(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", AccessRules: []AccessRule{{Service: "svc", Method: "GET", Path: "/x"}}})
	e.bearer(t, iss.Token)
	// A wrong secret under the same public id never hits the entry.
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, corrupt(iss.Token)); err == nil {
		t.Fatal("a corrupted token authenticated")
	}
	// Revocation is seen by the very next request.
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: cred.ID})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, iss.Token); err == nil {
		t.Fatal("a revoked token authenticated from the cache")
	}
	if d, _ := e.svc.AuthorizeCall(ctx, Call{Token: iss.Token, Service: "svc", Method: "GET", Path: "/x"}); d.Allowed {
		t.Fatal("a revoked token was authorized from the cache")
	}
	// Lowering the user's role narrows a cached token at once.
	_, iss2 := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Roles: []string{"reader"}})
	p := e.bearer(t, iss2.Token)
	if _, err := e.svc.Authorize(ctx, p, ActReadProject, Resource{Project: "p1"}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RemoveRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "bob", "member"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authorize(ctx, p, ActReadProject, Resource{Project: "p1"}); err == nil {
		t.Fatal("a principal kept its role after the role was removed")
	}
	// A hit does not read the store: with the store closed, a cached token
	// still answers /v1/authorize; after any identity write it cannot.
	_, iss3 := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", AccessRules: []AccessRule{{Service: "svc", Method: "GET", Path: "/x"}}})
	if d, err := e.svc.AuthorizeCall(ctx, Call{Token: iss3.Token, Service: "svc", Method: "GET", Path: "/x"}); err != nil || !d.Allowed {
		t.Fatalf("warm-up: %+v %v", d, err)
	}
	e.store.Close()
	if d, err := e.svc.AuthorizeCall(ctx, Call{Token: iss3.Token, Service: "svc", Method: "GET", Path: "/x"}); err != nil || !d.Allowed {
		t.Fatalf("cached decision: %+v %v", d, err)
	}
	e.svc.committed(kv.Commit{Changed: []string{tableUsers}}) // as a commit that changed a user tells it
	if _, err := e.svc.AuthorizeCall(ctx, Call{Token: iss3.Token, Service: "svc", Method: "GET", Path: "/x"}); CodeOf(err) != CodeStoreUnavailable {
		t.Fatalf("after an identity change the cache answered: %v", err)
	}
}

// TestTokensStayWithinThemselves: a token reaches nothing beyond its own
// project, roles, rules and lifetime — not through "my own credential", not
// by minting a stronger one, not by delivery.
func TestTokensStayWithinThemselves(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	admin := e.grant(t, ActManageProjects, Resource{})
	if _, err := e.svc.CreateProject(ctx, admin, "p2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p2"}), "alice", "admin"); err != nil {
		t.Fatal(err)
	}
	p2cred, _ := e.credential(t, "p2", CredentialInput{Type: CredAuthToken, User: "alice"})
	_, tok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Roles: []string{"member"}, Unrestricted: true,
		AccessRules: []AccessRule{{Service: "coffer", Method: "POST", Path: "/v1/projects/p1/credentials"}, {Service: "svc", Method: "GET", Path: "/x"}}, ExpireIn: "1h"})
	p := e.bearer(t, tok.Token)

	// Its user's credential in another project is out of reach.
	for _, a := range []Action{ActReadCredential, ActManageCredential} {
		if _, err := e.svc.Authorize(ctx, p, a, Resource{Credential: p2cred.ID}); err == nil {
			t.Errorf("%s of another project's credential allowed", a)
		}
	}
	// What it mints is no stronger than itself.
	g, err := e.svc.Authorize(ctx, p, ActCreateCredential, Resource{Project: "p1", Method: "POST", Path: "/v1/projects/p1/credentials"})
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := e.svc.CreateCredential(ctx, g, CredentialInput{Type: CredAccessToken})
	if err != nil {
		t.Fatal(err)
	}
	if maxRole(c.Roles) != RoleMember || len(c.AccessRules) != 2 || c.ExpiresAt == nil || c.ExpiresAt.After(time.Now().Add(time.Hour+time.Minute)) {
		t.Fatalf("minted %+v", c)
	}
	for name, in := range map[string]CredentialInput{
		"more roles":  {Type: CredAccessToken, Roles: []string{"admin"}},
		"other rules": {Type: CredAccessToken, AccessRules: []AccessRule{{Service: "svc", Method: "POST", Path: "/x"}}},
		"no rules":    {Type: CredAccessToken, AccessRules: []AccessRule{}},
	} {
		_, _, err := e.svc.CreateCredential(ctx, g, in)
		if name == "no rules" {
			wantCode(t, err, "") // an empty list allows less, not more
			continue
		}
		if CodeOf(err) != CodeForbidden {
			t.Errorf("%s: %v, want forbidden", name, err)
		}
	}
	c2, _, err := e.svc.CreateCredential(ctx, g, CredentialInput{Type: CredAccessToken, ExpireIn: "30days"})
	if err != nil || c2.ExpiresAt.After(time.Now().Add(time.Hour+time.Minute)) {
		t.Fatalf("expiry not capped: %+v %v", c2.ExpiresAt, err)
	}
	// Own lists stay inside the token's project.
	_, plain := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
	list, _, err := e.svc.ListCredentials(ctx, e.mustAuthorize(t, e.bearer(t, plain.Token), ActListOwnCredentials, Resource{}), CredentialFilter{}, Page{})
	if err != nil {
		t.Fatal(err)
	}
	for _, x := range list {
		if x.Project != "p1" {
			t.Fatalf("a token's own list shows %s of project %s", x.ID, x.Project)
		}
	}
	// Delivery too.
	sec := e.createSecret(t, "p2", SecretInput{DisplayName: "p2 secret", Payload: []byte("p2-payload")})
	if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "alice", Name: "p2pass"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Deliver(ctx, e.bearer(t, tok.Token), DeliveryRequest{Name: "p2pass"}); CodeOf(err) != CodeNotFound {
		t.Fatalf("a p1 token received a p2 secret: %v", err)
	}
	if d, err := e.svc.Deliver(ctx, uidPrincipal(1001), DeliveryRequest{Name: "p2pass"}); err != nil || string(d.Payload) != "p2-payload" {
		t.Fatalf("alice by uid: %q %v", d.Payload, err)
	}
}

func (e *identityEnv) mustAuthorize(t *testing.T, p Principal, a Action, r Resource) Grant {
	t.Helper()
	g, err := e.svc.Authorize(context.Background(), p, a, r)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestUnitBindingsNeedASystemAdmin(t *testing.T) {
	e := newIdentityEnv(t)
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "x", Payload: []byte("p")})
	g := e.mustAuthorize(t, uidPrincipal(1001), ActManageBindings, Resource{Secret: sec.ID}) // alice, project admin
	_, err := e.svc.CreateBinding(context.Background(), g, BindingInput{Unit: "nginx.service", Credential: "tls-key"})
	wantCode(t, err, CodeForbidden)
	if _, err := e.svc.CreateBinding(context.Background(), g, BindingInput{User: "bob", Name: "x"}); err != nil {
		t.Fatalf("a project admin binds users: %v", err)
	}
}

// TestDeletesRaceCreates: deleting a project, secret or user while things
// are created in or for it leaves nothing behind that points at it.
func TestDeletesRaceCreates(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	admin := e.grant(t, ActManageProjects, Resource{})
	for round := range 20 {
		name := fmt.Sprintf("race%d", round)
		if _, err := e.svc.CreateProject(ctx, admin, name); err != nil {
			t.Fatal(err)
		}
		g := e.grant(t, ActManageProject, Resource{Project: name})
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				e.svc.CreateSecret(ctx, g, SecretInput{DisplayName: "x", Payload: []byte("p")})
			}()
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			time.Sleep(time.Duration(round%5) * time.Millisecond)
			e.svc.DeleteProject(ctx, admin, name)
		}()
		wg.Wait()
	}
	orphans := 0
	e.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableSecrets, kv.Query{}, func(_ string, decode func(any) error) error {
			var rec secretRecord
			decode(&rec)
			if tx.Get(tableProjects, rec.ProjectID, &projectRecord{}) != nil {
				orphans++
			}
			return nil
		})
	})
	if orphans != 0 {
		t.Fatalf("%d secrets left in deleted projects", orphans)
	}
}

// A token sees its own project only, in every list of its user's objects.
func TestTokenListsStayInItsProject(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "p2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p2"}), "alice", "admin"); err != nil {
		t.Fatal(err)
	}
	other, _ := e.credential(t, "p2", CredentialInput{Type: CredAccessToken, User: "alice"})
	_, tok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
	p1, err := e.svc.findProject(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	for name, p := range map[string]Principal{"alice": uidPrincipal(1001), "p1 token": e.bearer(t, tok.Token)} {
		wantOther := name == "alice"
		g, err := e.svc.Authorize(ctx, p, ActListSessions, Resource{})
		wantCode(t, err, "")
		sessions, _, err := e.svc.ListSessions(ctx, g, Page{})
		wantCode(t, err, "")
		sawOther := false
		for _, s := range sessions {
			if s.ProjectID != p1.ID {
				sawOther = true
			}
		}
		if sawOther != wantOther {
			t.Errorf("%s: sessions of another project listed = %v, want %v", name, sawOther, wantOther)
		}
		g, err = e.svc.Authorize(ctx, p, ActListOwnCredentials, Resource{})
		wantCode(t, err, "")
		creds, _, err := e.svc.ListCredentials(ctx, g, CredentialFilter{}, Page{})
		wantCode(t, err, "")
		sawOther = slices.ContainsFunc(creds, func(c Credential) bool { return c.ID == other.ID })
		if sawOther != wantOther {
			t.Errorf("%s: credentials of another project listed = %v, want %v", name, sawOther, wantOther)
		}
	}
}
