package e2e

// End-to-end tests of the workflows of the seed systems, as their users
// type them (issue 14, part 2): each runs the real CLI against the real
// daemon.

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// credList decodes the -o json output of cred list into credential names.
func credListNames(t *testing.T, out string) []string {
	t.Helper()
	var l api.List[api.Credential]
	if err := json.Unmarshal([]byte(out), &l); err != nil {
		t.Fatalf("cred list output is not a list: %v\n%s", err, out)
	}
	names := make([]string, 0, len(l.Items))
	for _, c := range l.Items {
		names = append(names, c.Name)
	}
	slices.Sort(names)
	return names
}

// TestWorkflowCredCreateAsTyped: cred create without --type issues an
// auth token, takes its name as the argument, and --rotate NAME rotates it.
func TestWorkflowCredCreateAsTyped(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "my-user")
	d.setRole(t, "default", "my-user", "reader")
	d.newUser(t, "someone-else")
	d.setRole(t, "default", "someone-else", "reader")

	var generated api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--user", "my-user").stdout, &generated)
	if generated.Type != "auth-token" || !strings.HasPrefix(generated.Token, "cfa_") || !strings.HasPrefix(generated.Name, "my-user-auth-token-") {
		t.Errorf("cred create --user my-user made %s %q with a %s token, want an auth token", generated.Type, generated.Name, tokenKind(generated.Token))
	}

	var named api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--user", "my-user", "my-auth-token").stdout, &named)
	if named.Name != "my-auth-token" || named.Type != "auth-token" {
		t.Fatalf("cred create --user my-user my-auth-token made %s %q", named.Type, named.Name)
	}
	d.login(t, named.Token)

	r := d.mustCLI(t, "", "cred", "create", "--rotate", "my-auth-token")
	if !strings.Contains(r.stdout, "cfa_") || !strings.Contains(r.stderr, "save this token now") {
		t.Errorf("cred create --rotate printed no new token:\n%s", r)
	}
	rotated := d.getCred(t, named.ID)
	if rotated.TokenID == named.TokenID || rotated.RotatedAt == nil {
		t.Errorf("after cred create --rotate: token id %s (was %s), rotated_at %v", rotated.TokenID, named.TokenID, rotated.RotatedAt)
	}
	wantUnauthenticated(t, "the token before the rotation", d.bearer(t, named.Token, "POST", "/v1/auth/login", nil))

	// The other spelling, with the flag after the name and the user
	// narrowing the lookup.
	var again api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "my-auth-token", "--rotate", "--user", "my-user").stdout, &again)
	if again.ID != named.ID || again.TokenID == rotated.TokenID {
		t.Errorf("second rotation: %s token id %s", again.ID, again.TokenID)
	}
	d.login(t, again.Token)
	if r := d.cli(t, "", "cred", "create", "--rotate", "my-auth-token", "--user", "someone-else"); r.code != 1 || !strings.Contains(r.stderr, `no credential named "my-auth-token"`) {
		t.Errorf("--rotate with another user's name lookup:\n%s", r)
	}
}

