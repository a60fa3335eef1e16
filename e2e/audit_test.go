package e2e

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io/fs"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// auditEntry is the part of an audit line the tests look at.
type auditEntry struct {
	Seq       uint64            `json:"seq"`
	Type      string            `json:"type"`
	Action    string            `json:"action"`
	Outcome   string            `json:"outcome"`
	Code      string            `json:"code"`
	Reason    string            `json:"reason"`
	Target    map[string]string `json:"target"`
	Principal map[string]any    `json:"principal"`
	Count     uint64            `json:"count"`
	Change    uint64            `json:"change"`
}

// waitAudit waits until the audit log has an event of action ("": any) and outcome
// whose target has every pair of want and whose reason contains reason,
// and returns it (the log writes a little after the event).
func (d *daemonProc) waitAudit(t *testing.T, what, action, outcome string, want map[string]string, reason string) auditEntry {
	t.Helper()
	return d.waitAuditBy(t, what, action, outcome, want, reason, nil)
}

// waitAuditBy is waitAudit for an event whose principal has every pair of
// by (numbers as JSON decodes them: float64).
func (d *daemonProc) waitAuditBy(t *testing.T, what, action, outcome string, want map[string]string, reason string, by map[string]any) auditEntry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		es := d.auditEntriesRaw(t)
		for _, e := range es {
			a := action
			if a == "" { // any action
				a = e.Action
			}
			if _, ok := findEvent([]auditEntry{e}, a, outcome, want); !ok || !strings.Contains(e.Reason, reason) {
				continue
			}
			match := true
			for k, v := range by {
				match = match && e.Principal[k] == v
			}
			if match {
				return e
			}
		}
		if time.Now().After(deadline) {
			var tail []string
			for _, e := range es[max(0, len(es)-10):] {
				tail = append(tail, fmt.Sprintf("%+v", e))
			}
			reasons := map[string]bool{}
			for _, e := range es {
				if e.Reason != "" {
					reasons[e.Action+": "+e.Reason] = true
				}
			}
			tail = append(tail, fmt.Sprintf("reasons in the log: %v", slices.Sorted(maps.Keys(reasons))))
			t.Errorf("no audit event for %s (%s %s %v %q); the log ends:\n%s", what, action, outcome, want, reason, strings.Join(tail, "\n"))
			return auditEntry{}
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditEntriesRaw reads the whole audit log through GET /v1/audit, a page
// at a time.
func (d *daemonProc) auditEntriesRaw(t *testing.T) []auditEntry {
	t.Helper()
	var out []auditEntry
	after := uint64(0)
	for {
		var page api.AuditEntries
		d.mustAPI(t, "GET", fmt.Sprintf("/v1/audit?after=%d&limit=1000", after), nil, http.StatusOK, &page)
		for _, raw := range page.Entries {
			var e auditEntry
			if err := json.Unmarshal(raw, &e); err != nil {
				t.Fatalf("audit entry %s: %v", raw, err)
			}
			out = append(out, e)
			after = e.Seq
		}
		if len(page.Entries) == 0 || after >= page.LastSeq {
			return out
		}
	}
}

// waitOutput waits until out contains want.
func waitOutput(t *testing.T, what string, out *syncBuffer, want string) {
	t.Helper()
	deadline := time.Now().Add(cliTimeout)
	for !strings.Contains(out.String(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("waited %s for %s; output:\n%s", cliTimeout, what, out)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// auditEntries reads the audit log through `coffer -o json audit tail`.
func (d *daemonProc) auditEntries(t *testing.T) []auditEntry {
	t.Helper()
	r := d.mustCLI(t, "", "-o", "json", "audit", "tail", "-n", "1000")
	var out []auditEntry
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		var e auditEntry
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("audit tail -o json line %q: %v", line, err)
		}
		out = append(out, e)
	}
	return out
}

// findEvent returns the first event with action and outcome whose target
// has every key/value of want.
func findEvent(es []auditEntry, action, outcome string, want map[string]string) (auditEntry, bool) {
	for _, e := range es {
		if e.Action != action || e.Outcome != outcome {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && e.Target[k] == v
		}
		if ok {
			return e, true
		}
	}
	return auditEntry{}, false
}

// TestAuditLog does security-relevant things through the real daemon,
// checks that the audit log tells them (and no secret), that it verifies,
// and that editing, deleting or swapping a line, or cutting the log, in a
// stopped daemon's state is found after a restart, naming the first bad
// entry.
func TestAuditLog(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)

	payload := canary("AUDITPAYLOAD-")
	payload2 := canary("AUDITPAYLOAD2-")
	kvValue := canary("AUDITKV-")
	needles := append(secretNeedles("payload", payload), secretNeedles("rotated payload", payload2)...)
	needles = append(needles, secretNeedles("key value", kvValue)...)

	sec := d.createSecret(t, "default", "audit-db", []byte(payload), map[string]string{"password": kvValue})
	var proj api.Project
	d.mustAPI(t, "GET", "/v1/projects/default", nil, http.StatusOK, &proj)
	user := d.newUser(t, "audit-svc")
	d.setRole(t, "default", "audit-svc", "member")
	access := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "audit-svc"})
	authTok := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "audit-svc"})
	oauth := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "audit-svc"})
	userBinding := d.bind(t, sec.ID, map[string]string{"user": "audit-svc", "name": "dbpass"})
	d.bind(t, sec.ID, map[string]string{"unit": "audit.service", "credential": "db"})

	// Deliveries: API (delivered, refused) and LoadCredential= (both).
	if res := d.mustBearer(t, access.Token, "GET", "/v1/deliver/dbpass", nil, http.StatusOK, nil); string(res.body) != payload {
		t.Fatalf("deliver: got %q", res.body)
	}
	d.mustBearer(t, access.Token, "GET", "/v1/deliver/dbpass?key=password", nil, http.StatusOK, nil)
	d.bearer(t, access.Token, "GET", "/v1/deliver/nothing-here", nil)
	sock := filepath.Join(d.stateDir, "creds.sock")
	if got := loadCred(t, sock, systemdAddr("audit.service", "db")); string(got) != payload {
		t.Fatalf("LoadCredential: got %q", got)
	}
	if got := loadCred(t, sock, systemdAddr("audit.service", "other")); len(got) != 0 {
		t.Fatalf("unbound LoadCredential: got %q", got)
	}
	// Authentication: login (ok, wrong secret), OAuth2, introspection, a
	// bad bearer token, a forbidden call.
	sess := d.login(t, authTok.Token)
	wantUnauthenticated(t, "login with a wrong secret", d.bearer(t, wrongSecret(t, authTok.Token), "POST", "/v1/auth/login", nil))
	at := d.oauthToken(t, oauth.ClientID, oauth.ClientSecret)
	d.introspect(t, at.AccessToken)
	d.wantInactive(t, "a made-up token", wrongSecret(t, access.Token))
	// Authorization decisions: what was asked (the path without its
	// query string), for which credential, and why; a refused token's too.
	d.mustAPI(t, "POST", "/v1/authorize", map[string]string{"token": access.Token, "service": "billing", "method": "GET",
		"path": "/v1/invoices?api_key=AUDITQUERYSECRET"}, http.StatusOK, nil)
	d.mustAPI(t, "POST", "/v1/authorize", map[string]string{"token": wrongSecret(t, access.Token), "service": "billing", "method": "DELETE",
		"path": "/v1/invoices/7"}, http.StatusOK, nil)
	needles = append(needles, needle{"a query string given to /v1/authorize", "AUDITQUERYSECRET"})
	wantUnauthenticated(t, "a bad bearer", d.bearer(t, wrongSecret(t, access.Token), "DELETE", "/v1/secrets/"+sec.ID, nil))
	wantError(t, d.bearer(t, sess.Token, "POST", "/v1/projects", map[string]string{"name": "nope"}), http.StatusForbidden, "forbidden")
	// Changes: rotation, revocation, deletion.
	var rotated api.Credential
	d.mustAPI(t, "POST", "/v1/credentials/"+access.ID+"/rotate", nil, http.StatusOK, &rotated)
	d.rotateSecret(t, sec.ID, []byte(payload2), 1)
	d.mustAPI(t, "DELETE", "/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
	d.mustAPI(t, "POST", "/v1/credentials/"+authTok.ID+"/revoke", nil, http.StatusOK, nil)
	// A reload.
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog(t, "the reload in the audit log", "config.reload")
	tokens := []string{access.Token, authTok.Token, oauth.ClientSecret, sess.Token, at.AccessToken, rotated.Token}
	for i, tok := range tokens {
		if tok == "" {
			t.Fatalf("token %d is empty", i)
		}
		needles = append(needles, needle{fmt.Sprintf("token %d", i), tok})
	}

	es := d.auditEntries(t)
	for _, w := range []struct {
		action, outcome string
		target          map[string]string
	}{
		{"daemon.start", "ok", nil},
		{"secret.create", "ok", map[string]string{"project": proj.ID, "secret": sec.ID}},
		{"user.create", "ok", map[string]string{"user": user.ID}},
		{"role.grant", "ok", map[string]string{"project": proj.ID, "user": user.ID, "role": "member"}},
		{"credential.create", "ok", map[string]string{"credential": access.ID}},
		{"binding.create", "ok", map[string]string{"secret": sec.ID}},
		{"deliver", "ok", map[string]string{"binding": userBinding.ID, "secret": sec.ID, "version": "1"}},
		{"deliver", "ok", map[string]string{"binding": userBinding.ID, "one_key": "true"}},
		{"deliver", "denied", nil},
		{"loadcredential", "ok", map[string]string{"unit": "audit.service", "credential": "db", "secret": sec.ID}},
		{"loadcredential", "denied", map[string]string{"unit": "audit.service", "credential": "other"}},
		{"auth.login", "ok", map[string]string{"session": sess.ID, "credential": authTok.ID}},
		{"auth.login", "denied", nil},
		{"oauth2.token", "ok", map[string]string{"client_id": oauth.ClientID}},
		{"oauth2.introspect", "ok", map[string]string{"active": "true"}},
		{"oauth2.introspect", "ok", map[string]string{"active": "false"}},
		{"authorize", "ok", map[string]string{"service": "billing", "method": "GET", "path": "/v1/invoices", "credential": access.ID}},
		{"authorize", "denied", map[string]string{"service": "billing", "method": "DELETE", "path": "/v1/invoices/7"}},
		{"authenticate", "denied", map[string]string{"route": "DELETE /v1/secrets/{id}"}},
		{"project.manage", "denied", map[string]string{"route": "POST /v1/projects"}},
		{"credential.rotate", "ok", map[string]string{"credential": access.ID}},
		{"secret.rotate", "ok", map[string]string{"secret": sec.ID}},
		{"credential.revoke", "ok", map[string]string{"credential": authTok.ID}},
		{"session.revoke", "ok", map[string]string{"session": sess.ID}},
		{"config.reload", "ok", nil},
	} {
		if _, ok := findEvent(es, w.action, w.outcome, w.target); !ok {
			t.Errorf("no %s %s event with %v in the audit log", w.action, w.outcome, w.target)
		}
	}
	if e, _ := findEvent(es, "auth.login", "denied", nil); e.Principal["token_id"] != "cfa_"+tokenIDOf(t, authTok.Token) {
		t.Errorf("refused login names token %v, want the auth token's public id", e.Principal["token_id"])
	}
	if e, _ := findEvent(es, "deliver", "ok", nil); e.Principal["session"] == nil || e.Principal["uid"] == nil {
		t.Errorf("delivery principal %v: want the uid and the token's session", e.Principal)
	}
	// An inactive introspection is an answer, not a denial.
	if e, ok := findEvent(es, "oauth2.introspect", "denied", nil); ok {
		t.Errorf("an inactive introspection is recorded as a denial: %+v", e)
	}
	if e, _ := findEvent(es, "authorize", "ok", map[string]string{"service": "billing"}); e.Target["reason"] == "" {
		t.Errorf("authorize entry without its reason: %+v", e)
	}
	// The table form says the same, with the names the caller may read
	// beside the ids (the log itself keeps ids only).
	table := d.mustCLI(t, "", "audit", "tail", "-n", "1000").stdout
	for _, s := range []string{"secret.create", "deliver", "loadcredential", "auth.login", "denied", "binding=" + userBinding.ID,
		"secret=" + sec.ID + `("audit-db")`, "user=" + user.ID + `("audit-svc")`} {
		if !strings.Contains(table, s) {
			t.Errorf("audit tail does not show %q:\n%s", s, table)
		}
	}
	if r := d.mustCLI(t, "", "audit", "verify"); !strings.Contains(r.stdout, "audit log ok") {
		t.Errorf("audit verify: %s", r)
	}
	// Only system admins read it.
	wantError(t, d.bearer(t, rotated.Token, "GET", "/v1/audit?tail=5", nil), http.StatusForbidden, "forbidden")
	wantError(t, d.bearer(t, rotated.Token, "POST", "/v1/audit/verify", nil), http.StatusForbidden, "forbidden")
	wantError(t, d.api(t, "GET", "/v1/audit?after=x", nil), http.StatusBadRequest, "invalid_argument")

	jwks := d.mustAPI(t, "GET", "/.well-known/jwks.json", nil, http.StatusOK, nil).body
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o600); err != nil {
		t.Fatal(err)
	}
	d.Stop(t)

	auditDir := filepath.Join(d.stateDir, "audit")
	if n, _ := scanTree(t, auditDir, needles); n < 2 {
		t.Fatalf("scanned %d audit files, want audit.log and head", n)
	}
	scanText(t, "the daemon's log", []byte(d.stderr.String()), needles)
	if r := runCLI(t, "", "", "audit", "verify", "--file", auditDir, "--jwks", jwksFile); r.code != 0 || !strings.Contains(r.stdout, "audit log ok") {
		t.Errorf("offline verify: %s", r)
	}
	// A restart continues the chain, and `audit tail -f` follows it.
	d = startDaemon(t, dir)
	follow := exec.Command(cofferBin, "audit", "tail", "-f", "-n", "1")
	follow.Env = cleanEnv(exportPrefix[len("export "):] + d.socket)
	followOut := &syncBuffer{}
	follow.Stdout, follow.Stderr = followOut, followOut
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	defer follow.Process.Kill()
	waitOutput(t, "audit tail -f to start", followOut, "daemon.start")
	var followed api.Project
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "followed"}, http.StatusCreated, &followed)
	waitOutput(t, "audit tail -f to show the new project", followOut, "project="+followed.ID)
	if err := follow.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	follow.Wait()
	if r := d.mustCLI(t, "", "audit", "verify"); !strings.Contains(r.stdout, "audit log ok") {
		t.Errorf("audit verify after a restart: %s", r)
	}
	starts := 0
	for _, e := range d.auditEntries(t) {
		if e.Action == "daemon.start" {
			starts++
		}
	}
	if starts != 2 {
		t.Errorf("%d daemon.start entries after one restart, want 2", starts)
	}
	d.Stop(t)

	// Tampering, each in its own copy of the stopped daemon's state.
	lines := auditLines(t, auditDir)
	k := 0 // the index of the secret.create line
	for i, l := range lines {
		if bytes.Contains(l, []byte(`"action":"secret.create"`)) {
			k = i
			break
		}
	}
	seqK, last := k+1, len(lines)
	for _, tc := range []struct {
		name   string
		tamper func([][]byte) [][]byte
		bad    int
		reason string
	}{
		{"one byte edited", func(l [][]byte) [][]byte {
			l[k] = bytes.Replace(l[k], []byte(`"secret.create"`), []byte(`"Secret.create"`), 1)
			return l
		}, seqK, "does not match the hash"},
		{"a line deleted", func(l [][]byte) [][]byte {
			return append(l[:k:k], l[k+1:]...)
		}, seqK, "deleted, inserted or reordered"},
		{"two lines swapped", func(l [][]byte) [][]byte {
			l[k], l[k+1] = l[k+1], l[k]
			return l
		}, seqK, "deleted, inserted or reordered"},
		// The daemon restarts on a log that no longer reaches its last
		// checkpoint: it writes the discontinuity as the next entry.
		{"cut below the last checkpoint", func(l [][]byte) [][]byte {
			return l[:last-3]
		}, last - 2, "cut or replaced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cdir := workDir(t)
			copyTree(t, d.stateDir, filepath.Join(cdir, ".coffer"))
			cAudit := filepath.Join(cdir, ".coffer", "audit")
			writeAuditLines(t, cAudit, tc.tamper(auditLines(t, cAudit)))
			if tc.bad != last-2 { // a cut is found offline only from head, the same way
				r := runCLI(t, "", "", "audit", "verify", "--file", cAudit, "--jwks", jwksFile)
				if want := fmt.Sprintf("BROKEN at entry %d:", tc.bad); r.code != 1 || !strings.Contains(r.stdout, want) {
					t.Errorf("offline verify: want exit 1 and %q:\n%s", want, r)
				}
			}
			c := startDaemon(t, cdir)
			r := c.cli(t, "", "audit", "verify")
			want := fmt.Sprintf("BROKEN at entry %d:", tc.bad)
			if r.code != 1 || !strings.Contains(r.stdout, want) || !strings.Contains(r.stdout, tc.reason) {
				t.Errorf("want exit 1 and %q (%s):\n%s", want, tc.reason, r)
			}
			var rep api.AuditReport
			c.mustAPI(t, "POST", "/v1/audit/verify", nil, http.StatusOK, &rep)
			if rep.OK || rep.FirstBadSeq != uint64(tc.bad) {
				t.Errorf("POST /v1/audit/verify: %+v, want first_bad_seq %d", rep, tc.bad)
			}
			c.Stop(t)
		})
	}
}

func auditLines(t *testing.T, auditDir string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(auditDir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(b, []byte("\n")), []byte("\n"))
}

func writeAuditLines(t *testing.T, auditDir string, lines [][]byte) {
	t.Helper()
	b := append(bytes.Join(lines, []byte("\n")), '\n')
	if err := os.WriteFile(filepath.Join(auditDir, "audit.log"), b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the regular files and directories under src to dst,
// keeping their permission bits.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		target := filepath.Join(dst, rel)
		info, err := e.Info()
		if err != nil {
			return err
		}
		switch {
		case e.IsDir():
			return os.MkdirAll(target, info.Mode().Perm())
		case e.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(target, b, info.Mode().Perm())
		}
		return nil
	})
	if err != nil {
		t.Fatalf("copy %s: %v", src, err)
	}
}
