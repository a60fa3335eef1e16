package unixapi

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/vsock"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/metrics"
	"github.com/coffer-hsm/coffer/policy"
)

// The authorization matrix: every registered endpoint × every kind of
// caller → the exact status (and error code). It runs a real
// daemon.Service (SoftHSM dev token, Badger on disk) behind the real
// Server on real Unix sockets.
//
// Callers other than root cannot be made for real in a unit test (that
// needs setuid), so each one gets its own Unix socket whose listener
// attaches a fixed Principal to every accepted connection, as the peer
// listener does with SO_PEERCRED: the identity travels the same path
// (identConn → connContext → the request context). When the test runs as
// uid 0, root's socket is a real ListenUnix socket (real SO_PEERCRED). The
// VM's socket goes through the real NewVsockListener, with connections
// that report the guest's vsock address.
//
// To extend: a new endpoint needs a row in matrixRows (the test fails
// until it has one); a new kind of caller needs a name in
// matrixPrincipals, a connection or token in newMatrixEnv, and its
// outcome in every row (allow puts it among the forbidden by default).

// matrixPrincipals are the kinds of caller, in report order.
var matrixPrincipals = []string{
	"root",       // uid 0
	"admgrp",     // uid 1500, primary gid 4242 = --admin-group
	"admin",      // alice, uid 1001: admin on p1 (and on p2)
	"member",     // bob, uid 1002: member on p1
	"reader",     // carol, uid 1003: reader on p1
	"norole",     // dave, uid 1004: a user without any role
	"anon",       // uid 5555, bound to no user
	"metricsgrp", // uid 1600, primary gid 4343 = --metrics-group, bound to no user
	"disabled",   // dis, uid 1006: admin on p1, disabled
	"vm",         // vsock CID 42, workload user vm: reader on p1
	"twoproj",    // frank, uid 1007: reader on p1, admin on p2 (admitted to both by a system admin)
	"exrole",     // gus, uid 1008: was member on p1 until the role was taken away
	"cfs",        // alice's session token (cfs_) from a login, on anon's socket
	"cft",        // alice's access token (cft_), all her roles on p1
	"cft-reader", // alice's access token limited to roles [reader]
	"jwt",        // alice's OAuth2 access token (RFC 9068 JWT)
	"ruled",      // alice's access token with access rules (see newMatrixEnv)
	"cfa",        // alice's auth token sent as a bearer
	"cfo",        // alice's OAuth2 client secret sent as a bearer
	"expired",    // alice's access token past its expires_at
	"revoked",    // alice's revoked access token
	"exhausted",  // alice's one-time auth token, already used, as a bearer
	"dis-bearer", // dis's access token, issued before dis was disabled
	// alice's access token created unrestricted: it may make management
	// writes within her roles on p1 (every other token may not).
	"unrestricted",
	// root's own connection with cft-reader's token: a bearer acts as its
	// token, never as a system admin.
	"root-bearer",
}

// Groups of principals, for writing rows.
const (
	grpSysAdmins  = "root admgrp"
	grpBadBearers = "cfa cfo expired revoked exhausted dis-bearer" // never authenticate
	// grpManagers hold admin on p1 and are not held back by access rules.
	grpManagers = grpSysAdmins + " admin cfs cft jwt unrestricted"
	// grpAdmins hold admin on p1 and may make management writes there
	// (no restricted token).
	grpAdmins = grpSysAdmins + " admin unrestricted"
	// grpReaders hold at least reader on p1.
	grpReaders = grpManagers + " member reader vm twoproj " + grpReaderToks
	// grpReaderToks are alice's tokens limited to roles [reader].
	grpReaderToks = "cft-reader root-bearer"
	// grpUsers are callers that are somebody (a system admin or a live user).
	grpUsers = grpReaders + " norole exrole"
)

// outcomes maps each principal to "STATUS" (success) or "STATUS code".
type outcomes map[string]string

// allow: the principals in who get ok, the bearers of unusable tokens get
// 401 unauthenticated, every other principal 403 forbidden.
func allow(ok, who string) outcomes {
	e := outcomes{}
	for _, p := range matrixPrincipals {
		e[p] = "403 forbidden"
	}
	for _, p := range strings.Fields(grpBadBearers) {
		e[p] = "401 unauthenticated"
	}
	return e.and(ok, who)
}

// everyone: every principal gets out.
func everyone(out string) outcomes {
	e := outcomes{}
	for _, p := range matrixPrincipals {
		e[p] = out
	}
	return e
}

// and returns e with the principals in who getting out.
func (e outcomes) and(out, who string) outcomes {
	c := make(outcomes, len(e))
	for k, v := range e {
		c[k] = v
	}
	for _, p := range strings.Fields(who) {
		c[p] = out
	}
	return c
}

// matrixReq is one HTTP request of a row; the principal adds its
// connection and, for a bearer, its Authorization header.
type matrixReq struct {
	method, path, body string
	form               bool // body is application/x-www-form-urlencoded
}

func reqGET(path string) matrixReq        { return matrixReq{method: "GET", path: path} }
func reqDELETE(path string) matrixReq     { return matrixReq{method: "DELETE", path: path} }
func reqPOST(path, body string) matrixReq { return matrixReq{method: "POST", path: path, body: body} }
func reqPUT(path string) matrixReq        { return matrixReq{method: "PUT", path: path} }
func reqPUTBody(path, body string) matrixReq {
	return matrixReq{method: "PUT", path: path, body: body}
}
func reqPATCH(path, body string) matrixReq { return matrixReq{method: "PATCH", path: path, body: body} }
func reqForm(path string, v url.Values) matrixReq {
	return matrixReq{method: "POST", path: path, body: v.Encode(), form: true}
}

// matrixRow is one endpoint (route is its registered pattern) with one
// choice of target. req is called once per principal, so a row that
// changes or deletes its target makes a fresh one each time.
type matrixRow struct {
	route, variant string
	req            func(t *testing.T, f *matrixEnv) matrixReq
	want           outcomes
}

