package e2e

// End-to-end tests of credentials, sessions and access rules (issue 3).

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
)

var tokenShape = regexp.MustCompile(`^cf[aost]_[0-9A-Za-z]{70}$`)

// TestCredTypesEndToEnd issues each credential type and uses it.
func TestCredTypesEndToEnd(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "svc")
	d.setRole(t, "default", "svc", "reader")
	d.createSecret(t, "default", "visible", []byte("p"), nil)
	d.newPolicies(t, "default", "p1", "p2")

	for _, c := range []struct {
		typ, prefix string
	}{
		{"auth-token", "cfa_"},
		{"access-token", "cft_"},
		{"oauth2", "cfo_"},
	} {
		t.Run(c.typ, func(t *testing.T) {
			res := d.mustAPI(t, "POST", "/v1/projects/default/credentials", map[string]any{
				"type": c.typ, "user": "svc", "policies": []string{"p2", "p1"}, "description": "for " + c.typ,
			}, http.StatusCreated, nil)
			var cr api.Credential
			if err := json.Unmarshal(res.body, &cr); err != nil {
				t.Fatal(err)
			}
			secret := cr.Token
			if c.typ == "oauth2" {
				secret = cr.ClientSecret
				if cr.Token != "" || cr.ClientID == "" {
					t.Errorf("oauth2: token %q client_id %q", tokenKind(cr.Token), cr.ClientID)
				}
			} else if cr.ClientSecret != "" || cr.ClientID != "" {
				t.Errorf("%s carries oauth2 fields", c.typ)
			}
			if !strings.HasPrefix(secret, c.prefix) || !tokenShape.MatchString(secret) {
				t.Fatalf("secret %s does not look like %s<70 base62>", tokenKind(secret), c.prefix)
			}
			if got := tokenIDOf(t, secret); got != cr.TokenID {
				t.Errorf("token_id %q is not the id inside the token (%q)", cr.TokenID, got)
			}
			if !regexp.MustCompile(`^svc-` + c.typ + `-[a-z0-9]+$`).MatchString(cr.Name) {
				t.Errorf("generated name %q, want svc-%s-<random>", cr.Name, c.typ)
			}
			if cr.User != "svc" || cr.Project != "default" || cr.Type != c.typ || cr.Status != "active" || cr.AuthnCount != 0 ||
				!slices.Equal(cr.Roles, []string{"reader"}) || !slices.Equal(cr.Policies, []string{"p1", "p2"}) ||
				cr.SessionType != "client" || cr.Unrestricted || cr.AccessRules != nil || cr.Description != "for "+c.typ {
				t.Errorf("created %+v", cr)
			}
			// reads never carry the secret
			for _, path := range []string{"/v1/credentials/" + cr.ID, "/v1/projects/default/credentials", "/v1/projects/default/credentials?user=svc"} {
				r := d.mustAPI(t, "GET", path, nil, http.StatusOK, nil)
				if strings.Contains(string(r.body), secret) || strings.Contains(string(r.body), `"token"`) ||
					strings.Contains(string(r.body), `"client_secret"`) {
					t.Errorf("GET %s shows a secret: %s", path, r.body)
				}
			}

			var bearer string
			switch c.typ {
			case "auth-token":
				wantUnauthenticated(t, "auth token as a bearer", d.bearer(t, secret, "GET", secretsPath, nil))
				before := time.Now()
				s := d.login(t, secret)
				if !tokenShape.MatchString(s.Token) || !strings.HasPrefix(s.Token, "cfs_") {
					t.Errorf("session token %s", tokenKind(s.Token))
				}
				if s.Kind != "login" || s.User != "svc" || s.Project != "default" || s.CredentialID != cr.ID ||
					!slices.Equal(s.Roles, []string{"reader"}) || !slices.Equal(s.Policies, []string{"p1", "p2"}) ||
					s.ExpiresAt == nil || s.ExpiresAt.Before(before.Add(59*time.Minute)) || s.ExpiresAt.After(time.Now().Add(61*time.Minute)) {
					t.Errorf("session %+v, want login of svc expiring in 1h (the user's ttl)", s)
				}
				bearer = s.Token
				after := d.getCred(t, cr.ID)
				if after.AuthnCount != 1 || after.LastUsedAt == nil {
					t.Errorf("after one login authn_count %d last_used_at %v", after.AuthnCount, after.LastUsedAt)
				}
			case "access-token":
				bearer = secret // usable at once
				wantUnauthenticated(t, "access token at login", d.bearer(t, secret, "POST", "/v1/auth/login", nil))
			case "oauth2":
				wantUnauthenticated(t, "client secret as a bearer", d.bearer(t, secret, "GET", secretsPath, nil))
				bearer = d.oauthToken(t, cr.ClientID, secret).AccessToken
				if after := d.getCred(t, cr.ID); after.AuthnCount != 1 || after.LastUsedAt == nil {
					t.Errorf("after one token authn_count %d last_used_at %v", after.AuthnCount, after.LastUsedAt)
				}
			}
			var l api.List[api.Secret]
			d.mustBearer(t, bearer, "GET", secretsPath, nil, http.StatusOK, &l)
			if len(l.Items) != 1 || l.Items[0].DisplayName != "visible" {
				t.Errorf("%s bearer lists %+v", c.typ, l.Items)
			}
			// a reader bearer reads, but may not write
			wantError(t, d.bearer(t, bearer, "POST", secretsPath, map[string]any{"display_name": "x", "payload": b64([]byte("p"))}),
				http.StatusForbidden, "forbidden")
			// its own credentials, through the self-service list
			var own api.List[api.Credential]
			d.mustBearer(t, bearer, "GET", "/v1/credentials", nil, http.StatusOK, &own)
			for _, x := range own.Items {
				if x.User != "svc" {
					t.Errorf("own list shows %s's credential", x.User)
				}
			}
			d.mustBearer(t, bearer, "GET", "/v1/credentials/"+cr.ID, nil, http.StatusOK, nil)
		})
	}

	t.Run("names and invalid input", func(t *testing.T) {
		d.newCred(t, "default", map[string]any{"type": "access-token", "user": "svc", "name": "fixed"})
		wantError(t, d.api(t, "POST", "/v1/projects/default/credentials", map[string]any{"type": "auth-token", "user": "svc", "name": "fixed"}),
			http.StatusConflict, "already_exists")
		for _, c := range []struct {
			name string
			body map[string]any
			code string
		}{
			{"bad type", map[string]any{"type": "password", "user": "svc"}, "invalid_credential"},
			{"bad name", map[string]any{"type": "auth-token", "user": "svc", "name": "No Way"}, "invalid_name"},
			{"bad session type", map[string]any{"type": "auth-token", "user": "svc", "session_type": "both"}, "invalid_credential"},
			{"negative max_authn", map[string]any{"type": "auth-token", "user": "svc", "max_authn": -1}, "invalid_credential"},
			{"one_time and max_authn 3", map[string]any{"type": "auth-token", "user": "svc", "one_time": true, "max_authn": 3}, "invalid_credential"},
			{"max_authn on an access token", map[string]any{"type": "access-token", "user": "svc", "max_authn": 2}, "invalid_credential"},
			{"bad policy", map[string]any{"type": "auth-token", "user": "svc", "policies": []string{"Bad Policy"}}, "invalid_credential"},
			{"unknown field", map[string]any{"type": "auth-token", "user": "svc", "token": "mine"}, "invalid_json"},
		} {
			wantError(t, d.api(t, "POST", "/v1/projects/default/credentials", c.body), http.StatusBadRequest, c.code)
		}
		wantError(t, d.api(t, "POST", "/v1/projects/default/credentials", map[string]any{"type": "auth-token", "user": "ghost"}),
			http.StatusNotFound, "not_found")
		wantError(t, d.api(t, "GET", "/v1/credentials/00000000-0000-7000-8000-000000000000", nil), http.StatusNotFound, "not_found")
	})
}

