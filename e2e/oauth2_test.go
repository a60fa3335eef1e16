package e2e

// End-to-end tests of the OAuth2 client-credentials grant with a standard
// client (golang.org/x/oauth2), JWT verification with a JOSE library
// against the daemon's JWKS, the RFC 8414 metadata, and introspection of
// every token kind (issue 3).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// tokenURL is the token endpoint as clients on the socket name it.
const tokenURL = "http://coffer/oauth2/token"

// oauthCtx makes x/oauth2 talk to d over its Unix socket.
func (d *daemonProc) oauthCtx() context.Context {
	return context.WithValue(context.Background(), oauth2.HTTPClient, httpClient(d.socket))
}

// fetchJWKS reads and parses the daemon's key set.
func (d *daemonProc) fetchJWKS(t *testing.T) jose.JSONWebKeySet {
	t.Helper()
	res := d.mustAPI(t, "GET", "/.well-known/jwks.json", nil, http.StatusOK, nil)
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(res.body, &set); err != nil {
		t.Fatalf("JWKS %s does not parse as a JWK set: %v", res.body, err)
	}
	return set
}

// accessClaims are the RFC 9068 claims plus coffer's.
type accessClaims struct {
	josejwt.Claims
	ClientID string   `json:"client_id"`
	Scope    string   `json:"scope"`
	Roles    []string `json:"roles"`
	Policies []string `json:"policies"`
	Project  string   `json:"project"`
}

// verifyJWT checks tok against set the way a relying service would, and
// returns its claims.
func verifyJWT(t *testing.T, set jose.JSONWebKeySet, tok string) (accessClaims, jose.Header, error) {
	t.Helper()
	var c accessClaims
	parsed, err := josejwt.ParseSigned(tok, []jose.SignatureAlgorithm{jose.ES256, jose.PS256})
	if err != nil {
		return c, jose.Header{}, err
	}
	if len(parsed.Headers) != 1 {
		return c, jose.Header{}, errors.New("not exactly one signature")
	}
	h := parsed.Headers[0]
	keys := set.Key(h.KeyID)
	if len(keys) != 1 {
		return c, h, errors.New("kid not in the JWKS")
	}
	if err := parsed.Claims(keys[0].Key, &c); err != nil {
		return c, h, err
	}
	return c, h, nil
}

// tamperJWT changes a JWT's payload (roles become admin) and keeps its
// signature.
func tamperJWT(t *testing.T, tok string) string {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a JWT")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(payload, &m); err != nil {
		t.Fatal(err)
	}
	m["roles"] = []string{"admin", "member", "reader"}
	m["scope"] = "admin member reader"
	b, _ := json.Marshal(m)
	parts[1] = base64.RawURLEncoding.EncodeToString(b)
	return strings.Join(parts, ".")
}