func matrixRows() []matrixRow {
	fixed := func(r matrixReq) func(*testing.T, *matrixEnv) matrixReq {
		return func(*testing.T, *matrixEnv) matrixReq { return r }
	}
	const secretBody = `{"display_name":"matrix","payload":"cA=="}`
	const noSuchID = "01900000-0000-7000-8000-000000000000"
	return []matrixRow{
		{route: "GET /v1/status", req: fixed(reqGET("/v1/status")),
			want: allow("200", grpUsers+" anon disabled metricsgrp")},
		// Health: anyone (a bearer must still be a good one, and access
		// rules still apply to a token).
		{route: "GET /v1/health", req: fixed(reqGET("/v1/health")),
			want: allow("200", grpUsers+" anon disabled metricsgrp")},
		// Who am I: anyone (a bearer must be a good one, and access
		// rules apply to a token).
		{route: "GET /v1/whoami", req: fixed(reqGET("/v1/whoami")),
			want: allow("200", grpUsers+" anon disabled metricsgrp")},
		// Metrics: system admins and the metrics group, never a token.
		{route: "GET /v1/metrics", req: fixed(reqGET("/v1/metrics")),
			want: allow("200", grpSysAdmins+" metricsgrp")},

		{route: "POST /v1/projects", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/projects", `{"name":"`+f.name("p")+`"}`)
		}, want: allow("201", grpSysAdmins)},
		{route: "GET /v1/projects", req: fixed(reqGET("/v1/projects")), want: allow("200", grpSysAdmins)},
		{route: "GET /v1/backup", req: fixed(reqGET("/v1/backup")), want: allow("200", grpSysAdmins)},
		{route: "GET /v1/projects/{p}", req: fixed(reqGET("/v1/projects/p1")), want: allow("200", grpReaders)},
		{route: "DELETE /v1/projects/{p}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/projects/" + f.project(t))
		}, want: allow("204", grpSysAdmins)},

		{route: "POST /v1/projects/{p}/secrets", req: fixed(reqPOST("/v1/projects/p1/secrets", secretBody)),
			want: allow("201", grpManagers)},
		{route: "GET /v1/projects/{p}/secrets", req: fixed(reqGET("/v1/projects/p1/secrets")),
			want: allow("200", grpReaders+" ruled")},
		// A token never reaches beyond its project, even where its user
		// is admin (alice is admin on p2, her tokens are for p1).
		{route: "GET /v1/projects/{p}/secrets", variant: "other project", req: fixed(reqGET("/v1/projects/p2/secrets")),
			want: allow("200", grpSysAdmins+" admin twoproj")},
		// A project that does not exist is forbidden, not not_found, for
		// everyone (existence is not revealed).
		{route: "GET /v1/projects/{p}/secrets", variant: "no such project", req: fixed(reqGET("/v1/projects/nope/secrets")),
			want: allow("403 forbidden", grpSysAdmins)},
		{route: "GET /v1/secrets/{id}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqGET("/v1/secrets/" + f.secret)
		}, want: allow("200", grpReaders+" ruled")},
		// A missing secret is not_found only for who could list it anyway.
		{route: "GET /v1/secrets/{id}", variant: "no such secret", req: fixed(reqGET("/v1/secrets/" + noSuchID)),
			want: allow("404 not_found", grpSysAdmins)},
		{route: "POST /v1/secrets/{id}/rotate", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/secrets/"+f.rotSecret+"/rotate", `{"payload":"cQ=="}`)
		}, want: allow("200", grpManagers+" ruled")},
		{route: "POST /v1/secrets/{id}/revoke", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/secrets/"+f.newSecret(t)+"/revoke", "")
		}, want: allow("200", grpManagers)},
		{route: "DELETE /v1/secrets/{id}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/secrets/" + f.newSecret(t))
		}, want: allow("204", grpManagers)},

		// Sealed import: who may import may see the import key; the body
		// is read only after authorization (a replayed file is 403 to
		// everyone else).
		{route: "GET /v1/hsm/import-key", req: fixed(reqGET("/v1/hsm/import-key")), want: allow("200", grpManagers+" twoproj")},
		{route: "POST /v1/projects/{p}/secrets:import", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/projects/p1/secrets:import", f.sealed(t, "p1"))
		}, want: allow("201", grpManagers)},
		{route: "POST /v1/projects/{p}/secrets:import", variant: "no such project", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/projects/nope/secrets:import", f.sealed(t, "nope"))
		}, want: allow("403 forbidden", "")},
		{route: "POST /v1/projects/{p}/secrets:import", variant: "replayed", req: importedOnce(),
			want: allow("400 sealed_secret_replayed", grpManagers)},

		// A binding is a management write: no restricted token makes one.
		{route: "POST /v1/secrets/{id}/bindings", variant: "user", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/secrets/"+f.secret+"/bindings", `{"user":"carol","name":"`+f.name("b")+`"}`)
		}, want: allow("201", grpAdmins)},
		// Bindings follow roles: dave holds no role on p1, so nobody binds
		// a p1 secret to him. To a project admin he does not exist; a
		// system admin is told to admit him first.
		{route: "POST /v1/secrets/{id}/bindings", variant: "user outside the project", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/secrets/"+f.secret+"/bindings", `{"user":"dave","name":"`+f.name("b")+`"}`)
		}, want: allow("409 user_not_admitted", grpSysAdmins).and("404 not_found", "admin unrestricted")},
		// Unit names are the host's: only system admins bind units.
		{route: "POST /v1/secrets/{id}/bindings", variant: "unit", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/secrets/"+f.secret+"/bindings", `{"unit":"`+f.name("u")+`.service","credential":"c"}`)
		}, want: allow("201", grpSysAdmins)},
		{route: "GET /v1/secrets/{id}/bindings", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqGET("/v1/secrets/" + f.secret + "/bindings")
		}, want: allow("200", grpReaders+" ruled")},
		{route: "DELETE /v1/secrets/{id}/bindings/{b}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/secrets/" + f.secret + "/bindings/" + f.newBinding(t))
		}, want: allow("204", grpAdmins)},
		// Only the bound consumer (the VM) receives; for everyone else the
		// name does not exist.
		{route: "GET /v1/deliver/{name}", req: fixed(reqGET("/v1/deliver/vm-secret")),
			want: allow("404 not_found", grpUsers+" anon disabled metricsgrp ruled").and("200", "vm")},

		{route: "POST /v1/users", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/users", `{"name":"`+f.name("u")+`"}`)
		}, want: allow("201", grpSysAdmins)},
		{route: "GET /v1/users", req: fixed(reqGET("/v1/users")), want: allow("200", grpSysAdmins)},
		{route: "GET /v1/users/{u}", variant: "alice", req: fixed(reqGET("/v1/users/alice")),
			want: allow("200", grpSysAdmins+" admin cfs cft jwt unrestricted "+grpReaderToks)},
		{route: "GET /v1/users/{u}", variant: "bob", req: fixed(reqGET("/v1/users/bob")),
			want: allow("200", grpSysAdmins+" member")},
		{route: "PATCH /v1/users/{u}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPATCH("/v1/users/"+f.newUser(t, ""), `{"access_token_ttl":"1h"}`)
		}, want: allow("200", grpSysAdmins)},
		{route: "DELETE /v1/users/{u}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/users/" + f.newUser(t, ""))
		}, want: allow("204", grpSysAdmins)},

		{route: "GET /v1/projects/{p}/roles", req: fixed(reqGET("/v1/projects/p1/roles")), want: allow("200", grpReaders)},
		// Admission is the system admin's: a project admin changes roles
		// of users already in its project, and one outside it does not
		// exist for it. Roles are management writes: no restricted token.
		{route: "PUT /v1/projects/{p}/roles/{u}/{role}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPUT("/v1/projects/p1/roles/" + f.newUser(t, "") + "/reader")
		}, want: allow("200", grpSysAdmins).and("404 not_found", "admin unrestricted")},
		{route: "PUT /v1/projects/{p}/roles/{u}/{role}", variant: "admitted user", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPUT("/v1/projects/p1/roles/" + f.newUser(t, "reader") + "/member")
		}, want: allow("200", grpAdmins)},
		// frank is admin on p2: p2 is not a way into p1.
		{route: "PUT /v1/projects/{p}/roles/{u}/{role}", variant: "p2's admin", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPUT("/v1/projects/p2/roles/" + f.newUser(t, "reader") + "/reader")
		}, want: allow("200", grpSysAdmins).and("404 not_found", "admin twoproj")},
		{route: "DELETE /v1/projects/{p}/roles/{u}/{role}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/projects/p1/roles/" + f.newUser(t, "reader") + "/reader")
		}, want: allow("204", grpAdmins)},

		// A member may issue credentials to itself; tokens may not issue
		// credentials at all unless unrestricted.
		{route: "POST /v1/projects/{p}/credentials", variant: "for bob", req: fixed(reqPOST("/v1/projects/p1/credentials", `{"type":"access-token","user":"bob"}`)),
			want: allow("201", grpAdmins+" member")},
		{route: "POST /v1/projects/{p}/credentials", variant: "for carol", req: fixed(reqPOST("/v1/projects/p1/credentials", `{"type":"access-token","user":"carol"}`)),
			want: allow("201", grpAdmins)},
		// gus was removed from p1: nobody issues him credentials there.
		// To a project admin or member he is unknown; a system admin is
		// told to admit him.
		{route: "POST /v1/projects/{p}/credentials", variant: "for gus", req: fixed(reqPOST("/v1/projects/p1/credentials", `{"type":"access-token","user":"gus"}`)),
			want: allow("409 user_not_admitted", grpSysAdmins).and("404 not_found", "admin unrestricted member")},
		{route: "GET /v1/projects/{p}/credentials", req: fixed(reqGET("/v1/projects/p1/credentials")), want: allow("200", grpReaders)},
		{route: "GET /v1/credentials", req: fixed(reqGET("/v1/credentials")), want: allow("200", grpUsers)},
		{route: "GET /v1/credentials/{id}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqGET("/v1/credentials/" + f.bobCred)
		}, want: allow("200", grpReaders)},
		// bob's credential: its owner and admins manage it; no restricted
		// token may.
		{route: "POST /v1/credentials/{id}/rotate", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/credentials/"+f.newBobCredential(t)+"/rotate", "")
		}, want: allow("200", grpAdmins+" member")},
		{route: "POST /v1/credentials/{id}/revoke", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/credentials/"+f.newBobCredential(t)+"/revoke", "")
		}, want: allow("200", grpAdmins+" member")},
		{route: "DELETE /v1/credentials/{id}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/credentials/" + f.newBobCredential(t))
		}, want: allow("204", grpAdmins+" member")},

		// A project's policies: its admins write them (a management
		// write), its readers read them. Global ones: system admins write,
		// every user reads.
		{route: "POST /v1/projects/{p}/policies", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/projects/p1/policies", `{"name":"`+f.name("pol")+`","rules":[{"effect":"deny","condition":"request.method == 'DELETE'"}]}`)
		}, want: allow("201", grpAdmins)},
		{route: "GET /v1/projects/{p}/policies", req: fixed(reqGET("/v1/projects/p1/policies")), want: allow("200", grpReaders)},
		{route: "GET /v1/projects/{p}/policies/{name}", req: fixed(reqGET("/v1/projects/p1/policies/matrix-pol")), want: allow("200", grpReaders)},
		{route: "GET /v1/projects/{p}/policies/{name}", variant: "p2's", req: fixed(reqGET("/v1/projects/p2/policies/matrix-pol")),
			want: allow("200", grpSysAdmins+" admin twoproj")},
		{route: "PUT /v1/projects/{p}/policies/{name}", req: fixed(reqPUTBody("/v1/projects/p1/policies/matrix-pol", `{"rules":[{"effect":"deny","condition":"false"}]}`)),
			want: allow("200", grpAdmins)},
		{route: "DELETE /v1/projects/{p}/policies/{name}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/projects/p1/policies/" + f.newPolicy(t, "p1"))
		}, want: allow("204", grpAdmins)},
		{route: "PATCH /v1/projects/{p}", req: fixed(reqPATCH("/v1/projects/p1", `{"policies":[]}`)), want: allow("200", grpAdmins)},
		{route: "POST /v1/policies", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqPOST("/v1/policies", `{"name":"`+f.name("pol")+`","rules":[{"effect":"deny","condition":"false"}]}`)
		}, want: allow("201", grpSysAdmins)},
		{route: "GET /v1/policies", req: fixed(reqGET("/v1/policies")), want: allow("200", grpUsers)},
		{route: "GET /v1/policies/{name}", req: fixed(reqGET("/v1/policies/matrix-global")), want: allow("200", grpUsers)},
		{route: "PUT /v1/policies/{name}", req: fixed(reqPUTBody("/v1/policies/matrix-global", `{"rules":[{"effect":"deny","condition":"false"}]}`)),
			want: allow("200", grpSysAdmins)},
		{route: "DELETE /v1/policies/{name}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/policies/" + f.newPolicy(t, ""))
		}, want: allow("204", grpSysAdmins)},

		// Saving a rule is a management write; listing is a read.
		{route: "POST /v1/access-rules", req: fixed(reqPOST("/v1/access-rules", `{"service":"svc","method":"GET","path":"/x/*"}`)),
			want: allow("201", grpAdmins+" member twoproj")},
		{route: "GET /v1/access-rules", req: fixed(reqGET("/v1/access-rules")),
			want: allow("200", grpManagers+" member twoproj")},
		// A saved rule made by bob: only a system admin or its creator
		// deletes it.
		{route: "DELETE /v1/access-rules/{id}", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/access-rules/" + f.newBobRule(t))
		}, want: allow("204", grpSysAdmins+" member")},

		// Login takes its auth token from the Authorization header: only
		// the cfa_ bearer logs in; the connection's identity is no login.
		{route: "POST /v1/auth/login", req: fixed(reqPOST("/v1/auth/login", "")),
			want: everyone("401 unauthenticated").and("201", "cfa")},
		{route: "GET /v1/sessions", req: fixed(reqGET("/v1/sessions")), want: allow("200", grpUsers)},
		{route: "DELETE /v1/sessions/{id}", variant: "bob's login session", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/sessions/" + f.newBobSession(t, daemon.CredAuthToken))
		}, want: allow("204", grpManagers+" member")},
		// Revoking an access token's session revokes the credential:
		// restricted tokens may not.
		{route: "DELETE /v1/sessions/{id}", variant: "bob's access-token session", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqDELETE("/v1/sessions/" + f.newBobSession(t, daemon.CredAccessToken))
		}, want: allow("204", grpAdmins+" member")},

		// The client authenticates in the form; an Authorization: Bearer
		// header is a wrong client authentication (RFC 6749 §2.3).
		{route: "POST /oauth2/token", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {f.clientID}, "client_secret": {f.bearer["cfo"]}})
		}, want: everyone("401 invalid_client").and("200", grpSysAdmins+" admin member reader norole anon metricsgrp disabled vm twoproj exrole")},
		// A client whose credential is no longer usable gets nowhere,
		// whoever asks.
		{route: "POST /oauth2/token", variant: "expired client", req: matrixBadClient("expired"), want: everyone("401 invalid_client")},
		{route: "POST /oauth2/token", variant: "revoked client", req: matrixBadClient("revoked"), want: everyone("401 invalid_client")},
		{route: "POST /oauth2/token", variant: "exhausted client", req: matrixBadClient("exhausted"), want: everyone("401 invalid_client")},
		{route: "POST /oauth2/token", variant: "disabled user's client", req: matrixBadClient("disabled"), want: everyone("401 invalid_client")},
		// Token exchange: the subject token in the body authenticates; an
		// Authorization header is a client authentication it does not take.
		{route: "POST /oauth2/token", variant: "token exchange", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqForm("/oauth2/token", url.Values{"grant_type": {daemon.GrantTokenExchange}, "subject_token": {f.bearer["cft"]},
				"subject_token_type": {daemon.TokenTypeAccessToken}})
		}, want: everyone("401 invalid_client").and("200", grpSysAdmins+" admin member reader norole anon metricsgrp disabled vm twoproj exrole")},
		{route: "POST /oauth2/token", variant: "token exchange for an audience not on the list", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqForm("/oauth2/token", url.Values{"grant_type": {daemon.GrantTokenExchange}, "subject_token": {f.bearer["cft"]},
				"subject_token_type": {daemon.TokenTypeAccessToken}, "audience": {"https://elsewhere.example"}})
		}, want: everyone("401 invalid_client").and("400 invalid_target", grpSysAdmins+" admin member reader norole anon metricsgrp disabled vm twoproj exrole")},
		{route: "POST /oauth2/token", variant: "token exchange of a revoked token", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqForm("/oauth2/token", url.Values{"grant_type": {daemon.GrantTokenExchange}, "subject_token": {f.bearer["revoked"]},
				"subject_token_type": {daemon.TokenTypeAccessToken}})
		}, want: everyone("401 invalid_client").and("400 invalid_grant", grpSysAdmins+" admin member reader norole anon metricsgrp disabled vm twoproj exrole")},
		// The token to describe is in the body; the caller does not matter.
		{route: "POST /oauth2/introspect", req: func(t *testing.T, f *matrixEnv) matrixReq {
			return reqForm("/oauth2/introspect", url.Values{"token": {f.bearer["cft"]}})
		}, want: everyone("200")},
		{route: "GET /.well-known/jwks.json", req: fixed(reqGET("/.well-known/jwks.json")), want: everyone("200")},
		{route: "GET /.well-known/oauth-authorization-server", req: fixed(reqGET("/.well-known/oauth-authorization-server")), want: everyone("200")},
		{route: "GET /.well-known/openid-configuration", req: fixed(reqGET("/.well-known/openid-configuration")), want: everyone("200")},
		// HSM keys: system admins only. Each rotation waits for the
		// previous re-wrap, so that a second admin's rotation is not a 409.
		{route: "GET /v1/hsm/keys", req: fixed(reqGET("/v1/hsm/keys")), want: allow("200", grpSysAdmins)},
		{route: "POST /v1/hsm/kek:rotate", req: func(t *testing.T, f *matrixEnv) matrixReq {
			f.kekIdle(t)
			return reqPOST("/v1/hsm/kek:rotate", "")
		}, want: allow("202", grpSysAdmins)},
		{route: "DELETE /v1/hsm/keks/{label}", variant: "no such KEK", req: fixed(reqDELETE("/v1/hsm/keks/coffer-kek-99")),
			want: allow("404 not_found", grpSysAdmins)},
		{route: "POST /v1/hsm/signing-key:rotate", req: fixed(reqPOST("/v1/hsm/signing-key:rotate", "")),
			want: allow("200", grpSysAdmins)},
		// Kubernetes KMS key usage: an admin read, like the HSM keys.
		{route: "GET /v1/k8s/kms-keys", req: fixed(reqGET("/v1/k8s/kms-keys")), want: allow("200", grpSysAdmins)},
		// Kubernetes service-account signing keys: system admins only.
		{route: "GET /v1/k8s/sa-keys", req: fixed(reqGET("/v1/k8s/sa-keys")), want: allow("200", grpSysAdmins)},
		{route: "POST /v1/k8s/sa-key:rotate", req: fixed(reqPOST("/v1/k8s/sa-key:rotate", "")), want: allow("200", grpSysAdmins)},
		// The Kubernetes webhooks' CA and files: system admins only (the
		// serving key is an HSM key).
		{route: "GET /v1/k8s/webhook-ca", variant: "listener on", req: func(t *testing.T, f *matrixEnv) matrixReq {
			f.svc.SetK8sWebhook(daemon.K8sWebhook{Server: "https://127.0.0.1:8443", CertificatePEM: []byte("-----BEGIN CERTIFICATE-----\n"), BearerFile: "/etc/coffer/k8s-bearer"})
			return reqGET("/v1/k8s/webhook-ca")
		}, want: allow("200", grpSysAdmins)},

		{route: "POST /v1/authorize", req: func(t *testing.T, f *matrixEnv) matrixReq {
			b, _ := json.Marshal(api.AuthorizeRequest{Token: f.bearer["cft"], Service: "svc", Method: "GET", Path: "/x/1"})
			return reqPOST("/v1/authorize", string(b))
		}, want: everyone("200")},

		// The audit log: system admins only, never a token.
		{route: "GET /v1/audit", req: fixed(reqGET("/v1/audit?tail=5")), want: allow("200", grpSysAdmins)},
		{route: "POST /v1/audit/verify", req: fixed(reqPOST("/v1/audit/verify", "")), want: allow("200", grpSysAdmins)},

		// Runtime profiles: system admins only.
		{route: "GET /v1/debug/pprof/{profile}", req: fixed(reqGET("/v1/debug/pprof/goroutine")), want: allow("200", grpSysAdmins)},
	}
}