// rotationCase knows how to use one credential type's secret.
type rotationCase struct {
	typ string
	// use reports whether secret still authenticates (status of the use).
	use func(t *testing.T, d *daemonProc, c api.Credential, secret string) bool
}

func secretOf(c api.Credential) string {
	if c.Type == "oauth2" {
		return c.ClientSecret
	}
	return c.Token
}

var rotationCases = []rotationCase{
	{"auth-token", func(t *testing.T, d *daemonProc, _ api.Credential, s string) bool {
		res := d.bearer(t, s, "POST", "/v1/auth/login", nil)
		if res.status != http.StatusCreated {
			wantUnauthenticated(t, "login", res)
		}
		return res.status == http.StatusCreated
	}},
	{"access-token", func(t *testing.T, d *daemonProc, _ api.Credential, s string) bool {
		res := d.bearer(t, s, "GET", secretsPath, nil)
		if res.status != http.StatusOK {
			wantUnauthenticated(t, "bearer", res)
		}
		return res.status == http.StatusOK
	}},
	{"oauth2", func(t *testing.T, d *daemonProc, c api.Credential, s string) bool {
		res := d.oauthTokenRaw(t, c.ClientID, s, nil)
		if res.status != http.StatusOK && (res.status != 401 || !strings.Contains(string(res.body), `"invalid_client"`)) {
			t.Errorf("oauth2 token: %d %s, want 200 or 401 invalid_client", res.status, res.body)
		}
		return res.status == http.StatusOK
	}},
}

func TestCredRotation(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "rot")
	d.setRole(t, "default", "rot", "reader")

	for _, rc := range rotationCases {
		t.Run(rc.typ, func(t *testing.T) {
			c := d.newCred(t, "default", map[string]any{"type": rc.typ, "user": "rot"})
			old := secretOf(c)
			if !rc.use(t, d, c, old) {
				t.Fatalf("fresh %s does not work", rc.typ)
			}

			// no grace: the old secret stops at once
			var r1 api.Credential
			d.mustAPI(t, "POST", "/v1/credentials/"+c.ID+"/rotate", nil, http.StatusOK, &r1)
			s1 := secretOf(r1)
			if s1 == "" || s1 == old || r1.TokenID == c.TokenID || r1.TokenID != tokenIDOf(t, s1) || r1.RotatedAt == nil || r1.ID != c.ID {
				t.Errorf("rotation answer: token_id %q -> %q, rotated_at %v, new secret %s", c.TokenID, r1.TokenID, r1.RotatedAt, tokenKind(s1))
			}
			if rc.typ == "oauth2" && r1.ClientID != c.ClientID {
				t.Errorf("rotation changed client_id %q -> %q", c.ClientID, r1.ClientID)
			}
			if rc.use(t, d, c, old) {
				t.Errorf("%s: the old secret still works after a rotation without grace", rc.typ)
			}
			if !rc.use(t, d, c, s1) {
				t.Errorf("%s: the new secret does not work", rc.typ)
			}
			if got := d.getCred(t, c.ID); got.TokenID != r1.TokenID || got.RotatedAt == nil || got.Status != "active" {
				t.Errorf("after rotation GET shows token_id %q rotated_at %v status %q", got.TokenID, got.RotatedAt, got.Status)
			}

			// grace 1h: both work
			var r2 api.Credential
			d.mustAPI(t, "POST", "/v1/credentials/"+c.ID+"/rotate", map[string]any{"grace": "1h"}, http.StatusOK, &r2)
			s2 := secretOf(r2)
			if r2.TokenID == r1.TokenID {
				t.Errorf("grace rotation kept token_id %q", r2.TokenID)
			}
			if !rc.use(t, d, c, s1) {
				t.Errorf("%s: the previous secret stopped during its 1h grace", rc.typ)
			}
			if !rc.use(t, d, c, s2) {
				t.Errorf("%s: the new secret does not work during the grace", rc.typ)
			}
			// the secret retired before stays dead
			if rc.use(t, d, c, old) {
				t.Errorf("%s: a secret retired two rotations ago came back", rc.typ)
			}

			// rotating again without grace ends the graced one too
			var r3 api.Credential
			d.mustAPI(t, "POST", "/v1/credentials/"+c.ID+"/rotate", map[string]any{}, http.StatusOK, &r3)
			for i, s := range []string{s1, s2} {
				if rc.use(t, d, c, s) {
					t.Errorf("%s: secret #%d survives a rotation without grace", rc.typ, i+1)
				}
			}
			if !rc.use(t, d, c, secretOf(r3)) {
				t.Errorf("%s: newest secret does not work", rc.typ)
			}
		})
	}

	t.Run("short grace ends", func(t *testing.T) {
		c := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "rot"})
		var r api.Credential
		d.mustAPI(t, "POST", "/v1/credentials/"+c.ID+"/rotate", map[string]any{"grace": "2s"}, http.StatusOK, &r)
		d.wantWorks(t, "old token in a 2s grace", c.Token)
		time.Sleep(2500 * time.Millisecond)
		d.wantRefused(t, "old token after its 2s grace", c.Token)
		d.wantWorks(t, "new token", r.Token)
	})

	t.Run("invalid", func(t *testing.T) {
		c := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "rot"})
		for _, g := range []string{"8d", "-1m", "soon"} {
			wantError(t, d.api(t, "POST", "/v1/credentials/"+c.ID+"/rotate", map[string]any{"grace": g}), 400, "invalid_argument")
		}
		wantError(t, d.api(t, "POST", "/v1/credentials/"+c.ID+"/rotate", map[string]any{"grace": "1m", "x": 1}), 400, "invalid_json")
		d.mustAPI(t, "POST", "/v1/credentials/"+c.ID+"/revoke", nil, http.StatusOK, nil)
		wantError(t, d.api(t, "POST", "/v1/credentials/"+c.ID+"/rotate", nil), http.StatusConflict, "conflict")
		if got := d.getCred(t, c.ID); got.Status != "revoked" || got.RevokedAt == nil {
			t.Errorf("revoked credential: status %q revoked_at %v", got.Status, got.RevokedAt)
		}
		wantError(t, d.api(t, "POST", "/v1/credentials/nope/rotate", nil), 404, "not_found")
	})
}

