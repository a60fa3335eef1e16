package e2e

// The crash test's check after a restart: resolve each request that was in
// flight at the kill (it took effect whole or not at all), then compare the
// daemon with the model exactly.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/coffer-hsm/coffer/api"
)

// listAll reads every page of a list endpoint, decoding strictly: a record
// the daemon cannot project whole fails here or as a 500.
func listAll[T any](r *crashRun, d *daemonProc, path string) []T {
	t := r.t
	t.Helper()
	var out []T
	after := ""
	for {
		q := url.Values{"limit": {"100"}}
		if after != "" {
			q.Set("after", after)
		}
		res := d.api(t, "GET", path+"?"+q.Encode(), nil)
		if res.status != http.StatusOK {
			t.Fatalf("GET %s: status %d: %s", path, res.status, res.body)
		}
		var page api.List[T]
		dec := json.NewDecoder(bytes.NewReader(res.body))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&page); err != nil {
			t.Fatalf("GET %s: undecodable page: %v", path, err)
		}
		out = append(out, page.Items...)
		if page.Next == "" {
			return out
		}
		after = page.Next
	}
}

// check resolves the maybe writes, then checks secrets, deliveries,
// credentials and roles against the model.
func (r *crashRun) check(d *daemonProc) {
	t := r.t
	t.Helper()
	secrets := map[string]api.Secret{}
	secretByName := map[string]api.Secret{}
	for _, s := range listAll[api.Secret](r, d, "/v1/projects/"+crashProject+"/secrets") {
		if _, dup := secrets[s.ID]; dup {
			t.Errorf("secret %s listed twice", s.ID)
		}
		secrets[s.ID], secretByName[s.DisplayName] = s, s
	}
	creds := map[string]api.Credential{}
	credByName := map[string]api.Credential{}
	for _, c := range listAll[api.Credential](r, d, "/v1/projects/"+crashProject+"/credentials") {
		if _, dup := creds[c.ID]; dup {
			t.Errorf("credential %s listed twice", c.ID)
		}
		creds[c.ID], credByName[c.Name] = c, c
	}

	for _, w := range r.workers {
		if w.inflight != nil {
			r.resolve(d, w, secrets, secretByName, creds, credByName)
		}
	}

	// Every listed record is one the model knows: nothing half-written,
	// nothing deleted come back.
	known := map[string]bool{r.checkerCred: true}
	for _, w := range r.workers {
		for _, s := range w.secrets {
			known[s.id] = true
		}
		for _, c := range w.creds {
			known[c.id] = true
		}
	}
	for id, s := range secrets {
		if !known[id] {
			t.Errorf("secret %s (%s, v%d) is listed but was never acknowledged nor in flight", id, s.DisplayName, s.Version)
		}
	}
	for id, c := range creds {
		if !known[id] {
			t.Errorf("credential %s (%s) is listed but was never acknowledged nor in flight", id, c.Name)
		}
	}
	if _, ok := creds[r.checkerCred]; !ok {
		t.Errorf("the checker's credential %s is gone", r.checkerCred)
	}

	for _, w := range r.workers {
		for _, s := range w.secrets {
			r.checkSecret(d, s, secrets)
		}
		for _, c := range slices.Clone(w.creds) {
			r.checkCred(d, w, c, creds)
		}
		for _, id := range w.gone {
			r.checks++
			wantError(t, d.api(t, "GET", "/v1/secrets/"+id, nil), http.StatusNotFound, "not_found")
		}
		for _, id := range w.goneCrd {
			r.checks++
			wantError(t, d.api(t, "GET", "/v1/credentials/"+id, nil), http.StatusNotFound, "not_found")
		}
		w.gone, w.goneCrd = nil, nil
		r.checks++
		if got := r.roleOf(d, w.roleUser); got != w.role {
			t.Errorf("worker %d: %s has role %q on %s, want %q", w.n, w.roleUser, got, crashProject, w.role)
		}
	}
}