// matrixBadClient asks for an access token with one of f.badClients.
func matrixBadClient(state string) func(*testing.T, *matrixEnv) matrixReq {
	return func(t *testing.T, f *matrixEnv) matrixReq {
		c := f.badClients[state]
		return reqForm("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {c.ClientID}, "client_secret": {c.ClientSecret}})
	}
}

func TestAuthorizationMatrix(t *testing.T) {
	f := newMatrixEnv(t)
	rows := matrixRows()

	// Every registered route has a row, and every row is a registered
	// route: a new endpoint fails here until the matrix covers it.
	registered := f.srv.Routes()
	covered := map[string]bool{}
	for _, r := range rows {
		covered[r.route] = true
		if !slices.Contains(registered, r.route) {
			t.Errorf("row for %q, which the server does not register", r.route)
		}
	}
	for _, route := range registered {
		if !covered[route] {
			t.Errorf("route %q has no row in the authorization matrix", route)
		}
	}

	cells := 0
	for _, row := range rows {
		if len(row.want) != len(matrixPrincipals) {
			t.Fatalf("%s %s: %d outcomes for %d principals", row.route, row.variant, len(row.want), len(matrixPrincipals))
		}
		name := row.route
		if row.variant != "" {
			name += " (" + row.variant + ")"
		}
		for _, who := range matrixPrincipals {
			cells++
			t.Run(name+"/"+who, func(t *testing.T) {
				req := row.req(t, f)
				got := f.do(t, row.route, who, req)
				if want := row.want[who]; got != want {
					t.Errorf("%s %s as %s: got %s, want %s", req.method, req.path, who, got, want)
				}
			})
		}
	}
	t.Logf("authorization matrix: %d routes, %d rows × %d principals = %d cells", len(registered), len(rows), len(matrixPrincipals), cells)
}

// matrixEnv is the daemon, its server and the fixtures the rows use.
type matrixEnv struct {
	svc *daemon.Service
	srv *Server
	ctx context.Context

	clients map[string]*http.Client // by connection identity
	conn    map[string]string       // principal → connection identity
	bearer  map[string]string       // principal → its bearer token, if any

	secret    string // a secret in p1, bound to the VM as vm-secret
	rotSecret string // a secret in p1 that rows rotate
	bobCred   string // bob's access-token credential in p1
	clientID  string // alice's OAuth2 client (secret: bearer["cfo"])
	// OAuth2 clients that no longer work: expired, revoked, exhausted,
	// disabled (dis's).
	badClients map[string]daemon.Issued
	seq        int
}

// Principals of the fixture setup itself.
var (
	matrixRoot = daemon.Principal{Channel: daemon.ChannelUnix, HasCred: true, UID: 0, GID: 0, PID: 1}
	matrixBob  = matrixUnixPrincipal(1002, 1002)
)

const (
	matrixAdminGID   = 4242
	matrixMetricsGID = 4343
)

func matrixUnixPrincipal(uid, gid uint32) daemon.Principal {
	return daemon.Principal{Channel: daemon.ChannelUnix, HasCred: true, UID: uid, GID: gid, PID: 4000 + int32(uid%1000)}
}

func newMatrixEnv(t *testing.T) *matrixEnv {
	t.Helper()
	if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
		t.Fatalf("SoftHSM is required (make test-deps installs it): %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	hcfg, err := hsm.PrepareDevToken(ctx, filepath.Join(dir, "hsm"), hsm.DefaultModulePath, "coffer-matrix")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := daemon.Open(ctx, daemon.Config{
		StateDir: filepath.Join(dir, "state"), HSM: hcfg, AdminGroup: strconv.Itoa(matrixAdminGID),
		MetricsGroup: strconv.Itoa(matrixMetricsGID),
		Version:      "test", Logger: log,
		// The matrix refuses hundreds of bad tokens on purpose; the limit
		// on failed authentications has its own tests.
		AuthLimit: daemon.AuthLimit{Burst: -1},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	f := &matrixEnv{svc: svc, ctx: ctx, clients: map[string]*http.Client{}, conn: map[string]string{}, bearer: map[string]string{}, badClients: map[string]daemon.Issued{}}
	f.serve(t, dir, log)
	f.setup(t)
	for _, p := range matrixPrincipals {
		if f.conn[p] == "" {
			t.Fatalf("principal %s has no connection", p)
		}
	}
	return f
}

// serve starts one Server with one socket per connection identity.
func (f *matrixEnv) serve(t *testing.T, dir string, log *slog.Logger) {
	t.Helper()
	f.srv = NewServer(f.svc, log)
	f.srv.SetMetrics(metrics.New())
	al, err := audit.Open(f.ctx, audit.Options{
		Dir: filepath.Join(dir, "audit"), Signer: audit.SignerFunc(f.svc.SignAudit), Logger: log,
		Keys: func() (audit.KeySource, error) {
			b, err := json.Marshal(f.svc.JWKS())
			if err != nil {
				return nil, err
			}
			return audit.ParseJWKS(b)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { al.Close(context.Background()) }) // before svc.Close: it signs
	f.srv.SetAuditor(al)
	// The real audit log, so that every cell's changes also go through the
	// outbox into it.
	if err := f.svc.SetAuditLog(f.ctx, al); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.svc.CloseAudit(context.Background()) }) // before al.Close
	idents := map[string]daemon.Principal{
		"root":   matrixRoot,
		"admgrp": matrixUnixPrincipal(1500, matrixAdminGID),
		"alice":  matrixUnixPrincipal(1001, 1001),
		"bob":    matrixBob,
		"carol":  matrixUnixPrincipal(1003, 1003),
		"dave":   matrixUnixPrincipal(1004, 1004),
		"dis":    matrixUnixPrincipal(1006, 1006),
		"frank":  matrixUnixPrincipal(1007, 1007),
		"gus":    matrixUnixPrincipal(1008, 1008),
		"anon":   matrixUnixPrincipal(5555, 5555),
		"mon":    matrixUnixPrincipal(1600, matrixMetricsGID),
	}
	var wg sync.WaitGroup
	start := func(name string, l net.Listener) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f.srv.Serve(l); err != nil {
				t.Errorf("serve %s: %v", name, err)
			}
		}()
	}
	listen := func(name string) (*net.UnixListener, string) {
		path := filepath.Join(dir, name+".sock")
		l, err := ListenUnixPlain(path, SocketOptions{GID: -1})
		if err != nil {
			t.Fatal(err)
		}
		f.clients[name] = matrixHTTPClient(path)
		return l, path
	}
	for name, p := range idents {
		if name == "root" && os.Getuid() == 0 {
			path := filepath.Join(dir, name+".sock")
			l, err := ListenUnix(path, SocketOptions{GID: -1, Logger: log}) // real SO_PEERCRED
			if err != nil {
				t.Fatal(err)
			}
			f.clients[name] = matrixHTTPClient(path)
			start(name, l)
			continue
		}
		l, _ := listen(name)
		start(name, &fixedPeerListener{UnixListener: l, principal: p})
	}
	l, _ := listen("vm")
	start("vm", NewVsockListener(&vsockAddrListener{Listener: l, cid: 42}, log, false))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		f.srv.Shutdown(ctx)
		wg.Wait()
	})

	for p, conn := range map[string]string{
		"root": "root", "admgrp": "admgrp", "admin": "alice", "member": "bob", "reader": "carol",
		"norole": "dave", "anon": "anon", "disabled": "dis", "vm": "vm", "twoproj": "frank", "exrole": "gus",
		"metricsgrp": "mon",
	} {
		f.conn[p] = conn
	}
	if os.Getuid() == 0 {
		t.Log("root connects for real (SO_PEERCRED uid 0); other uids are attached to their sockets' connections")
	}
}

