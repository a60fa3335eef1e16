package e2e

import (
	"bytes"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
)

// tenantHost is a daemon whose socket other uids reach, with two tenants:
// project alpha (admin: uid 4601) and project beta (admin: uid 4602, its
// workload web: uid 4603, admitted by the system admin as reader).
type tenantHost struct {
	*daemonProc
	bin, sock string
}

const (
	uidAlphaAdmin = 4601
	uidBetaAdmin  = 4602
	uidWeb        = 4603
	uidStranger   = 4604 // bound to no user
)

func newTenantHost(t *testing.T) *tenantHost {
	t.Helper()
	return newTenantHostArgs(t)
}

// newTenantHostArgs is newTenantHost with more daemon flags.
func newTenantHostArgs(t *testing.T, args ...string) *tenantHost {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the CLI as other uids (setpriv)")
	}
	if _, err := exec.LookPath("setpriv"); err != nil {
		t.Fatalf("setpriv (util-linux) is required: %v", err)
	}
	pub := publicDir(t)
	h := &tenantHost{bin: filepath.Join(pub, "coffer"), sock: filepath.Join(pub, "c.sock")}
	copyFile(t, cofferBin, h.bin, 0o755)
	h.daemonProc = startDaemon(t, workDir(t), append([]string{"--socket", h.sock, "--socket-mode", "0666"}, args...)...)
	for _, p := range []string{"alpha", "beta"} {
		h.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": p}, http.StatusCreated, nil)
	}
	for name, uid := range map[string]int{"alpha-admin": uidAlphaAdmin, "beta-admin": uidBetaAdmin, "web": uidWeb} {
		h.mustAPI(t, "POST", "/v1/users", map[string]any{"name": name, "kind": "workload", "unix_uids": []int{uid}}, http.StatusCreated, nil)
	}
	h.setRole(t, "alpha", "alpha-admin", "admin")
	h.setRole(t, "beta", "beta-admin", "admin")
	h.setRole(t, "beta", "web", "reader")
	return h
}

// as runs the coffer CLI as uid (setpriv: real uid, gid, no groups) and
// returns its exit code, stdout and stderr.
func (h *tenantHost) as(t *testing.T, uid int, stdin string, args ...string) (int, string, string) {
	t.Helper()
	id := strconv.Itoa(uid)
	cmd := exec.Command("setpriv", append([]string{"--reuid=" + id, "--regid=" + id, "--clear-groups", "--", h.bin, "-o", "json"}, args...)...)
	cmd.Env = cleanEnv("COFFER_SOCKET=" + h.sock)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0, out.String(), errb.String()
	case errors.As(err, &ee):
		return ee.ExitCode(), out.String(), errb.String()
	}
	t.Fatalf("run as uid %d: %v", uid, err)
	return 0, "", ""
}

// must runs the CLI as uid and fails unless it exits 0.
func (h *tenantHost) must(t *testing.T, uid int, stdin string, args ...string) string {
	t.Helper()
	code, out, errs := h.as(t, uid, stdin, args...)
	if code != 0 {
		t.Fatalf("uid %d: coffer %s: exit %d\n%s%s", uid, strings.Join(args, " "), code, out, errs)
	}
	return out
}

// wantExit runs the CLI as uid and checks its exit code and that stderr
// names code.
func (h *tenantHost) wantExit(t *testing.T, uid, exit int, code string, args ...string) string {
	t.Helper()
	got, out, errs := h.as(t, uid, "", args...)
	if got != exit || !strings.Contains(errs, "("+code+")") {
		t.Errorf("uid %d: coffer %s: exit %d, stderr %q; want exit %d (%s)", uid, strings.Join(args, " "), got, errs, exit, code)
	}
	return errs + out
}

// curl GETs path over the socket as uid with curl, a client of its own,
// and returns the body.
func (h *tenantHost) curl(t *testing.T, uid int, path string) string {
	t.Helper()
	id := strconv.Itoa(uid)
	out, err := exec.Command("setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "--",
		"curl", "-sS", "--fail-with-body", "--unix-socket", h.sock, "http://coffer"+path).Output()
	if err != nil {
		t.Fatalf("uid %d: GET %s: %v\n%s", uid, path, err, out)
	}
	return string(out)
}