func TestOAuthClientCredentials(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	u := d.newUser(t, "oa")
	d.setRole(t, "default", "oa", "member")
	d.createSecret(t, "default", "s", []byte("x"), nil)
	d.newPolicies(t, "", "p1", "p2") // global ones
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "oa", "policies": []string{"p1", "p2"}})
	set := d.fetchJWKS(t)

	for _, style := range []struct {
		name  string
		style oauth2.AuthStyle
	}{{"basic", oauth2.AuthStyleInHeader}, {"form", oauth2.AuthStyleInParams}, {"auto", oauth2.AuthStyleAutoDetect}} {
		t.Run(style.name, func(t *testing.T) {
			cfg := clientcredentials.Config{ClientID: oc.ClientID, ClientSecret: oc.ClientSecret, TokenURL: tokenURL, AuthStyle: style.style}
			before := time.Now()
			tok, err := cfg.Token(d.oauthCtx())
			if err != nil {
				t.Fatalf("client credentials grant: %v", err)
			}
			if tok.TokenType != "Bearer" || tok.AccessToken == "" {
				t.Fatalf("token type %q", tok.TokenType)
			}
			if exp := tok.Expiry; exp.Before(before.Add(59*time.Minute)) || exp.After(time.Now().Add(61*time.Minute)) {
				t.Errorf("expiry %v, want about 1h (the user's ttl)", exp)
			}
			if s, _ := tok.Extra("scope").(string); s != "member reader" {
				t.Errorf("scope %q, want \"member reader\"", s)
			}

			// the standard client's http.Client carries it to coffer
			hc := cfg.Client(d.oauthCtx())
			resp, err := hc.Get("http://coffer" + secretsPath)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("GET %s through the oauth2 client: %d", secretsPath, resp.StatusCode)
			}
			d.wantWorks(t, "jwt", tok.AccessToken)

			// offline verification against the JWKS
			c, h, err := verifyJWT(t, set, tok.AccessToken)
			if err != nil {
				t.Fatalf("JWT does not verify against the JWKS: %v", err)
			}
			if h.Algorithm != "ES256" || h.KeyID == "" || h.KeyID != set.Keys[0].KeyID {
				t.Errorf("header alg %q kid %q, want ES256 and the JWKS kid %q", h.Algorithm, h.KeyID, set.Keys[0].KeyID)
			}
			if typ, _ := h.ExtraHeaders[jose.HeaderType].(string); typ != "at+jwt" {
				t.Errorf("typ %q, want at+jwt", typ)
			}
			if err := c.ValidateWithLeeway(josejwt.Expected{Issuer: "http://coffer", AnyAudience: josejwt.Audience{"http://coffer"},
				Subject: u.ID, Time: time.Now()}, 0); err != nil {
				t.Errorf("claims: %v (%+v)", err, c)
			}
			if c.ClientID != oc.ClientID || c.ID == "" || c.IssuedAt == nil || c.Expiry == nil ||
				!slices.Equal(c.Roles, []string{"member", "reader"}) || !slices.Equal(c.Policies, []string{"p1", "p2"}) ||
				c.Scope != "member reader" || c.Project != "default" {
				t.Errorf("claims %+v", c)
			}
			if c.Expiry != nil && c.Expiry.Time().Sub(tok.Expiry).Abs() > 2*time.Second {
				t.Errorf("exp %v vs expires_in %v", c.Expiry.Time(), tok.Expiry)
			}
			// jti is the session, which the owner can see and revoke
			var ss api.List[api.Session]
			d.mustBearer(t, tok.AccessToken, "GET", "/v1/sessions", nil, http.StatusOK, &ss)
			found := false
			for _, s := range ss.Items {
				if s.ID == c.ID {
					found = s.Kind == "oauth2" && s.CredentialID == oc.ID
				}
			}
			if !found {
				t.Errorf("no oauth2 session %s of the credential in %+v", c.ID, ss.Items)
			}
			d.mustAPI(t, "DELETE", "/v1/sessions/"+c.ID, nil, http.StatusNoContent, nil)
			d.wantRefused(t, "jwt of a revoked session", tok.AccessToken)
			d.wantInactive(t, "jwt of a revoked session", tok.AccessToken)
			// the same token in the standard client's transport
			static := oauth2.NewClient(d.oauthCtx(), oauth2.StaticTokenSource(tok))
			resp, err = static.Get("http://coffer" + secretsPath)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Errorf("oauth2 client after revocation: %d, want 401", resp.StatusCode)
			}
		})
	}

	t.Run("scope", func(t *testing.T) {
		cfg := clientcredentials.Config{ClientID: oc.ClientID, ClientSecret: oc.ClientSecret, TokenURL: tokenURL, Scopes: []string{"reader"}}
		tok, err := cfg.Token(d.oauthCtx())
		if err != nil {
			t.Fatal(err)
		}
		c, _, err := verifyJWT(t, set, tok.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(c.Roles, []string{"reader"}) || c.Scope != "reader" {
			t.Errorf("scoped token roles %v scope %q", c.Roles, c.Scope)
		}
		var in api.Introspection
		_, in = d.introspect(t, tok.AccessToken)
		if !slices.Equal(in.Roles, []string{"reader"}) {
			t.Errorf("introspected scoped roles %v", in.Roles)
		}
		cfg.Scopes = []string{"admin"}
		_, err = cfg.Token(d.oauthCtx())
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_scope" || re.Response.StatusCode != 400 {
			t.Errorf("scope beyond the client's roles: %v, want 400 invalid_scope", err)
		}
		cfg.Scopes = []string{"reader", "writer"}
		if _, err = cfg.Token(d.oauthCtx()); !errors.As(err, &re) || re.ErrorCode != "invalid_scope" {
			t.Errorf("unknown scope: %v, want invalid_scope", err)
		}
	})

	t.Run("tampered", func(t *testing.T) {
		tr := d.oauthToken(t, oc.ClientID, oc.ClientSecret)
		bad := tamperJWT(t, tr.AccessToken)
		if _, _, err := verifyJWT(t, set, bad); err == nil {
			t.Errorf("a tampered JWT verifies against the JWKS")
		}
		d.wantRefused(t, "tampered jwt", bad)
		d.wantInactive(t, "tampered jwt", bad)
		// alg none, same claims
		parts := strings.Split(tr.AccessToken, ".")
		none := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"at+jwt"}`)) + "." + parts[1] + "."
		d.wantRefused(t, "alg none jwt", none)
		d.wantInactive(t, "alg none jwt", none)
		d.wantWorks(t, "the real one", tr.AccessToken)
	})

	t.Run("wrong secret", func(t *testing.T) {
		cfg := clientcredentials.Config{ClientID: oc.ClientID, ClientSecret: wrongSecret(t, oc.ClientSecret), TokenURL: tokenURL,
			AuthStyle: oauth2.AuthStyleInHeader}
		_, err := cfg.Token(d.oauthCtx())
		var re *oauth2.RetrieveError
		if !errors.As(err, &re) || re.ErrorCode != "invalid_client" || re.Response.StatusCode != 401 {
			t.Fatalf("wrong secret: %v, want 401 invalid_client", err)
		}
		if !strings.HasPrefix(re.Response.Header.Get("WWW-Authenticate"), "Basic") {
			t.Errorf("WWW-Authenticate %q", re.Response.Header.Get("WWW-Authenticate"))
		}
	})

	t.Run("jwks", func(t *testing.T) {
		if len(set.Keys) != 1 {
			t.Fatalf("%d keys", len(set.Keys))
		}
		k := set.Keys[0]
		pub, ok := k.Key.(*ecdsa.PublicKey)
		if !ok || pub.Curve != elliptic.P256() || k.Algorithm != "ES256" || k.Use != "sig" || k.KeyID == "" || !k.IsPublic() {
			t.Errorf("JWK %+v", k)
		}
		// kid is the RFC 7638 thumbprint
		tp, err := k.Thumbprint(crypto.SHA256)
		if err == nil && base64.RawURLEncoding.EncodeToString(tp) != k.KeyID {
			t.Logf("kid %q is not the RFC 7638 SHA-256 thumbprint", k.KeyID)
		}
		res := d.mustAPI(t, "GET", "/.well-known/jwks.json", nil, http.StatusOK, nil)
		if strings.Contains(string(res.body), `"d"`) {
			t.Errorf("JWKS carries a private part: %s", res.body)
		}
		// same key after a restart: tokens stay verifiable
		d.Stop(t)
		d2 := startDaemon(t, d.dir)
		set2 := d2.fetchJWKS(t)
		if len(set2.Keys) != 1 || set2.Keys[0].KeyID != k.KeyID {
			t.Errorf("kid changed across a restart: %q -> %+v", k.KeyID, set2.Keys)
		}
	})
}

func TestOAuthTokenErrors(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "oe")
	d.setRole(t, "default", "oe", "reader")
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "oe"})
	other := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "oe"})
	auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "oe"})
	basic := func(id, secret string) http.Header {
		h := http.Header{}
		h.Set("Authorization", "Basic "+b64([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret))))
		return h
	}
	cc := "client_credentials"
	for _, c := range []struct {
		name      string
		hdr       http.Header
		body      any
		status    int
		code      string
		challenge bool
	}{
		{"ok basic", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {cc}}, 200, "", false},
		{"ok form", nil, url.Values{"grant_type": {cc}, "client_id": {oc.ClientID}, "client_secret": {oc.ClientSecret}}, 200, "", false},
		{"ok basic + matching client_id", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {cc}, "client_id": {oc.ClientID}}, 200, "", false},
		{"wrong secret basic", basic(oc.ClientID, wrongSecret(t, oc.ClientSecret)), url.Values{"grant_type": {cc}}, 401, "invalid_client", true},
		{"wrong secret form", nil, url.Values{"grant_type": {cc}, "client_id": {oc.ClientID}, "client_secret": {wrongSecret(t, oc.ClientSecret)}}, 401, "invalid_client", false},
		{"garbage secret", basic(oc.ClientID, "hunter2"), url.Values{"grant_type": {cc}}, 401, "invalid_client", true},
		{"unknown client id", basic("nope", oc.ClientSecret), url.Values{"grant_type": {cc}}, 401, "invalid_client", true},
		{"another client's id", basic(other.ClientID, oc.ClientSecret), url.Values{"grant_type": {cc}}, 401, "invalid_client", true},
		{"auth token as secret", basic(oc.ClientID, auth.Token), url.Values{"grant_type": {cc}}, 401, "invalid_client", true},
		{"no client authentication", nil, url.Values{"grant_type": {cc}}, 401, "invalid_client", false},
		{"bearer instead of basic", http.Header{"Authorization": {"Bearer " + oc.ClientSecret}}, url.Values{"grant_type": {cc}}, 401, "invalid_client", false},
		{"missing grant_type", basic(oc.ClientID, oc.ClientSecret), url.Values{}, 400, "invalid_request", false},
		{"password grant", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {"password"}, "username": {"a"}, "password": {"b"}}, 400, "unsupported_grant_type", false},
		{"code grant", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {"authorization_code"}, "code": {"x"}}, 400, "unsupported_grant_type", false},
		{"two client auth methods", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {cc}, "client_secret": {oc.ClientSecret}}, 400, "invalid_request", false},
		{"mismatched client_id", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {cc}, "client_id": {other.ClientID}}, 400, "invalid_request", false},
		{"repeated parameter", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {cc, cc}}, 400, "invalid_request", false},
		{"scope beyond roles", basic(oc.ClientID, oc.ClientSecret), url.Values{"grant_type": {cc}, "scope": {"admin"}}, 400, "invalid_scope", false},
		{"json body", basic(oc.ClientID, oc.ClientSecret), map[string]any{"grant_type": cc}, 400, "invalid_request", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			res := d.send(t, "POST", "/oauth2/token", c.hdr, c.body)
			if res.status != c.status {
				t.Errorf("status %d, want %d: %s", res.status, c.status, res.body)
			}
			if cc := res.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q, want no-store", cc)
			}
			if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
				t.Errorf("Content-Type %q", ct)
			}
			wa := res.header.Get("WWW-Authenticate")
			if c.challenge && !strings.HasPrefix(wa, "Basic") {
				t.Errorf("WWW-Authenticate %q, want a Basic challenge", wa)
			}
			if c.status == 200 {
				var tr map[string]any
				if err := json.Unmarshal(res.body, &tr); err != nil {
					t.Fatal(err)
				}
				if tr["token_type"] != "Bearer" || tr["access_token"] == "" || tr["expires_in"] == nil || tr["scope"] != "reader" {
					t.Errorf("token response %s", res.body)
				}
				return
			}
			// RFC 6749 §5.2 shape: error (+ error_description), nothing else
			var e map[string]any
			if err := json.Unmarshal(res.body, &e); err != nil {
				t.Fatalf("error body %s: %v", res.body, err)
			}
			if e["error"] != c.code {
				t.Errorf("error %v, want %s: %s", e["error"], c.code, res.body)
			}
			for k := range e {
				if k != "error" && k != "error_description" && k != "error_uri" {
					t.Errorf("error body has field %q: %s", k, res.body)
				}
			}
		})
	}
	// every invalid_client reads the same: no oracle on which part was wrong
	var descs []string
	for _, h := range []http.Header{
		basic(oc.ClientID, wrongSecret(t, oc.ClientSecret)), basic("nope", oc.ClientSecret),
		basic(other.ClientID, oc.ClientSecret), basic(oc.ClientID, unknownID(t, oc.ClientSecret)),
	} {
		res := d.send(t, "POST", "/oauth2/token", h, url.Values{"grant_type": {cc}})
		descs = append(descs, string(res.body))
	}
	for _, x := range descs[1:] {
		if x != descs[0] {
			t.Errorf("invalid_client answers differ: %s vs %s", descs[0], x)
		}
	}
	wantError(t, d.api(t, "GET", "/oauth2/token", nil), http.StatusMethodNotAllowed, "method_not_allowed")
	// the failed attempts did not count; the successes did (3 above)
	if got := d.getCred(t, oc.ID); got.AuthnCount != 3 {
		t.Errorf("authn_count %d after 3 good and many bad requests, want 3", got.AuthnCount)
	}
}

func TestOAuthMetadata(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	var m map[string]any
	d.mustAPI(t, "GET", "/.well-known/oauth-authorization-server", nil, http.StatusOK, &m)
	for k, want := range map[string]string{
		"issuer":                 "http://coffer",
		"token_endpoint":         tokenURL,
		"introspection_endpoint": "http://coffer/oauth2/introspect",
		"jwks_uri":               "http://coffer/.well-known/jwks.json",
	} {
		if m[k] != want {
			t.Errorf("%s = %v, want %s", k, m[k], want)
		}
	}
	has := func(k, v string) bool {
		xs, _ := m[k].([]any)
		for _, x := range xs {
			if x == v {
				return true
			}
		}
		return false
	}
	if !has("grant_types_supported", "client_credentials") || !has("token_endpoint_auth_methods_supported", "client_secret_basic") ||
		!has("token_endpoint_auth_methods_supported", "client_secret_post") {
		t.Errorf("metadata %v", m)
	}
	if _, ok := m["response_types_supported"]; !ok {
		t.Errorf("response_types_supported (required by RFC 8414) is missing")
	}
	// the metadata's jwks_uri answers on the socket, anonymously too
	d.mustBearer(t, "", "GET", "/.well-known/jwks.json", nil, http.StatusOK, nil)
}

func TestIntrospect(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	u := d.newUser(t, "in")
	d.setRole(t, "default", "in", "member")
	rules := []map[string]any{{"service": "inventory", "method": "GET", "path": "/v1/**"}}

	// an expiring one first, to look at after it died
	exp := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "in", "expire_in": "2s"})
	expAt := time.Now().Add(3 * time.Second)

	d.newPolicies(t, "default", "pa", "pt", "po")
	auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "in", "roles": []string{"reader"}, "policies": []string{"pa"}, "access_rules": rules})
	sess := d.login(t, auth.Token)
	at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "in", "policies": []string{"pt"}, "expire_in": "1days"})
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "in", "policies": []string{"po"}})
	tr := d.oauthToken(t, oc.ClientID, oc.ClientSecret)
	var jwtSession string
	{
		set := d.fetchJWKS(t)
		c, _, err := verifyJWT(t, set, tr.AccessToken)
		if err != nil {
			t.Fatal(err)
		}
		jwtSession = c.ID
	}

	for _, c := range []struct {
		name, token, tokenType, credID, clientID string
		session                                  string // "" none, "*" any
		roles, policies                          []string
		rules                                    bool
		exp                                      bool
	}{
		{"auth token", auth.Token, "auth-token", auth.ID, "", "", []string{"reader"}, []string{"pa"}, true, false},
		{"session", sess.Token, "session", auth.ID, "", sess.ID, []string{"reader"}, []string{"pa"}, true, true},
		{"access token", at.Token, "access-token", at.ID, "", "*", []string{"member", "reader"}, []string{"pt"}, false, true},
		{"client secret", oc.ClientSecret, "oauth2-client-secret", oc.ID, oc.ClientID, "", []string{"member", "reader"}, []string{"po"}, false, false},
		{"jwt", tr.AccessToken, "oauth2-access-token", oc.ID, oc.ClientID, jwtSession, []string{"member", "reader"}, []string{"po"}, false, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			res, in := d.introspect(t, c.token)
			if cc := res.header.Get("Cache-Control"); cc != "no-store" {
				t.Errorf("Cache-Control %q", cc)
			}
			if !in.Active || in.TokenType != c.tokenType || in.CredentialID != c.credID || in.ClientID != c.clientID ||
				in.Username != "in" || in.Subject != u.ID || in.Project != "default" || in.Issuer != "http://coffer" ||
				!slices.Equal(in.Roles, c.roles) || !slices.Equal(in.Policies, c.policies) || in.Scope != strings.Join(c.roles, " ") ||
				in.IssuedAt == 0 {
				t.Errorf("introspection %s", res.body)
			}
			switch c.session {
			case "":
				if in.SessionID != "" {
					t.Errorf("session_id %q for a credential secret", in.SessionID)
				}
			case "*":
				if in.SessionID == "" {
					t.Errorf("no session_id")
				}
			default:
				if in.SessionID != c.session {
					t.Errorf("session_id %q, want %q", in.SessionID, c.session)
				}
			}
			if c.rules != (len(in.AccessRules) == 1) || (c.rules && in.AccessRules[0].Path != "/v1/**") {
				t.Errorf("access_rules %+v", in.AccessRules)
			}
			if c.exp && (in.ExpiresAt < time.Now().Unix() || in.ExpiresAt > time.Now().Add(25*time.Hour).Unix()) {
				t.Errorf("exp %d", in.ExpiresAt)
			}
			// introspection is idempotent and does not count as a use
			d.introspect(t, c.token)
		})
	}
	if got := d.getCred(t, auth.ID); got.AuthnCount != 1 {
		t.Errorf("auth token authn_count %d after one login and introspections, want 1", got.AuthnCount)
	}
	if got := d.getCred(t, oc.ID); got.AuthnCount != 1 {
		t.Errorf("oauth2 authn_count %d after one grant and introspections, want 1", got.AuthnCount)
	}
	// a bearer may introspect too, and a token with rules excluding coffer as well
	if res := d.send(t, "POST", "/oauth2/introspect", http.Header{"Authorization": {"Bearer " + sess.Token}}, url.Values{"token": {at.Token}}); res.status != 200 {
		t.Errorf("introspect with a restricted bearer: %d %s", res.status, res.body)
	}

	// inactive: exactly {"active":false}
	revoked := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "in"})
	d.mustAPI(t, "POST", "/v1/credentials/"+revoked.ID+"/revoke", nil, http.StatusOK, nil)
	revokedAuth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "in"})
	d.mustAPI(t, "POST", "/v1/credentials/"+revokedAuth.ID+"/revoke", nil, http.StatusOK, nil)
	rotated := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "in"})
	d.mustAPI(t, "POST", "/v1/credentials/"+rotated.ID+"/rotate", nil, http.StatusOK, nil)
	ended := d.login(t, auth.Token)
	d.mustAPI(t, "DELETE", "/v1/sessions/"+ended.ID, nil, http.StatusNoContent, nil)
	if w := time.Until(expAt); w > 0 {
		time.Sleep(w)
	}
	for _, c := range []struct{ what, tok string }{
		{"garbage", "definitely-not-a-token"},
		{"jwt-looking garbage", "eyJhbGciOiJFUzI1NiJ9.eyJ9.c2ln"},
		{"wrong checksum", badChecksum(at.Token)},
		{"wrong checksum auth token", badChecksum(auth.Token)},
		{"unknown id", unknownID(t, at.Token)},
		{"wrong secret", wrongSecret(t, at.Token)},
		{"wrong secret client secret", wrongSecret(t, oc.ClientSecret)},
		{"revoked access token", revoked.Token},
		{"revoked auth token", revokedAuth.Token},
		{"rotated-away client secret", rotated.ClientSecret},
		{"revoked session", ended.Token},
		{"expired access token", exp.Token},
		{"tampered jwt", tamperJWT(t, tr.AccessToken)},
	} {
		d.wantInactive(t, c.what, c.tok)
	}
	res := d.send(t, "POST", "/oauth2/introspect", nil, url.Values{})
	wantError(t, res, 400, "invalid_request")
	res = d.send(t, "POST", "/oauth2/introspect", nil, map[string]any{"token": at.Token})
	wantError(t, res, 400, "invalid_request")
	// and the live ones are still live
	if _, in := d.introspect(t, at.Token); !in.Active {
		t.Errorf("live access token inactive after the checks")
	}
}