// TestCredMaxAuthnConcurrent races many authentications against max_authn.
func TestCredMaxAuthnConcurrent(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "race")
	d.setRole(t, "default", "race", "reader")

	for _, c := range []struct {
		name   string
		body   map[string]any
		tries  int
		want   int
		oauth2 bool
	}{
		{"login max_authn 5", map[string]any{"type": "auth-token", "user": "race", "max_authn": 5}, 40, 5, false},
		{"login one_time", map[string]any{"type": "auth-token", "user": "race", "one_time": true}, 40, 1, false},
		{"oauth2 max_authn 3", map[string]any{"type": "oauth2", "user": "race", "max_authn": 3}, 30, 3, true},
		{"oauth2 one_time", map[string]any{"type": "oauth2", "user": "race", "one_time": true}, 30, 1, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cr := d.newCred(t, "default", c.body)
			if cr.MaxAuthn != c.want {
				t.Errorf("max_authn %d, want %d", cr.MaxAuthn, c.want)
			}
			var wg sync.WaitGroup
			var mu sync.Mutex
			statuses := map[int]int{}
			var tokens []string
			start := make(chan struct{})
			for i := 0; i < c.tries; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					var res apiResp
					if c.oauth2 {
						res = d.oauthTokenRaw(t, cr.ClientID, cr.ClientSecret, nil)
					} else {
						res = d.bearer(t, cr.Token, "POST", "/v1/auth/login", nil)
					}
					mu.Lock()
					defer mu.Unlock()
					statuses[res.status]++
					if res.status == 200 || res.status == 201 {
						var x struct {
							Token       string `json:"token"`
							AccessToken string `json:"access_token"`
						}
						_ = json.Unmarshal(res.body, &x)
						tokens = append(tokens, x.Token+x.AccessToken)
					} else if res.status != 401 {
						t.Errorf("unexpected answer %d %s", res.status, res.body)
					}
				}()
			}
			close(start)
			wg.Wait()
			ok := statuses[200] + statuses[201]
			if ok != c.want || statuses[401] != c.tries-c.want {
				t.Errorf("%d concurrent authentications on max_authn %d: %v (want exactly %d successes)", c.tries, c.want, statuses, c.want)
			}
			got := d.getCred(t, cr.ID)
			if got.Status != "exhausted" || got.AuthnCount != c.want {
				t.Errorf("after the race: status %q authn_count %d, want exhausted / %d", got.Status, got.AuthnCount, c.want)
			}
			// every session handed out works, and there are exactly that many
			for _, tok := range tokens {
				d.wantWorks(t, "session won in the race", tok)
			}
			var ss api.List[api.Session]
			d.mustAPI(t, "GET", "/v1/sessions", nil, http.StatusOK, &ss)
			n := 0
			for _, s := range ss.Items {
				if s.CredentialID == cr.ID {
					n++
				}
			}
			if n != c.want {
				t.Errorf("%d sessions of the credential, want %d", n, c.want)
			}
			// and one more try is refused like any bad token
			if c.oauth2 {
				if res := d.oauthTokenRaw(t, cr.ClientID, cr.ClientSecret, nil); res.status != 401 {
					t.Errorf("exhausted client: %d %s", res.status, res.body)
				}
			} else {
				wantUnauthenticated(t, "exhausted login", d.bearer(t, cr.Token, "POST", "/v1/auth/login", nil))
			}
			d.wantInactive(t, "exhausted credential secret", secretOf(cr))
		})
	}
}