// resolve finds out whether w's request in flight at the kill took effect,
// asserts that it did so whole or not at all, and updates the model.
func (r *crashRun) resolve(d *daemonProc, w *crashWorker, secrets, secretByName map[string]api.Secret, creds, credByName map[string]api.Credential) {
	t := r.t
	t.Helper()
	o := w.inflight
	w.inflight = nil
	r.maybes++
	happened := false
	lost := func() { t.Errorf("worker %d: %s was in flight; the record is gone", w.n, o) }
	switch o.kind {
	case opCreateSecret:
		if s, ok := secretByName[o.name]; ok {
			happened = true
			if s.Version != 1 {
				t.Errorf("worker %d: %s took effect at version %d, want 1", w.n, o, s.Version)
			}
			w.secrets = append(w.secrets, &secretModel{id: s.ID, name: o.name, version: 1, current: o.next})
		}
	case opRotateSecret:
		s, ok := secrets[o.sec.id]
		switch {
		case !ok:
			lost()
		case s.Version == o.sec.version+1:
			happened = true
			o.sec.rotated(s.Version, o.next)
		case s.Version != o.sec.version:
			t.Errorf("worker %d: %s was in flight; now at version %d, want %d or %d", w.n, o, s.Version, o.sec.version, o.sec.version+1)
		}
	case opRevokeSecret:
		if s, ok := secrets[o.sec.id]; !ok {
			lost()
		} else if s.Status == "revoked" {
			happened, o.sec.revoked = true, true
		}
	case opDeleteSecret:
		if _, ok := secrets[o.sec.id]; !ok {
			happened = true
			w.dropSecret(o.sec)
		}
	case opCreateCred:
		if c, ok := credByName[o.name]; ok {
			// It exists, but its token was in the lost answer: delete it.
			happened = true
			d.mustAPI(t, "DELETE", "/v1/credentials/"+c.ID, nil, http.StatusNoContent, nil)
			delete(creds, c.ID)
			w.goneCrd = append(w.goneCrd, c.ID)
		}
	case opRotateCred:
		c, ok := creds[o.cred.id]
		switch {
		case !ok:
			lost()
		case c.TokenID != o.cred.tokenID:
			// Rotated; the new token was in the lost answer, the old one
			// must be dead (checkCred).
			happened = true
			o.cred.previous, o.cred.token, o.cred.tokenID, o.cred.logins = o.cred.token, "", c.TokenID, 0
		}
	case opDeleteCred:
		if _, ok := creds[o.cred.id]; !ok {
			happened = true
			w.dropCred(o.cred)
		}
	case opLogin:
		c, ok := creds[o.cred.id]
		switch {
		case !ok:
			lost()
		case c.AuthnCount == o.cred.logins+1:
			happened = true
			o.cred.logins++
		case c.AuthnCount != o.cred.logins:
			t.Errorf("worker %d: %s was in flight; authn_count is %d, want %d or %d", w.n, o, c.AuthnCount, o.cred.logins, o.cred.logins+1)
		}
	case opSetRole, opRemoveRole:
		switch got := r.roleOf(d, w.roleUser); got {
		case o.role:
			happened = got != w.role
			w.role = got
		case w.role:
		default:
			t.Errorf("worker %d: %s was in flight; role is %q, want %q or %q", w.n, o, got, w.role, o.role)
		}
	}
	if happened {
		r.maybeHappened++
	}
}