// TestWorkflowCredListAsAdmin: cred list without flags shows a system
// admin every credential and a project admin those of its projects;
// --user works without --project.
func TestWorkflowCredListAsAdmin(t *testing.T) {
	t.Parallel()
	h := newTenantHost(t)
	h.newCred(t, "alpha", map[string]any{"type": "auth-token", "user": "alpha-admin", "name": "alpha-own"})
	h.newCred(t, "beta", map[string]any{"type": "auth-token", "user": "beta-admin", "name": "beta-own"})
	h.newCred(t, "beta", map[string]any{"type": "access-token", "user": "web", "name": "web-bearer"})

	all := credListNames(t, h.mustCLI(t, "", "-o", "json", "cred", "list").stdout)
	if want := []string{"alpha-own", "beta-own", "web-bearer"}; !slices.Equal(all, want) {
		t.Errorf("root: cred list shows %v, want %v", all, want)
	}
	if r := h.mustCLI(t, "", "cred", "list"); !strings.Contains(r.stdout, "web-bearer") || !strings.Contains(r.stdout, "alpha-own") {
		t.Errorf("root: the cred list table misses credentials:\n%s", r.stdout)
	}
	if got := credListNames(t, h.mustCLI(t, "", "-o", "json", "cred", "list", "--user", "web").stdout); !slices.Equal(got, []string{"web-bearer"}) {
		t.Errorf("root: cred list --user web shows %v", got)
	}
	if r := h.cli(t, "", "cred", "list", "--user", "nobody"); r.code != 1 || !strings.Contains(r.stderr, "not_found") {
		t.Errorf("root: cred list --user nobody:\n%s", r)
	}

	for _, c := range []struct {
		uid  int
		args []string
		want []string
	}{
		{uidBetaAdmin, nil, []string{"beta-own", "web-bearer"}},
		{uidBetaAdmin, []string{"--user", "web"}, []string{"web-bearer"}},
		{uidBetaAdmin, []string{"--user", "alpha-admin"}, []string{}},
		{uidAlphaAdmin, nil, []string{"alpha-own"}},
		{uidWeb, nil, []string{"web-bearer"}},
		{uidWeb, []string{"--user", "beta-admin"}, []string{}},
		{uidWeb, []string{"--user", "nobody"}, []string{}},
	} {
		code, out, errOut := h.as(t, c.uid, "", append([]string{"cred", "list"}, c.args...)...)
		if code != 0 {
			t.Errorf("uid %d: cred list %v: exit %d: %s", c.uid, c.args, code, errOut)
			continue
		}
		if got := credListNames(t, out); !slices.Equal(got, c.want) {
			t.Errorf("uid %d: cred list %v shows %v, want %v", c.uid, c.args, got, c.want)
		}
	}
	// The project form is unchanged: beta's admin may not list alpha's.
	if code, _, errOut := h.as(t, uidBetaAdmin, "", "cred", "list", "--project", "alpha"); code != 1 || !strings.Contains(errOut, "forbidden") {
		t.Errorf("beta's admin lists alpha's credentials: exit %d %s", code, errOut)
	}
}

// TestWorkflowRotateUsedUpOneTime: rotating a used-up one-time credential
// says that the count starts again, and its new token works once.
func TestWorkflowRotateUsedUpOneTime(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "boot")
	d.setRole(t, "default", "boot", "reader")
	var cr api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--user", "boot", "--one-time", "bootstrap").stdout, &cr)
	d.login(t, cr.Token)
	if got := d.getCred(t, cr.ID); got.Status != "exhausted" {
		t.Fatalf("after its one login: %s", got.Status)
	}

	r := d.mustCLI(t, "", "cred", "rotate", "bootstrap")
	if !strings.Contains(r.stderr, "the authentication count starts again: the new token may authenticate 1 time") {
		t.Errorf("rotation does not say that the count starts again:\n%s", r)
	}
	if !strings.Contains(r.stdout, "0 of 1") || !strings.Contains(r.stdout, "active") {
		t.Errorf("rotated credential not shown active with 0 of 1 authentications:\n%s", r.stdout)
	}
	var rotated api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--rotate", "bootstrap").stdout, &rotated)
	if rotated.Status != "active" || rotated.AuthnCount != 0 {
		t.Fatalf("rotated: %s, authn_count %d", rotated.Status, rotated.AuthnCount)
	}
	wantUnauthenticated(t, "the used-up token", d.bearer(t, cr.Token, "POST", "/v1/auth/login", nil))
	d.login(t, rotated.Token)
	wantUnauthenticated(t, "the new one-time token, twice", d.bearer(t, rotated.Token, "POST", "/v1/auth/login", nil))
	if got := d.getCred(t, cr.ID); got.Status != "exhausted" || got.AuthnCount != 1 {
		t.Errorf("after the new token's login: %s, authn_count %d", got.Status, got.AuthnCount)
	}
}