func matrixHTTPClient(path string) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", path)
		},
	}}
}

// fixedPeerListener attaches one principal to every connection it
// accepts, where the peer listener would attach the SO_PEERCRED one.
type fixedPeerListener struct {
	*net.UnixListener
	principal daemon.Principal
}

func (l *fixedPeerListener) Accept() (net.Conn, error) {
	c, err := l.UnixListener.Accept()
	if err != nil {
		return nil, err
	}
	return &identConn{Conn: c, principal: l.principal}, nil
}

// vsockAddrListener hands out connections that report a guest's vsock
// address as their peer, as a real vsock listener's do, for
// NewVsockListener to read.
type vsockAddrListener struct {
	net.Listener
	cid uint32
}

type vsockAddrConn struct {
	net.Conn
	remote net.Addr
}

func (c *vsockAddrConn) RemoteAddr() net.Addr { return c.remote }

func (l *vsockAddrListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &vsockAddrConn{Conn: c, remote: &vsock.Addr{ContextID: l.cid, Port: 49152}}, nil
}

// grant authorizes p through the service (for fixtures), or fails.
func (f *matrixEnv) grant(t *testing.T, p daemon.Principal, a daemon.Action, r daemon.Resource) daemon.Grant {
	t.Helper()
	g, err := f.svc.Authorize(f.ctx, p, a, r)
	if err != nil {
		t.Fatalf("authorize %s: %v", a, err)
	}
	return g
}