// TestCredExpiry lets credentials of every type expire.
func TestCredExpiry(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "exp")
	d.setRole(t, "default", "exp", "reader")

	t.Run("invalid expiry", func(t *testing.T) {
		for _, e := range []string{"-1h", "0s", "3years", "25months", "105weeks", "732days", "tomorrow", "1fortnight"} {
			wantError(t, d.api(t, "POST", "/v1/projects/default/credentials", map[string]any{"type": "auth-token", "user": "exp", "expire_in": e}),
				http.StatusBadRequest, "invalid_expiry")
		}
	})

	t.Run("accepted forms", func(t *testing.T) {
		for _, c := range []struct {
			in   string
			want func(time.Time) time.Time
		}{
			{"600seconds", func(n time.Time) time.Time { return n.Add(10 * time.Minute) }},
			{"45minutes", func(n time.Time) time.Time { return n.Add(45 * time.Minute) }},
			{"7hour", func(n time.Time) time.Time { return n.Add(7 * time.Hour) }},
			{"3days", func(n time.Time) time.Time { return n.Add(72 * time.Hour) }},
			{"2weeks", func(n time.Time) time.Time { return n.Add(14 * 24 * time.Hour) }},
			{"6months", func(n time.Time) time.Time { return n.AddDate(0, 6, 0) }},
			{"2years", func(n time.Time) time.Time { return n.AddDate(2, 0, 0) }},
			{"1h30m", func(n time.Time) time.Time { return n.Add(90 * time.Minute) }},
		} {
			now := time.Now()
			cr := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "exp", "expire_in": c.in})
			want := c.want(now)
			if cr.ExpiresAt == nil || cr.ExpiresAt.Sub(want).Abs() > 5*time.Second {
				t.Errorf("expire_in %s: expires_at %v, want about %v", c.in, cr.ExpiresAt, want)
			}
			d.mustAPI(t, "DELETE", "/v1/credentials/"+cr.ID, nil, http.StatusNoContent, nil)
		}
	})

	t.Run("expire", func(t *testing.T) {
		now := time.Now()
		at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "exp", "expire_in": "2s"})
		auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "exp", "expire_in": "2s"})
		oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "exp", "expire_in": "2s"})
		keep := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "exp", "expire_in": "30days"})
		forever := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "exp"})
		sess := d.login(t, auth.Token)
		tr := d.oauthToken(t, oc.ClientID, oc.ClientSecret)
		if sess.ExpiresAt == nil || sess.ExpiresAt.After(*auth.ExpiresAt) {
			t.Errorf("session expires %v, after its credential (%v)", sess.ExpiresAt, auth.ExpiresAt)
		}
		if tr.ExpiresIn > 2 {
			t.Errorf("oauth2 expires_in %d for a credential expiring in 2s", tr.ExpiresIn)
		}
		expiring := []api.Credential{at, auth, oc}
		bearers := map[string]string{"access token": at.Token, "session": sess.Token, "jwt": tr.AccessToken}
		for what, tok := range bearers {
			d.wantWorks(t, what+" before expiry", tok)
		}
		// expiring_within: the 2s ones and the 30-day one within 31 days, not the 2s ones beyond
		var l api.List[api.Credential]
		d.mustAPI(t, "GET", "/v1/projects/default/credentials?expiring_within=1h", nil, http.StatusOK, &l)
		if ids := credIDs(l.Items); !sameSet(ids, []string{at.ID, auth.ID, oc.ID}) {
			t.Errorf("expiring_within=1h: %v", ids)
		}
		d.mustAPI(t, "GET", "/v1/projects/default/credentials?expiring_within=31days", nil, http.StatusOK, &l)
		if ids := credIDs(l.Items); !sameSet(ids, []string{at.ID, auth.ID, oc.ID, keep.ID}) {
			t.Errorf("expiring_within=31days: %v", ids)
		}
		wantError(t, d.api(t, "GET", "/v1/projects/default/credentials?expiring_within=soon", nil), 400, "invalid_argument")

		time.Sleep(time.Until(now.Add(3 * time.Second)))

		for what, tok := range bearers {
			d.wantRefused(t, what+" after expiry", tok)
			d.wantInactive(t, what+" after expiry", tok)
		}
		wantUnauthenticated(t, "login after expiry", d.bearer(t, auth.Token, "POST", "/v1/auth/login", nil))
		if res := d.oauthTokenRaw(t, oc.ClientID, oc.ClientSecret, nil); res.status != 401 || !strings.Contains(string(res.body), "invalid_client") {
			t.Errorf("oauth2 token after expiry: %d %s", res.status, res.body)
		}
		for _, c := range expiring {
			if got := d.getCred(t, c.ID); got.Status != "expired" {
				t.Errorf("%s after expiry: status %q", c.Type, got.Status)
			}
		}
		d.mustAPI(t, "GET", "/v1/projects/default/credentials?expiring_within=1h", nil, http.StatusOK, &l)
		if len(l.Items) != 0 {
			t.Errorf("expired credentials still listed as expiring: %v", credIDs(l.Items))
		}
		d.wantWorks(t, "30-day token", keep.Token)
		d.wantWorks(t, "token without expiry", forever.Token)
		// rotating an expired credential does not bring it back
		var r api.Credential
		res := d.api(t, "POST", "/v1/credentials/"+at.ID+"/rotate", nil)
		if res.status == http.StatusOK {
			_ = json.Unmarshal(res.body, &r)
			if r.Token != "" && d.readsSecrets(t, r.Token) == http.StatusOK {
				t.Errorf("rotating an expired access token gave a working token")
			}
		}
	})
}

func credIDs(cs []api.Credential) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.ID)
	}
	return out
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// TestCredRestrictedBearer: a credential token may not mint, rotate or
// delete credentials unless an admin made it unrestricted.
func TestCredRestrictedBearer(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "boss")
	d.setRole(t, "default", "boss", "admin")
	d.newUser(t, "mem")
	d.setRole(t, "default", "mem", "member")

	restricted := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "boss"})
	victim := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "boss"})
	authTok := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "boss"})
	sess := d.login(t, authTok.Token)
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "boss"})
	jwt := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
	create := map[string]any{"type": "access-token", "user": "boss"}

	for what, tok := range map[string]string{"access token": restricted.Token, "session": sess.Token, "jwt": jwt} {
		t.Run("restricted "+what, func(t *testing.T) {
			wantError(t, d.bearer(t, tok, "POST", "/v1/projects/default/credentials", create), 403, "forbidden")
			wantError(t, d.bearer(t, tok, "POST", "/v1/credentials/"+victim.ID+"/rotate", nil), 403, "forbidden")
			wantError(t, d.bearer(t, tok, "POST", "/v1/credentials/"+restricted.ID+"/rotate", nil), 403, "forbidden")
			wantError(t, d.bearer(t, tok, "DELETE", "/v1/credentials/"+victim.ID, nil), 403, "forbidden")
			wantError(t, d.bearer(t, tok, "POST", "/v1/credentials/"+victim.ID+"/revoke", nil), 403, "forbidden")
			// reading is fine, and an admin token still manages the project
			d.mustBearer(t, tok, "GET", "/v1/credentials/"+victim.ID, nil, http.StatusOK, nil)
			d.mustBearer(t, tok, "GET", "/v1/projects/default/credentials", nil, http.StatusOK, nil)
			d.mustBearer(t, tok, "POST", secretsPath, map[string]any{"display_name": "by " + what, "payload": b64([]byte("x"))}, http.StatusCreated, nil)
		})
	}
	if got := d.getCred(t, victim.ID); got.Status != "active" || got.TokenID != victim.TokenID {
		t.Errorf("victim changed: %+v", got)
	}

	t.Run("unrestricted", func(t *testing.T) {
		un := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "boss", "unrestricted": true})
		if !un.Unrestricted {
			t.Errorf("unrestricted not shown: %+v", un)
		}
		var made api.Credential
		d.mustBearer(t, un.Token, "POST", "/v1/projects/default/credentials", create, http.StatusCreated, &made)
		if made.Token == "" || made.Unrestricted {
			t.Errorf("credential made by an unrestricted token: %+v", made)
		}
		d.wantWorks(t, "credential minted by an unrestricted token", made.Token)
		d.mustBearer(t, un.Token, "POST", "/v1/credentials/"+victim.ID+"/rotate", nil, http.StatusOK, nil)
		d.mustBearer(t, un.Token, "DELETE", "/v1/credentials/"+made.ID, nil, http.StatusNoContent, nil)
		// an auth-token login carries it to its session
		ua := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "boss", "unrestricted": true})
		us := d.login(t, ua.Token)
		d.mustBearer(t, us.Token, "POST", "/v1/projects/default/credentials", create, http.StatusCreated, nil)
	})

	t.Run("member", func(t *testing.T) {
		// a member's unrestricted token may make credentials for itself only
		un := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "mem", "unrestricted": true})
		d.mustBearer(t, un.Token, "POST", "/v1/projects/default/credentials", map[string]any{"type": "auth-token", "user": "mem"}, http.StatusCreated, nil)
		d.mustBearer(t, un.Token, "POST", "/v1/projects/default/credentials", map[string]any{"type": "auth-token"}, http.StatusCreated, nil)
		wantError(t, d.bearer(t, un.Token, "POST", "/v1/projects/default/credentials", map[string]any{"type": "auth-token", "user": "boss"}), 403, "forbidden")
		wantError(t, d.bearer(t, un.Token, "POST", "/v1/projects/default/credentials",
			map[string]any{"type": "auth-token", "user": "mem", "unrestricted": true}), 403, "forbidden")
		wantError(t, d.bearer(t, un.Token, "POST", "/v1/projects/default/credentials",
			map[string]any{"type": "auth-token", "user": "mem", "roles": []string{"admin"}}), 403, "forbidden")
		// and may not touch another user's credentials
		wantError(t, d.bearer(t, un.Token, "POST", "/v1/credentials/"+victim.ID+"/rotate", nil), 403, "forbidden")
		wantError(t, d.bearer(t, un.Token, "DELETE", "/v1/credentials/"+victim.ID, nil), 403, "forbidden")
	})
}