// checkSecret compares one secret with the model and checks what it
// delivers: exactly the current version's payload and key values.
func (r *crashRun) checkSecret(d *daemonProc, s *secretModel, listed map[string]api.Secret) {
	t := r.t
	t.Helper()
	r.checks++
	l, ok := listed[s.id]
	if !ok {
		t.Errorf("acknowledged secret %s (%s, v%d) is not listed", s.id, s.name, s.version)
		return
	}
	wantStatus := "active"
	if s.revoked {
		wantStatus = "revoked"
	}
	if l.Version != s.version || l.Status != wantStatus || l.DisplayName != s.name || l.Project != crashProject {
		t.Errorf("secret %s: listed as %s v%d %q in %s, want %s v%d %q in %s", s.id, l.Status, l.Version, l.DisplayName, l.Project, wantStatus, s.version, s.name, crashProject)
	}
	var got api.Secret
	d.mustAPI(t, "GET", "/v1/secrets/"+s.id, nil, http.StatusOK, &got)
	sameJSON(t, "secret "+s.id+": get and list", got, l)

	if !s.bound && !s.revoked {
		d.mustAPI(t, "POST", "/v1/secrets/"+s.id+"/bindings", map[string]string{"user": crashChecker, "name": s.bindingName()}, http.StatusCreated, nil)
		s.bound = true
	}
	if !s.bound {
		return
	}
	deliver := func(key string) apiResp {
		path := "/v1/deliver/" + s.bindingName()
		if key != "" {
			path += "?key=" + url.QueryEscape(key)
		}
		return d.bearer(t, r.checkerToken, "GET", path, nil)
	}
	if s.revoked {
		wantError(t, deliver(""), http.StatusNotFound, "not_found")
		return
	}
	res := deliver("")
	if res.status != http.StatusOK || !bytes.Equal(res.body, s.current.payload) {
		t.Errorf("secret %s v%d delivers status %d, %d bytes (sha256 %s), want its payload: %d bytes (sha256 %s)",
			s.id, s.version, res.status, len(res.body), version{payload: res.body}.hash(), len(s.current.payload), s.current.hash())
	}
	for k, v := range s.current.kvs {
		if res := deliver(k); res.status != http.StatusOK || string(res.body) != v {
			t.Errorf("secret %s v%d: key %q delivers status %d and not the value of that version", s.id, s.version, k, res.status)
		}
	}
	for _, k := range s.stale {
		if res := deliver(k); res.status != http.StatusNotFound {
			t.Errorf("secret %s v%d: key %q of the previous version delivers status %d, want 404", s.id, s.version, k, res.status)
		}
	}
}

// checkCred compares one credential with the model and proves its tokens:
// the current one logs in (one more acknowledged login), the one retired
// by the last rotation does not. A credential whose token was lost with an
// answer is deleted.
func (r *crashRun) checkCred(d *daemonProc, w *crashWorker, c *credModel, listed map[string]api.Credential) {
	t := r.t
	t.Helper()
	r.checks++
	l, ok := listed[c.id]
	if !ok {
		t.Errorf("acknowledged credential %s (%s) is not listed", c.id, c.name)
		return
	}
	if l.Status != "active" || l.AuthnCount != c.logins || l.TokenID != c.tokenID || l.Name != c.name || l.User != w.user || l.MaxAuthn != crashMaxAuthn {
		t.Errorf("credential %s: listed %s, %s, authn_count %d, token_id %s, user %s, max_authn %d; want active, %s, %d, %s, %s, %d",
			c.id, l.Status, l.Name, l.AuthnCount, l.TokenID, l.User, l.MaxAuthn, c.name, c.logins, c.tokenID, w.user, crashMaxAuthn)
	}
	var got api.Credential
	d.mustAPI(t, "GET", "/v1/credentials/"+c.id, nil, http.StatusOK, &got)
	sameJSON(t, "credential "+c.id+": get and list", got, l)

	if c.previous != "" {
		wantUnauthenticated(t, fmt.Sprintf("login with the retired token of %s", c.id), d.bearer(t, c.previous, "POST", "/v1/auth/login", nil))
	}
	if c.token == "" {
		d.mustAPI(t, "DELETE", "/v1/credentials/"+c.id, nil, http.StatusNoContent, nil)
		w.dropCred(c)
		return
	}
	d.mustBearer(t, c.token, "POST", "/v1/auth/login", nil, http.StatusCreated, nil)
	c.logins++
	w.acked++
	w.byKind[opLogin]++
}

// roleOf is user's role on the crash project, "" for none.
func (r *crashRun) roleOf(d *daemonProc, user string) string {
	var u api.User
	d.mustAPI(r.t, "GET", "/v1/users/"+user, nil, http.StatusOK, &u)
	role := ""
	for _, pr := range u.Roles {
		if pr.Project == crashProject {
			if role != "" {
				r.t.Errorf("user %s has two roles on %s: %v", user, crashProject, u.Roles)
			}
			role = pr.Role
		}
	}
	return role
}