func (f *matrixEnv) root(t *testing.T, a daemon.Action, r daemon.Resource) daemon.Grant {
	t.Helper()
	return f.grant(t, matrixRoot, a, r)
}

// kekIdle waits until no KEK re-wrap runs.
func (f *matrixEnv) kekIdle(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		k, err := f.svc.HSMKeys(f.ctx, f.root(t, daemon.ActManageKeys, daemon.Resource{}))
		if err != nil {
			t.Fatal(err)
		}
		if k.Rotation == nil || k.Rotation.State != daemon.RotationRunning {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("KEK re-wrap still running: %+v", k.Rotation)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// name returns a fresh name.
func (f *matrixEnv) name(prefix string) string {
	f.seq++
	return fmt.Sprintf("m%s-%d", prefix, f.seq)
}

func (f *matrixEnv) credential(t *testing.T, project string, in daemon.CredentialInput) (daemon.Credential, daemon.Issued) {
	t.Helper()
	c, iss, err := f.svc.CreateCredential(f.ctx, f.root(t, daemon.ActCreateCredential, daemon.Resource{Project: project}), in)
	if err != nil {
		t.Fatalf("create credential: %v", err)
	}
	return c, iss
}

func (f *matrixEnv) setup(t *testing.T) {
	t.Helper()
	ctx := f.ctx
	for _, p := range []string{"p1", "p2"} {
		if _, err := f.svc.CreateProject(ctx, f.root(t, daemon.ActManageProjects, daemon.Resource{}), p); err != nil {
			t.Fatal(err)
		}
	}
	users := []struct {
		name string
		uid  uint32
		cid  uint32
		role string
	}{{"alice", 1001, 0, "admin"}, {"bob", 1002, 0, "member"}, {"carol", 1003, 0, "reader"}, {"dave", 1004, 0, ""}, {"dis", 1006, 0, "admin"}, {"vm", 0, 42, "reader"},
		{"frank", 1007, 0, "reader"}, {"gus", 1008, 0, "member"}}
	for _, u := range users {
		in := daemon.UserInput{Name: u.name}
		if u.uid != 0 {
			in.UnixUIDs = []uint32{u.uid}
		}
		if u.cid != 0 {
			in.Kind, in.VsockCIDs = "workload", []uint32{u.cid}
		}
		if _, err := f.svc.CreateUser(ctx, f.root(t, daemon.ActManageUsers, daemon.Resource{}), in); err != nil {
			t.Fatal(err)
		}
		if u.role != "" {
			f.setRole(t, "p1", u.name, u.role)
		}
	}
	f.setRole(t, "p2", "alice", "admin")
	f.setRole(t, "p2", "frank", "admin")
	if err := f.svc.RemoveRole(ctx, f.root(t, daemon.ActManageRoles, daemon.Resource{Project: "p1"}), "gus", "member"); err != nil {
		t.Fatal(err)
	}

	f.secret = f.newSecret(t)
	f.rotSecret = f.newSecret(t)
	if _, err := f.svc.CreateBinding(ctx, f.root(t, daemon.ActManageBindings, daemon.Resource{Secret: f.secret}),
		daemon.BindingInput{User: "vm", Name: "vm-secret"}); err != nil {
		t.Fatal(err)
	}
	c, _ := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "bob"})
	f.bobCred = c.ID

	// alice's tokens, all on p1.
	_, cfa := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAuthToken, User: "alice"})
	f.bearer["cfa"] = cfa.Token
	_, cfs, err := f.svc.Login(ctx, cfa.Token)
	if err != nil {
		t.Fatal(err)
	}
	f.bearer["cfs"] = cfs
	_, cft := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "alice"})
	f.bearer["cft"] = cft.Token
	_, unres := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "alice", Unrestricted: true})
	f.bearer["unrestricted"] = unres.Token
	_, cftReader := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "alice", Roles: []string{"reader"}})
	f.bearer["cft-reader"] = cftReader.Token
	_, cfo := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredOAuth2, User: "alice"})
	f.clientID, f.bearer["cfo"] = cfo.ClientID, cfo.ClientSecret
	at, err := f.svc.ClientCredentials(ctx, cfo.ClientID, cfo.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	f.bearer["jwt"] = at.Token
	_, ruled := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "alice", AccessRules: []daemon.AccessRule{
		{Service: "coffer", Method: "GET", Path: "/v1/projects/*/secrets"},
		{Service: "coffer", Method: "GET", Path: "/v1/secrets/**"},
		{Service: "coffer", Method: "POST", Path: "/v1/secrets/{id}/rotate"},
	}})
	f.bearer["ruled"] = ruled.Token
	// Policies the rows read and change (their rules never hold).
	for _, pol := range []struct{ project, name string }{{"p1", "matrix-pol"}, {"p2", "matrix-pol"}, {"", "matrix-global"}} {
		in := daemon.PolicyInput{Name: pol.name, Document: policy.Document{Rules: []policy.Rule{{Effect: policy.Deny, Condition: "false"}}}}
		if _, err := f.svc.CreatePolicy(ctx, f.root(t, daemon.ActManagePolicies, daemon.Resource{Project: pol.project}), in); err != nil {
			t.Fatal(err)
		}
	}

	expCred, expired := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "alice", ExpireIn: "50ms"})
	f.bearer["expired"] = expired.Token
	revCred, revoked := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "alice"})
	if _, err := f.svc.RevokeCredential(ctx, f.root(t, daemon.ActManageCredential, daemon.Resource{Credential: revCred.ID})); err != nil {
		t.Fatal(err)
	}
	f.bearer["revoked"] = revoked.Token
	_, once := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAuthToken, User: "alice", OneTime: true})
	if _, _, err := f.svc.Login(ctx, once.Token); err != nil {
		t.Fatal(err)
	}
	f.bearer["exhausted"] = once.Token
	_, dis := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAccessToken, User: "dis"})
	f.bearer["dis-bearer"] = dis.Token
	_, f.badClients["disabled"] = f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredOAuth2, User: "dis"})
	disabled := true
	if _, err := f.svc.PatchUser(ctx, f.root(t, daemon.ActManageUser, daemon.Resource{User: "dis"}), daemon.UserPatch{Disabled: &disabled}); err != nil {
		t.Fatal(err)
	}
	expClient, iss := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredOAuth2, User: "alice", ExpireIn: "50ms"})
	f.badClients["expired"] = iss
	revClient, iss := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredOAuth2, User: "alice"})
	if _, err := f.svc.RevokeCredential(ctx, f.root(t, daemon.ActManageCredential, daemon.Resource{Credential: revClient.ID})); err != nil {
		t.Fatal(err)
	}
	f.badClients["revoked"] = iss
	_, iss = f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredOAuth2, User: "alice", OneTime: true})
	if _, err := f.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, ""); err != nil {
		t.Fatal(err)
	}
	f.badClients["exhausted"] = iss
	for p := range f.bearer {
		f.conn[p] = "anon"
	}
	f.bearer["root-bearer"], f.conn["root-bearer"] = cftReader.Token, "root"

	// Wait (without asserting anything about time) until the expiring
	// credential has expired, and check that the states are what their
	// principals claim.
	for _, c := range []daemon.Credential{expCred, expClient} {
		for time.Now().Before(*c.ExpiresAt) {
			time.Sleep(time.Until(*c.ExpiresAt) + time.Millisecond)
		}
	}
	unusable := map[string]string{}
	for _, who := range []string{"expired", "revoked", "exhausted", "dis-bearer"} {
		unusable[who+" bearer"] = f.bearer[who]
	}
	for state, c := range f.badClients {
		unusable[state+" client"] = c.ClientSecret
	}
	for what, tok := range unusable {
		in, err := f.svc.Introspect(ctx, tok)
		if err != nil || in.Active {
			t.Fatalf("%s: introspection says active=%v (err %v), want inactive", what, in.Active, err)
		}
	}
}