// TestSessionListAndRevoke lists and ends sessions.
func TestSessionListAndRevoke(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	for _, u := range []string{"s1", "s2"} {
		d.newUser(t, u)
		d.setRole(t, "default", u, "reader")
	}
	d.newPolicies(t, "default", "pol")
	a1 := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "s1", "policies": []string{"pol"}})
	x1 := d.login(t, a1.Token)
	y1 := d.login(t, a1.Token)
	at1 := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "s1"})
	a2 := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "s2"})
	x2 := d.login(t, a2.Token)

	var own api.List[api.Session]
	d.mustBearer(t, x1.Token, "GET", "/v1/sessions", nil, http.StatusOK, &own)
	kinds := map[string]string{}
	for _, s := range own.Items {
		if s.User != "s1" {
			t.Errorf("s1 sees a session of %s", s.User)
		}
		if s.Token != "" {
			t.Errorf("session list shows a token")
		}
		kinds[s.ID] = s.Kind
	}
	if kinds[x1.ID] != "login" || kinds[y1.ID] != "login" || len(kinds) != 3 {
		t.Errorf("s1's sessions %v, want two logins and one access-token", kinds)
	}
	for id, k := range kinds {
		if id != x1.ID && id != y1.ID && k != "access-token" {
			t.Errorf("third session kind %q, want access-token", k)
		}
	}
	if !slices.Equal(x1.Policies, []string{"pol"}) {
		t.Errorf("session policies %v, want [pol] copied from the credential", x1.Policies)
	}
	var all api.List[api.Session]
	d.mustAPI(t, "GET", "/v1/sessions", nil, http.StatusOK, &all)
	if len(all.Items) != 4 {
		t.Errorf("admin sees %d sessions, want 4", len(all.Items))
	}

	// s2 may not end s1's session; s1 may end its own
	wantError(t, d.bearer(t, x2.Token, "DELETE", "/v1/sessions/"+x1.ID, nil), 403, "forbidden")
	d.mustBearer(t, y1.Token, "DELETE", "/v1/sessions/"+x1.ID, nil, http.StatusNoContent, nil)
	d.wantRefused(t, "revoked session", x1.Token)
	d.wantWorks(t, "sibling session", y1.Token)
	wantError(t, d.api(t, "DELETE", "/v1/sessions/"+x1.ID, nil), 404, "not_found")
	// ending a session ends it, also one's own current session
	d.mustBearer(t, y1.Token, "DELETE", "/v1/sessions/"+y1.ID, nil, http.StatusNoContent, nil)
	d.wantRefused(t, "session that ended itself", y1.Token)
	// the access token's session: ending it stops the static token
	var atSess string
	for id, k := range kinds {
		if k == "access-token" {
			atSess = id
		}
	}
	d.wantWorks(t, "access token", at1.Token)
	d.mustAPI(t, "DELETE", "/v1/sessions/"+atSess, nil, http.StatusNoContent, nil)
	d.wantRefused(t, "access token whose session was revoked", at1.Token)
	// revoking a credential ends its sessions
	d.mustAPI(t, "POST", "/v1/credentials/"+a2.ID+"/revoke", nil, http.StatusOK, nil)
	d.wantRefused(t, "session of a revoked credential", x2.Token)
	d.mustAPI(t, "GET", "/v1/sessions", nil, http.StatusOK, &all)
	if len(all.Items) != 0 {
		t.Errorf("sessions left: %+v", all.Items)
	}
	// anonymous (no token, but we are admin here) vs garbage id
	wantError(t, d.api(t, "DELETE", "/v1/sessions/not-an-id", nil), 404, "not_found")
}