// TestWorkflowAccessTokenLifetime: the user's access-token TTL bounds the
// sessions of its logins and its OAuth2 JWTs, and not its access tokens,
// which last until their --expire-in or, without one, until revoked — as
// the help and the README say. The README's access-token example works.
func TestWorkflowAccessTokenLifetime(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.mustCLI(t, "", "user", "create", "billing-svc", "--kind", "workload", "--access-token-ttl", "1m")
	d.setRole(t, "default", "billing-svc", "reader")
	if r := d.mustCLI(t, "", "user", "create", "--help"); !strings.Contains(r.stdout, "access-token credentials last until their --expire-in instead") {
		t.Errorf("user create --help does not say what the TTL leaves out:\n%s", r.stdout)
	}
	ttl := time.Minute
	near := func(what string, exp int64, want time.Time) {
		t.Helper()
		if d := time.Unix(exp, 0).Sub(want); d < -5*time.Second || d > 5*time.Second {
			t.Errorf("%s expires at %s, want about %s", what, time.Unix(exp, 0).UTC(), want.UTC())
		}
	}

	// The README's example, with a real saved rule.
	var rule api.SavedRule
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "access-rule", "create", "--service", "billing", "--method", "POST", "--path", "/invoices/{id}/pay").stdout, &rule)
	var bounded api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--type", "access-token", "--user", "billing-svc",
		"--access-rule-id", rule.ID, "--expire-in", "90days").stdout, &bounded)
	_, in := d.introspect(t, bounded.Token)
	if !in.Active {
		t.Fatal("the README's access token is not active")
	}
	near("an access token with --expire-in 90days", in.ExpiresAt, time.Now().Add(90*24*time.Hour))
	var dec api.Decision
	d.mustAPI(t, "POST", "/v1/authorize", map[string]string{"token": bounded.Token, "service": "billing", "method": "POST", "path": "/invoices/7/pay"}, http.StatusOK, &dec)
	if !dec.Allowed {
		t.Errorf("the README's access token is not allowed its rule: %+v", dec)
	}

	var static api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--type", "access-token", "--user", "billing-svc").stdout, &static)
	if _, in := d.introspect(t, static.Token); !in.Active || in.ExpiresAt != 0 {
		t.Errorf("an access token without --expire-in: active %v, exp %d; want active without an expiry", in.Active, in.ExpiresAt)
	}

	var login api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--user", "billing-svc").stdout, &login)
	s := d.login(t, login.Token)
	near("a login's session", s.ExpiresAt.Unix(), time.Now().Add(ttl))

	var client api.Credential
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "cred", "create", "--type", "oauth2", "--user", "billing-svc").stdout, &client)
	if tr := d.oauthToken(t, client.ClientID, client.ClientSecret); tr.ExpiresIn > 60 || tr.ExpiresIn < 55 {
		t.Errorf("an OAuth2 JWT expires in %ds, want the user's 60s", tr.ExpiresIn)
	}
}

// TestWorkflowApplicationCredentialJSON: a client of application
// credentials names roles as objects and sends expires_at as an RFC 3339
// time; both are accepted, and mistakes are told precisely.
func TestWorkflowApplicationCredentialJSON(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "app")
	d.setRole(t, "default", "app", "member")
	exp := time.Now().Add(30 * 24 * time.Hour).UTC().Truncate(time.Second)
	cr := d.newCred(t, "default", map[string]any{
		"type": "access-token", "user": "app", "name": "app-cred", "description": "from an application-credential client",
		"roles": []map[string]string{{"name": "reader"}}, "expires_at": exp.Format(time.RFC3339), "unrestricted": false,
		"access_rules": []map[string]string{{"service": "coffer", "method": "GET", "path": "/v1/projects/default/secrets"}},
	})
	if !slices.Equal(cr.Roles, []string{"reader"}) || cr.ExpiresAt == nil || !cr.ExpiresAt.Equal(exp) {
		t.Fatalf("created with roles %v expiring %v; want [reader] expiring %s", cr.Roles, cr.ExpiresAt, exp)
	}
	d.wantWorks(t, "the application credential's token", cr.Token)
	if _, in := d.introspect(t, cr.Token); in.ExpiresAt != exp.Unix() {
		t.Errorf("its token expires at %d, want %d", in.ExpiresAt, exp.Unix())
	}
	// Names and objects mixed; an expires_at with an offset.
	mixed := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "app",
		"roles": []any{"reader", map[string]string{"name": "member"}}, "expires_at": exp.In(time.FixedZone("", -5*3600)).Format(time.RFC3339)})
	if !slices.Equal(mixed.Roles, []string{"member", "reader"}) || !mixed.ExpiresAt.Equal(exp) {
		t.Errorf("mixed: roles %v expiring %v", mixed.Roles, mixed.ExpiresAt)
	}

	for _, c := range []struct {
		name string
		body map[string]any
		code string
		msg  string
	}{
		{"a role by id", map[string]any{"type": "auth-token", "user": "app", "roles": []map[string]string{{"id": "4b1f"}}}, "invalid_json",
			`invalid JSON body: roles[0] must be a role name or {"name": ROLE} (coffer's roles reader, member and admin have no ids)`},
		{"a role beyond the user's", map[string]any{"type": "auth-token", "user": "app", "roles": []map[string]string{{"name": "admin"}}}, "forbidden", ""},
		{"expires_at not RFC 3339", map[string]any{"type": "auth-token", "user": "app", "expires_at": "tomorrow"}, "invalid_expiry",
			"expires_at must be an RFC 3339 time such as 2030-01-02T15:04:05Z"},
		{"expires_at in the past", map[string]any{"type": "auth-token", "user": "app", "expires_at": "2001-01-01T00:00:00Z"}, "invalid_expiry",
			"expires_at 2001-01-01T00:00:00Z is not in the future"},
		{"both expiries", map[string]any{"type": "auth-token", "user": "app", "expire_in": "1h", "expires_at": exp.Format(time.RFC3339)}, "invalid_expiry",
			"give expire_in or expires_at, not both"},
	} {
		res := d.api(t, "POST", "/v1/projects/default/credentials", c.body)
		status := http.StatusBadRequest
		if c.code == "forbidden" {
			status = http.StatusForbidden
		}
		wantError(t, res, status, c.code)
		var e errorBody
		_ = json.Unmarshal(res.body, &e)
		if c.msg != "" && e.Message != c.msg {
			t.Errorf("%s: message %q, want %q", c.name, e.Message, c.msg)
		}
	}
}