func (f *matrixEnv) setRole(t *testing.T, project, user, role string) {
	t.Helper()
	if _, err := f.svc.SetRole(f.ctx, f.root(t, daemon.ActManageRoles, daemon.Resource{Project: project}), user, role); err != nil {
		t.Fatal(err)
	}
}

// project makes an empty project and returns its name.
func (f *matrixEnv) project(t *testing.T) string {
	t.Helper()
	p, err := f.svc.CreateProject(f.ctx, f.root(t, daemon.ActManageProjects, daemon.Resource{}), f.name("p"))
	if err != nil {
		t.Fatal(err)
	}
	return p.Name
}

// newSecret makes a secret in p1 and returns its id.
func (f *matrixEnv) newSecret(t *testing.T) string {
	t.Helper()
	s, err := f.svc.CreateSecret(f.ctx, f.root(t, daemon.ActManageProject, daemon.Resource{Project: "p1"}),
		daemon.SecretInput{DisplayName: "matrix", Payload: []byte("p")})
	if err != nil {
		t.Fatal(err)
	}
	return s.ID
}

// newBinding binds f.secret to carol under a fresh name and returns the
// binding's id.
func (f *matrixEnv) newBinding(t *testing.T) string {
	t.Helper()
	b, err := f.svc.CreateBinding(f.ctx, f.root(t, daemon.ActManageBindings, daemon.Resource{Secret: f.secret}),
		daemon.BindingInput{User: "carol", Name: f.name("b")})
	if err != nil {
		t.Fatal(err)
	}
	return b.ID
}