// secret creates a secret in project as uid (its admin) and returns its id.
func (h *tenantHost) secret(t *testing.T, uid int, project, payload string) string {
	t.Helper()
	var s api.Secret
	out := h.must(t, uid, payload, "secret", "create", "--project", project, "--display-name", "db", "--payload-file", "-")
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.ID == "" {
		t.Fatalf("secret create: %v\n%s", err, out)
	}
	return s.ID
}

// Finding 1 (cross-tenant delivery squatting) and 2 (a project admin
// acting as any user on the host), as the tenants themselves would try
// it: a project admin cannot admit another tenant's workload, bind to it,
// or issue it credentials; delivery names are per project, so one tenant
// neither takes nor learns another's; a binding delivers only while its
// user holds a role on the secret's project.
func TestTenantsStayApart(t *testing.T) {
	t.Parallel()
	h := newTenantHost(t)
	alphaSecret := h.secret(t, uidAlphaAdmin, "alpha", "ALPHA-PAYLOAD")
	betaSecret := h.secret(t, uidBetaAdmin, "beta", "BETA-PAYLOAD")

	// alpha's admin tries to take beta's workload: an unknown user to it,
	// word for word like a name that does not exist.
	foreign := h.wantExit(t, uidAlphaAdmin, 1, "not_found", "role", "set", "alpha", "web", "reader")
	unknown := h.wantExit(t, uidAlphaAdmin, 1, "not_found", "role", "set", "alpha", "no-such-user", "reader")
	if strings.ReplaceAll(unknown, "no-such-user", "web") != foreign {
		t.Errorf("a foreign user and an unknown one answer differently:\n%s\n%s", foreign, unknown)
	}
	h.wantExit(t, uidAlphaAdmin, 1, "not_found", "secret", "bind", alphaSecret, "--user", "web", "--as", "dbpass")
	h.wantExit(t, uidAlphaAdmin, 1, "not_found", "cred", "create", "--project", "alpha", "--type", "oauth2", "--user", "web")

	// beta binds its own workload; web receives beta's payload.
	h.must(t, uidBetaAdmin, "", "secret", "bind", betaSecret, "--user", "web", "--as", "dbpass")
	if out := h.must(t, uidWeb, "", "deliver", "dbpass"); out != "BETA-PAYLOAD" {
		t.Fatalf("web's delivery: %q", out)
	}

	// The system admin admits web to alpha as well: alpha may now bind the
	// same name without a 409 that would reveal beta's binding, and web
	// says which project it means.
	h.setRole(t, "alpha", "web", "reader")
	h.must(t, uidAlphaAdmin, "", "secret", "bind", alphaSecret, "--user", "web", "--as", "dbpass")
	h.wantExit(t, uidWeb, 1, "delivery_ambiguous", "deliver", "dbpass")
	if out := h.must(t, uidWeb, "", "deliver", "dbpass", "--project", "beta"); out != "BETA-PAYLOAD" {
		t.Errorf("web's delivery from beta: %q", out)
	}
	if out := h.must(t, uidWeb, "", "deliver", "dbpass", "--project", "alpha"); out != "ALPHA-PAYLOAD" {
		t.Errorf("web's delivery from alpha: %q", out)
	}
	// alpha's admin removes web again: alpha's binding is gone with the
	// role and web's name is beta's alone.
	h.must(t, uidAlphaAdmin, "", "role", "remove", "alpha", "web", "reader")
	h.wantExit(t, uidWeb, 1, "not_found", "deliver", "dbpass", "--project", "alpha")
	if out := h.must(t, uidWeb, "", "deliver", "dbpass"); out != "BETA-PAYLOAD" {
		t.Errorf("web's delivery after leaving alpha: %q", out)
	}
	// alpha's admin cannot bring web back either.
	h.wantExit(t, uidAlphaAdmin, 1, "not_found", "role", "set", "alpha", "web", "admin")

	// A stranger's uid learns nothing.
	h.wantExit(t, uidStranger, 1, "not_found", "deliver", "dbpass")
}