// TestWorkflowLastUsedOfBearers: LAST USED is filled for every kind of
// credential used as a bearer — an access token, a login's session, an
// OAuth2 JWT, and a token checked at /v1/authorize — shown at once, and
// kept across a restart (written when the daemon stops, as a change the
// daemon records).
func TestWorkflowLastUsedOfBearers(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)
	d.newUser(t, "svc")
	d.setRole(t, "default", "svc", "reader")
	access := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "svc", "name": "static"})
	checked := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "svc", "name": "checked"})
	auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "svc", "name": "login"})
	client := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "svc", "name": "client"})
	if got := d.getCred(t, access.ID); got.LastUsedAt != nil {
		t.Fatalf("an unused access token was last used at %v", got.LastUsedAt)
	}

	session := d.login(t, auth.Token)
	loggedIn := d.getCred(t, auth.ID).LastUsedAt
	jwt := d.oauthToken(t, client.ClientID, client.ClientSecret).AccessToken
	time.Sleep(1100 * time.Millisecond) // uses are recorded to the second
	start := time.Now().Add(-time.Second)
	d.wantWorks(t, "the access token", access.Token)
	d.wantWorks(t, "the login's session", session.Token)
	d.wantWorks(t, "the OAuth2 JWT", jwt)
	d.mustAPI(t, "POST", "/v1/authorize", map[string]string{"token": checked.Token, "service": "billing", "method": "GET", "path": "/"}, http.StatusOK, nil)

	want := map[string]time.Time{}
	for _, c := range []api.Credential{access, checked, auth, client} {
		got := d.getCred(t, c.ID)
		if got.LastUsedAt == nil || got.LastUsedAt.Before(start) || got.LastUsedAt.After(time.Now()) {
			t.Errorf("%s: last used %v, want just now", c.Name, got.LastUsedAt)
			continue
		}
		want[c.ID] = *got.LastUsedAt
	}
	if loggedIn == nil || !want[auth.ID].After(*loggedIn) {
		t.Errorf("the login's session used after the login: last used %v, login at %v", want[auth.ID], loggedIn)
	}
	table := d.mustCLI(t, "", "cred", "list").stdout
	for _, line := range strings.Split(table, "\n") {
		if strings.Contains(line, "static") && !strings.Contains(line, want[access.ID].UTC().Format(time.RFC3339)) {
			t.Errorf("cred list does not show LAST USED for the access token:\n%s", table)
		}
	}

	d.Stop(t)
	d = startDaemon(t, dir)
	for _, c := range []api.Credential{access, checked, auth, client} {
		if got := d.getCred(t, c.ID); got.LastUsedAt == nil || got.LastUsedAt.Truncate(time.Second).Compare(want[c.ID].Truncate(time.Second)) != 0 {
			t.Errorf("%s after a restart: last used %v, want %v", c.Name, got.LastUsedAt, want[c.ID])
		}
	}
	e, ok := findEvent(d.auditEntries(t), "credential.last_used", "ok", nil)
	if !ok || e.Principal["channel"] != "daemon" || e.Target["credentials"] == "" {
		t.Errorf("no credential.last_used change by the daemon in the audit log: %+v", e)
	}
}