// newUser makes a user, with role on p1 unless role is empty, and returns
// its name.
func (f *matrixEnv) newUser(t *testing.T, role string) string {
	t.Helper()
	u, err := f.svc.CreateUser(f.ctx, f.root(t, daemon.ActManageUsers, daemon.Resource{}), daemon.UserInput{Name: f.name("u")})
	if err != nil {
		t.Fatal(err)
	}
	if role != "" {
		f.setRole(t, "p1", u.Name, role)
	}
	return u.Name
}

// newBobCredential issues bob an auth token in p1 and returns its id.
func (f *matrixEnv) newBobCredential(t *testing.T) string {
	t.Helper()
	c, _ := f.credential(t, "p1", daemon.CredentialInput{Type: daemon.CredAuthToken, User: "bob"})
	return c.ID
}

// newBobSession makes a session of bob in p1, from a login (auth-token)
// or an access token, and returns its id.
func (f *matrixEnv) newBobSession(t *testing.T, typ string) string {
	t.Helper()
	_, iss := f.credential(t, "p1", daemon.CredentialInput{Type: typ, User: "bob"})
	if typ == daemon.CredAuthToken {
		s, _, err := f.svc.Login(f.ctx, iss.Token)
		if err != nil {
			t.Fatal(err)
		}
		return s.ID
	}
	p, err := f.svc.Authenticate(f.ctx, daemon.Principal{}, iss.Token)
	if err != nil {
		t.Fatal(err)
	}
	return p.Token.SessionID
}