// TestRuleSavedAndAuthorize: saved rules by id, and /v1/authorize.
func TestRuleSavedAndAuthorize(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "api")
	d.setRole(t, "default", "api", "member")

	var r1, r2 api.SavedRule
	res := d.mustAPI(t, "POST", "/v1/access-rules", map[string]any{"service": "inventory", "method": "GET", "path": "/v1/things/*"}, http.StatusCreated, &r1)
	if r1.ID == "" || res.header.Get("Location") != "/v1/access-rules/"+r1.ID || r1.Service != "inventory" || r1.Method != "GET" || r1.Path != "/v1/things/*" {
		t.Errorf("saved rule %+v, Location %q", r1, res.header.Get("Location"))
	}
	d.mustAPI(t, "POST", "/v1/access-rules", map[string]any{"service": "inventory", "method": "POST", "path": "/v1/things/{id}/**"}, http.StatusCreated, &r2)
	for _, bad := range []map[string]any{
		{"service": "inventory", "method": "FETCH", "path": "/x"},
		{"service": "inventory", "method": "GET", "path": "no-slash"},
		{"service": "inventory", "method": "GET", "path": "/x", "id": r1.ID},
	} {
		wantError(t, d.api(t, "POST", "/v1/access-rules", bad), 400, "invalid_access_rule")
	}
	var rules api.List[api.SavedRule]
	d.mustAPI(t, "GET", "/v1/access-rules", nil, http.StatusOK, &rules)
	if len(rules.Items) != 2 {
		t.Errorf("saved rules %+v", rules.Items)
	}

	// reuse by id, in two credentials, mixed with an inline rule
	d.newPolicies(t, "default", "p")
	c1 := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "api", "policies": []string{"p"},
		"access_rules": []map[string]any{{"id": r1.ID}, {"id": r2.ID}}})
	c2 := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "api",
		"access_rules": []map[string]any{{"id": r1.ID}, {"service": "billing", "method": "GET", "path": "/invoices/**"}}})
	if len(c1.AccessRules) != 2 || c1.AccessRules[0].ID != r1.ID || c1.AccessRules[0].Path != "/v1/things/*" || c1.AccessRules[1].Service != "inventory" {
		t.Errorf("credential rules %+v", c1.AccessRules)
	}
	wantError(t, d.api(t, "POST", "/v1/projects/default/credentials", map[string]any{"type": "access-token", "user": "api",
		"access_rules": []map[string]any{{"id": "00000000-0000-7000-8000-000000000000"}}}), 400, "invalid_access_rule")
	wantError(t, d.api(t, "POST", "/v1/projects/default/credentials", map[string]any{"type": "access-token", "user": "api",
		"access_rules": []map[string]any{{"service": "x", "method": "GET", "path": "/a/***"}}}), 400, "invalid_access_rule")

	// in use: 409 until no credential uses it
	wantError(t, d.api(t, "DELETE", "/v1/access-rules/"+r1.ID, nil), http.StatusConflict, "conflict")
	d.mustAPI(t, "DELETE", "/v1/credentials/"+c2.ID, nil, http.StatusNoContent, nil)
	wantError(t, d.api(t, "DELETE", "/v1/access-rules/"+r1.ID, nil), http.StatusConflict, "conflict")

	unruled := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "api"})
	denyAll := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "api", "access_rules": []any{}})
	if denyAll.AccessRules == nil || len(denyAll.AccessRules) != 0 {
		t.Errorf("[] rules shown as %#v, want []", denyAll.AccessRules)
	}
	if unruled.AccessRules != nil {
		t.Errorf("no rules shown as %#v, want null", unruled.AccessRules)
	}
	ruledAuth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "api", "access_rules": []map[string]any{{"id": r1.ID}}})
	ruledSess := d.login(t, ruledAuth.Token)
	ruledOC := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "api", "access_rules": []map[string]any{{"id": r1.ID}}})
	ruledJWT := d.oauthToken(t, ruledOC.ClientID, ruledOC.ClientSecret).AccessToken
	revoked := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "api"})
	d.mustAPI(t, "POST", "/v1/credentials/"+revoked.ID+"/revoke", nil, http.StatusOK, nil)

	type ask struct {
		name, token, service, method, path string
		allowed                            bool
		reason                             string
	}
	matched1 := "matched rule " + r1.ID
	matched2 := "matched rule " + r2.ID
	for _, a := range []ask{
		{"one segment", c1.Token, "inventory", "GET", "/v1/things/42", true, matched1},
		{"two segments", c1.Token, "inventory", "GET", "/v1/things/42/parts", false, "no rule matches GET /v1/things/42/parts on inventory"},
		{"empty segment", c1.Token, "inventory", "GET", "/v1/things/", false, "no rule matches GET /v1/things/ on inventory"},
		{"** matches nothing", c1.Token, "inventory", "POST", "/v1/things/42/", true, matched2},
		{"the slash before ** is literal", c1.Token, "inventory", "POST", "/v1/things/42", false, "no rule matches POST /v1/things/42 on inventory"},
		{"** matches more", c1.Token, "inventory", "POST", "/v1/things/42/a/b", true, matched2},
		{"{id} is one segment", c1.Token, "inventory", "POST", "/v1/things/a/b", true, matched2},
		{"other method", c1.Token, "inventory", "DELETE", "/v1/things/42", false, "no rule matches DELETE /v1/things/42 on inventory"},
		{"method is exact", c1.Token, "inventory", "get", "/v1/things/42", false, ""},
		{"service is exact", c1.Token, "Inventory", "GET", "/v1/things/42", false, ""},
		{"other service", c1.Token, "billing", "GET", "/v1/things/42", false, ""},
		{"no rules", unruled.Token, "anything", "DELETE", "/whatever", true, "no access rules"},
		{"empty rule list", denyAll.Token, "inventory", "GET", "/v1/things/42", false, "no rule matches GET /v1/things/42 on inventory"},
		{"session inherits rules (allowed)", ruledSess.Token, "inventory", "GET", "/v1/things/1", true, matched1},
		{"session inherits rules (denied)", ruledSess.Token, "inventory", "POST", "/v1/things/1", false, ""},
		{"jwt inherits rules (allowed)", ruledJWT, "inventory", "GET", "/v1/things/1", true, matched1},
		{"jwt inherits rules (denied)", ruledJWT, "inventory", "POST", "/v1/things/1", false, ""},
		{"garbage token", "nope", "inventory", "GET", "/v1/things/42", false, badTokenMessage},
		{"forged token", wrongSecret(t, c1.Token), "inventory", "GET", "/v1/things/42", false, badTokenMessage},
		{"revoked token", revoked.Token, "anything", "GET", "/", false, badTokenMessage},
		{"auth token is not a bearer", ruledAuth.Token, "inventory", "GET", "/v1/things/42", false, badTokenMessage},
	} {
		t.Run(a.name, func(t *testing.T) {
			var dec api.Decision
			d.mustAPI(t, "POST", "/v1/authorize", map[string]any{"token": a.token, "service": a.service, "method": a.method, "path": a.path},
				http.StatusOK, &dec)
			if dec.Allowed != a.allowed || (a.reason != "" && dec.Reason != a.reason) || dec.Reason == "" {
				t.Errorf("decision %+v, want allowed=%v reason %q", dec, a.allowed, a.reason)
			}
			if a.reason != badTokenMessage && (dec.User != "api" || dec.Project != "default" || len(dec.Roles) == 0) {
				t.Errorf("decision %+v lacks user/project/roles", dec)
			}
			if a.reason == badTokenMessage && (dec.User != "" || dec.Project != "" || dec.Roles != nil) {
				t.Errorf("a refused token's decision tells %+v", dec)
			}
		})
	}
	var dec api.Decision
	d.mustAPI(t, "POST", "/v1/authorize", map[string]any{"token": c1.Token, "service": "inventory", "method": "GET", "path": "/v1/things/1"}, 200, &dec)
	if !slices.Equal(dec.Roles, []string{"member", "reader"}) {
		t.Errorf("roles %v, want [member reader]", dec.Roles)
	}
	// authorize is for anyone: a bearer-less, token-holding caller, and a bearer too
	d.mustBearer(t, denyAll.Token, "POST", "/v1/authorize", map[string]any{"token": c1.Token, "service": "inventory", "method": "GET", "path": "/v1/things/1"}, 200, nil)
	for _, bad := range []map[string]any{
		{"token": c1.Token, "service": "inventory", "method": "GET"},
		{"token": "", "service": "inventory", "method": "GET", "path": "/"},
	} {
		wantError(t, d.api(t, "POST", "/v1/authorize", bad), 400, "invalid_argument")
	}
	wantError(t, d.api(t, "POST", "/v1/authorize", map[string]any{"token": c1.Token, "service": "s", "method": "GET", "path": "/", "x": 1}), 400, "invalid_json")

	// losing the role shows in the decision at once (credential gone: bad token)
	d.setRole(t, "default", "api", "reader")
	d.mustAPI(t, "POST", "/v1/authorize", map[string]any{"token": c1.Token, "service": "inventory", "method": "GET", "path": "/v1/things/1"}, 200, &dec)
	if dec.Allowed {
		t.Errorf("member credential still allowed after the user became reader: %+v", dec)
	}
	// every credential using r1 is gone now (all were member+): it may go
	var left api.List[api.Credential]
	d.mustAPI(t, "GET", "/v1/projects/default/credentials", nil, http.StatusOK, &left)
	if len(left.Items) != 0 {
		t.Errorf("credentials left after lowering to reader: %d", len(left.Items))
	}
	d.mustAPI(t, "DELETE", "/v1/access-rules/"+r1.ID, nil, http.StatusNoContent, nil)
	d.mustAPI(t, "DELETE", "/v1/access-rules/"+r2.ID, nil, http.StatusNoContent, nil)
	wantError(t, d.api(t, "DELETE", "/v1/access-rules/"+r1.ID, nil), 404, "not_found")
}