// Finding 3: a token that is not unrestricted makes no management write,
// even its user's role is admin: no role, binding, rule or credential.
// Finding 2's other half: a token sees its user only inside its project.
func TestRestrictedTokensStayRestricted(t *testing.T) {
	t.Parallel()
	h := newTenantHost(t)
	h.setRole(t, "alpha", "web", "reader") // web is in two projects now
	betaSecret := h.secret(t, uidBetaAdmin, "beta", "BETA-PAYLOAD")
	restricted := h.newCred(t, "beta", map[string]any{"type": "access-token", "user": "beta-admin"}).Token
	for _, w := range []struct {
		method, path string
		body         any
	}{
		{"PUT", "/v1/projects/beta/roles/web/admin", nil},
		{"DELETE", "/v1/projects/beta/roles/web/reader", nil},
		{"POST", "/v1/secrets/" + betaSecret + "/bindings", map[string]string{"user": "web", "name": "x"}},
		{"POST", "/v1/access-rules", map[string]string{"service": "s", "method": "GET", "path": "/"}},
		{"POST", "/v1/projects/beta/credentials", map[string]string{"type": "access-token"}},
	} {
		wantError(t, h.bearer(t, restricted, w.method, w.path, w.body), http.StatusForbidden, "forbidden")
	}
	// The secret operations its role allows still work.
	h.mustBearer(t, restricted, "POST", "/v1/secrets/"+betaSecret+"/rotate", map[string]string{"payload": b64([]byte("NEW"))}, http.StatusOK, nil)

	// web's token for beta reads web without its alpha role or its uid.
	webTok := h.newCred(t, "beta", map[string]any{"type": "access-token", "user": "web"}).Token
	var u api.User
	h.mustBearer(t, webTok, "GET", "/v1/users/web", nil, http.StatusOK, &u)
	if len(u.Roles) != 1 || u.Roles[0].Project != "beta" || len(u.UnixUIDs) != 0 {
		t.Errorf("web through its beta token: roles %+v, uids %v", u.Roles, u.UnixUIDs)
	}
}

// Finding 7: a list's cursor carries only ids the caller may see, and a
// user name that does not exist answers like one outside the project.
func TestListCursorsDoNotLeak(t *testing.T) {
	t.Parallel()
	h := newTenantHost(t)
	h.setRole(t, "alpha", "web", "reader")
	var betaIDs []string
	for range 3 {
		betaIDs = append(betaIDs, h.newCred(t, "beta", map[string]any{"type": "access-token", "user": "web"}).ID)
	}
	alphaID := h.newCred(t, "alpha", map[string]any{"type": "access-token", "user": "web"}).ID
	var seen []string
	after := ""
	for range 10 {
		path := "/v1/projects/alpha/credentials?user=web&limit=1"
		if after != "" {
			path += "&after=" + after
		}
		var page struct {
			Items []api.Credential `json:"items"`
			Next  string           `json:"next"`
		}
		out := h.curl(t, uidAlphaAdmin, path)
		if err := json.Unmarshal([]byte(out), &page); err != nil {
			t.Fatalf("GET %s: %v\n%s", path, err, out)
		}
		for _, c := range page.Items {
			seen = append(seen, c.ID)
		}
		for _, id := range betaIDs {
			if strings.Contains(out, id) {
				t.Fatalf("alpha's admin sees beta's credential id %s in %s", id, out)
			}
		}
		if page.Next == "" {
			break
		}
		after = page.Next
	}
	if len(seen) != 1 || seen[0] != alphaID {
		t.Errorf("listed %v, want only %s", seen, alphaID)
	}
	unknown := h.curl(t, uidAlphaAdmin, "/v1/projects/alpha/credentials?user=no-such-user")
	outside := h.curl(t, uidAlphaAdmin, "/v1/projects/alpha/credentials?user=beta-admin")
	if unknown != outside {
		t.Errorf("an unknown user and one outside the project answer differently:\n%s\n%s", unknown, outside)
	}
}

// Finding 6: introspection and /v1/authorize count failed token checks
// into the same per-caller limit as every other token check.
func TestEveryTokenCheckCountsFailures(t *testing.T) {
	t.Parallel()
	h := newTenantHost(t)
	bad := "cft_" + strings.Repeat("A", 70) // well formed enough to be looked up
	for _, cmd := range [][]string{{"introspect", bad}, {"authorize", "--service", "s", "--method", "GET", "--path", "/", "--token", bad}} {
		uid := uidStranger
		if cmd[0] == "authorize" {
			uid++ // a caller of its own
		}
		// The bucket holds 10 failures and forgives one a second: on a
		// loaded machine a CLI run can take a good part of that, so keep
		// going until the limit answers (it never would if these checks
		// were not counted).
		var last string
		limited := false
		for i := 0; i < 60 && !limited; i++ {
			_, out, errs := h.as(t, uid, "", cmd...)
			last = out + errs
			limited = strings.Contains(last, "rate_limited")
		}
		if !limited {
			t.Errorf("%s: after 60 bad tokens from one uid: %s; want rate_limited", cmd[0], last)
		}
	}
}