// newBobRule saves an access rule as bob and returns its id.
func (f *matrixEnv) newBobRule(t *testing.T) string {
	t.Helper()
	r, err := f.svc.CreateAccessRule(f.ctx, f.grant(t, matrixBob, daemon.ActManageRules, daemon.Resource{}),
		daemon.AccessRule{Service: "svc", Method: "GET", Path: "/" + f.name("r")})
	if err != nil {
		t.Fatal(err)
	}
	return r.ID
}

// newPolicy makes a policy in project ("" global) and returns its name.
func (f *matrixEnv) newPolicy(t *testing.T, project string) string {
	t.Helper()
	a := daemon.ActManagePolicies
	in := daemon.PolicyInput{Name: f.name("pol"), Document: policy.Document{Rules: []policy.Rule{{Effect: policy.Deny, Condition: "false"}}}}
	if _, err := f.svc.CreatePolicy(f.ctx, f.root(t, a, daemon.Resource{Project: project}), in); err != nil {
		t.Fatal(err)
	}
	return in.Name
}

// do sends r as principal who and returns "STATUS" for a success, or
// "STATUS code" for an error. It fails the test unless r is routed to
// route.
func (f *matrixEnv) do(t *testing.T, route, who string, r matrixReq) string {
	t.Helper()
	req, err := http.NewRequest(r.method, "http://coffer"+r.path, strings.NewReader(r.body))
	if err != nil {
		t.Fatal(err)
	}
	if _, pattern := f.srv.mux.Handler(req); pattern != route {
		t.Fatalf("%s %s is routed to %q, not to the row's %q", r.method, r.path, pattern, route)
	}
	switch {
	case r.form:
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	case r.body != "":
		req.Header.Set("Content-Type", "application/json")
	}
	if tok := f.bearer[who]; tok != "" {
		req.Header.Set("Authorization", "Bearer "+tok)
	}
	resp, err := f.clients[f.conn[who]].Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode < 400 {
		return strconv.Itoa(resp.StatusCode)
	}
	var eb api.ErrorBody
	if err := json.Unmarshal(body, &eb); err != nil || eb.Error == "" {
		return fmt.Sprintf("%d <no error code: %.80q>", resp.StatusCode, body)
	}
	return fmt.Sprintf("%d %s", resp.StatusCode, eb.Error)
}