// TestRuleCofferService: rules with service "coffer" restrict the bearer's
// calls to coffer's own API.
func TestRuleCofferService(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "cs")
	d.setRole(t, "default", "cs", "admin")
	s := d.createSecret(t, "default", "one", []byte("p"), nil)

	rule := func(service, method, path string) map[string]any {
		return map[string]any{"service": service, "method": method, "path": path}
	}
	type call struct {
		method, path string
		body         any
		want         int
	}
	newSecret := map[string]any{"display_name": "new", "payload": b64([]byte("x"))}
	for _, c := range []struct {
		name  string
		rules any
		calls []call
	}{
		{"list secrets only", []any{rule("coffer", "GET", "/v1/projects/default/secrets")}, []call{
			{"GET", secretsPath, nil, 200},
			{"GET", "/v1/secrets/" + s.ID, nil, 403},
			{"GET", "/v1/projects/default/credentials", nil, 403},
			{"POST", secretsPath, newSecret, 403},
			{"GET", "/v1/credentials", nil, 403},
		}},
		{"reads only", []any{rule("coffer", "GET", "/v1/**")}, []call{
			{"GET", secretsPath, nil, 200},
			{"GET", "/v1/secrets/" + s.ID, nil, 200},
			{"GET", "/v1/projects/default/credentials", nil, 200},
			{"POST", secretsPath, newSecret, 403},
			{"DELETE", "/v1/secrets/" + s.ID, nil, 403},
		}},
		{"one secret by id", []any{rule("coffer", "GET", "/v1/secrets/{id}"), rule("coffer", "POST", "/v1/projects/*/secrets")}, []call{
			{"GET", "/v1/secrets/" + s.ID, nil, 200},
			{"GET", secretsPath, nil, 403},
			{"POST", secretsPath, newSecret, 201},
		}},
		{"other services only", []any{rule("inventory", "GET", "/**")}, []call{
			{"GET", secretsPath, nil, 403},
			{"GET", "/v1/secrets/" + s.ID, nil, 403},
			{"GET", "/v1/credentials", nil, 403},
		}},
		{"empty list", []any{}, []call{
			{"GET", secretsPath, nil, 403},
			{"GET", "/v1/credentials", nil, 403},
		}},
		{"no rules", nil, []call{
			{"GET", secretsPath, nil, 200},
			{"POST", secretsPath, newSecret, 201},
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "cs", "access_rules": c.rules})
			auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "cs", "access_rules": c.rules})
			oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "cs", "access_rules": c.rules})
			bearers := map[string]string{
				"access token": at.Token,
				"session":      d.login(t, auth.Token).Token,
				"jwt":          d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken,
			}
			for what, tok := range bearers {
				for _, k := range c.calls {
					res := d.bearer(t, tok, k.method, k.path, k.body)
					if res.status != k.want {
						t.Errorf("%s: %s %s -> %d, want %d: %s", what, k.method, k.path, res.status, k.want, res.body)
					}
					if k.want == 403 {
						wantError(t, res, 403, "forbidden")
					}
				}
			}
		})
	}
}