// Finding 8: an ES256 JWT has one valid form. Its high-S twin (s → n−s),
// which verifies under plain ECDSA, is refused by the real daemon on every
// path that checks a token, while the token itself works.
func TestJWTHasNoSecondForm(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "svc")
	d.setRole(t, "default", "svc", "reader")
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "svc"})
	jwt := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
	parts := strings.Split(jwt, ".")
	sig, err := base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		t.Fatalf("signature of %d bytes (%v), want ES256's 64", len(sig), err)
	}
	n := elliptic.P256().Params().N
	twin := slices.Clone(sig)
	new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:])).FillBytes(twin[32:])
	twinJWT := parts[0] + "." + parts[1] + "." + base64.RawURLEncoding.EncodeToString(twin)

	d.mustBearer(t, jwt, "GET", "/v1/projects/default/secrets", nil, http.StatusOK, nil)
	wantUnauthenticated(t, "the high-S twin as a bearer", d.bearer(t, twinJWT, "GET", "/v1/projects/default/secrets", nil))
	d.wantInactive(t, "the high-S twin", twinJWT)
	var dec api.Decision
	d.mustAPI(t, "POST", "/v1/authorize", map[string]string{"token": twinJWT, "service": "s", "method": "GET", "path": "/"}, http.StatusOK, &dec)
	if dec.Allowed {
		t.Error("/v1/authorize allowed the high-S twin")
	}
	d.waitAudit(t, "the refused twin", "authenticate", "denied", nil, "low-S")
}

// TestWhoAmI: coffer whoami tells each caller who the daemon takes it to
// be — the uid the kernel reported, the user bound to it with its roles,
// a token's project and limits — and a token sees its user only inside
// its own project, even where the user holds more.
func TestWhoAmI(t *testing.T) {
	t.Parallel()
	h := newTenantHost(t)
	h.setRole(t, "alpha", "web", "member")
	who := func(uid int, args ...string) api.Self {
		t.Helper()
		var me api.Self
		if err := json.Unmarshal([]byte(h.must(t, uid, "", append(args, "whoami")...)), &me); err != nil {
			t.Fatal(err)
		}
		return me
	}
	me := who(uidWeb)
	if me.Channel != "unix" || me.UID == nil || *me.UID != uidWeb || me.SystemAdmin || me.User == nil || me.User.Name != "web" || len(me.User.Roles) != 2 || me.Token != nil {
		t.Errorf("web by its uid: %+v %+v", me, me.User)
	}
	if me := who(uidStranger); me.User != nil || me.SystemAdmin || me.UID == nil || *me.UID != uidStranger {
		t.Errorf("a stranger's uid: %+v, want nobody", me)
	}
	if me := who(0); !me.SystemAdmin || me.User != nil {
		t.Errorf("root: %+v, want a system admin", me)
	}
	tok := h.newCred(t, "beta", map[string]any{"type": "access-token", "user": "web", "name": "web-beta"}).Token
	me = who(uidStranger, "--token", tok)
	switch {
	case me.Token == nil || me.Token.Project != "beta" || me.Token.CredentialName != "web-beta" || me.Token.Unrestricted:
		t.Errorf("web's token: %+v", me.Token)
	case me.User == nil || me.User.Name != "web" || len(me.User.Roles) != 1 || me.User.Roles[0].Project != "beta" || len(me.User.UnixUIDs) != 0:
		t.Errorf("web's user as its beta token sees it: %+v, want beta's role only and no host bindings", me.User)
	case me.SystemAdmin:
		t.Error("a token on root's socket acts as a system admin")
	}
	if me := who(0, "--token", tok); me.SystemAdmin || me.Token == nil {
		t.Errorf("root with web's token: %+v, want web's token, not a system admin", me)
	}
	// The table form names the user and the token, never the token itself.
	code, out, _ := h.as(t, uidStranger, "", "--token", tok, "-o", "table", "whoami")
	if code != 0 || !strings.Contains(out, "user web (by its token)") || strings.Contains(out, tok) {
		t.Errorf("whoami table: exit %d\n%s", code, out)
	}
}