// TestCredTokensNotInStateOrLog issues every kind of token, uses them,
// sends forged ones, then looks for them in the state directory and the
// daemon's output.
func TestCredTokensNotInStateOrLog(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t), "--log-level", "debug")
	d.newUser(t, "leak")
	d.setRole(t, "default", "leak", "admin")

	var secrets []needle
	add := func(what, tok string) {
		if tok == "" {
			t.Fatalf("%s: empty", what)
		}
		secrets = append(secrets, needle{what, tok})
		if p, raw, ok := decodeTokenRaw(tok); ok && p != "" {
			secrets = append(secrets,
				needle{what + " (body)", tok[4:]},
				needle{what + " (raw secret bytes)", string(raw[16:48])},
				needle{what + " (secret hex)", fmt.Sprintf("%x", raw[16:48])},
				needle{what + " (secret base64)", b64(raw[16:48])},
			)
		} else if parts := strings.Split(tok, "."); len(parts) == 3 {
			secrets = append(secrets, needle{what + " (signature)", parts[2]})
		}
	}
	auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "leak", "name": "leak-auth"})
	add("auth token", auth.Token)
	add("session token", d.login(t, auth.Token).Token)
	var ra api.Credential
	d.mustAPI(t, "POST", "/v1/credentials/"+auth.ID+"/rotate", map[string]any{"grace": "1h"}, http.StatusOK, &ra)
	add("rotated auth token", ra.Token)
	add("session of the rotated auth token", d.login(t, ra.Token).Token)
	at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "leak"})
	add("access token", at.Token)
	d.wantWorks(t, "access token", at.Token)
	var rat api.Credential
	d.mustAPI(t, "POST", "/v1/credentials/"+at.ID+"/rotate", nil, http.StatusOK, &rat)
	add("rotated access token", rat.Token)
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "leak"})
	add("client secret", oc.ClientSecret)
	jwt := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
	add("jwt", jwt)
	d.wantWorks(t, "jwt", jwt)
	var roc api.Credential
	d.mustAPI(t, "POST", "/v1/credentials/"+oc.ID+"/rotate", nil, http.StatusOK, &roc)
	add("rotated client secret", roc.ClientSecret)
	un := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "leak", "unrestricted": true})
	add("unrestricted token", un.Token)
	var minted api.Credential
	d.mustBearer(t, un.Token, "POST", "/v1/projects/default/credentials", map[string]any{"type": "auth-token"}, http.StatusCreated, &minted)
	add("token minted by a token", minted.Token)

	// refused and introspected tokens must not be logged either
	forged := wrongSecret(t, rat.Token)
	add("forged token", forged)
	d.wantRefused(t, "forged", forged)
	d.wantRefused(t, "old access token", at.Token)
	wantUnauthenticated(t, "forged login", d.bearer(t, wrongSecret(t, ra.Token), "POST", "/v1/auth/login", nil))
	if res := d.oauthTokenRaw(t, oc.ClientID, oc.ClientSecret, nil); res.status != 401 {
		t.Errorf("old client secret: %d", res.status)
	}
	if res := d.oauthTokenRaw(t, oc.ClientID, wrongSecret(t, roc.ClientSecret), nil); res.status != 401 {
		t.Errorf("forged client secret: %d", res.status)
	}
	d.bearer(t, "Basic "+roc.ClientSecret, "GET", secretsPath, nil)
	for _, tok := range []string{ra.Token, rat.Token, roc.ClientSecret, jwt, forged} {
		d.introspect(t, tok)
		d.api(t, "POST", "/v1/authorize", map[string]any{"token": tok, "service": "s", "method": "GET", "path": "/"})
	}
	d.api(t, "POST", "/v1/authorize", map[string]any{"token": rat.Token, "service": "s", "method": "GET", "path": "/", "bogus": rat.Token})

	d.Stop(t)
	scanText(t, "daemon log", []byte(d.stderr.String()), secrets)
	scanText(t, "daemon stdout", []byte(d.stdout.String()), secrets)
	files, _ := scanTree(t, d.stateDir, secrets)
	if files == 0 {
		t.Fatalf("no files under %s", d.stateDir)
	}
	// sanity: the log does record the refusals (with token ids, not tokens)
	if !strings.Contains(d.stderr.String(), "authentication failed") {
		t.Errorf("the daemon log has no authentication failure")
	}
	t.Logf("scanned %d state files and %d bytes of log for %d needles", files, len(d.stderr.String()), len(secrets))
}

// TestCredAccessTokenSessionRevokedThenRotated: an access token is its
// session; once that session is revoked (DELETE /v1/sessions/{id}) the
// token stops. Rotating the credential must then either refuse or hand out
// a token that works, never a token that is dead on arrival.
func TestCredAccessTokenSessionRevokedThenRotated(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "ats")
	d.setRole(t, "default", "ats", "reader")
	at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "ats"})
	_, in := d.introspect(t, at.Token)
	if in.SessionID == "" {
		t.Fatalf("access token has no session: %+v", in)
	}
	d.mustAPI(t, "DELETE", "/v1/sessions/"+in.SessionID, nil, http.StatusNoContent, nil)
	d.wantRefused(t, "access token whose session was revoked", at.Token)
	st := d.getCred(t, at.ID).Status
	res := d.api(t, "POST", "/v1/credentials/"+at.ID+"/rotate", nil)
	if res.status != http.StatusOK {
		// refusing is fine if the credential says why: it is revoked
		wantError(t, res, http.StatusConflict, "conflict")
		if st != "revoked" {
			t.Errorf("the access token is dead but its credential shows status %q, want revoked", st)
		}
		return
	}
	var r api.Credential
	if err := json.Unmarshal(res.body, &r); err != nil {
		t.Fatal(err)
	}
	if got := d.readsSecrets(t, r.Token); got != http.StatusOK {
		t.Errorf("rotation answered 200 with a new token that is refused (%d); the credential showed status %q before and %q after",
			got, st, r.Status)
	}
}

// TestCredConcurrentRotation: many rotations at once through the Go
// client leave exactly one working token, the one GET shows.
func TestCredConcurrentRotation(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "cr")
	d.setRole(t, "default", "cr", "reader")
	cl := client.NewClient(d.socket)
	ctx := context.Background()
	for _, typ := range []string{"access-token", "auth-token", "oauth2"} {
		t.Run(typ, func(t *testing.T) {
			c, err := cl.CreateCredential(ctx, "default", api.CredentialCreateRequest{Type: typ, User: "cr"})
			if err != nil {
				t.Fatal(err)
			}
			var mu sync.Mutex
			var secrets []string
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := 0; i < 16; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					r, err := cl.RotateCredential(ctx, c.ID, "")
					mu.Lock()
					defer mu.Unlock()
					if err != nil {
						t.Errorf("concurrent rotate: %v", err)
						return
					}
					secrets = append(secrets, secretOf(r))
				}()
			}
			close(start)
			wg.Wait()
			final, err := cl.GetCredential(ctx, c.ID)
			if err != nil {
				t.Fatal(err)
			}
			var live []string
			for _, s := range append(secrets, secretOf(c)) {
				if in, err := cl.Introspect(ctx, s); err == nil && in.Active {
					live = append(live, s)
				}
			}
			if len(live) != 1 || tokenIDOf(t, live[0]) != final.TokenID {
				t.Errorf("%d rotations: %d secrets still active, want exactly the one with token_id %s", len(secrets), len(live), final.TokenID)
			}
		})
	}
}
