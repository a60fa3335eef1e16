package e2e

// End-to-end tests of tokens other systems accept (issue #15, part 3): a
// standard OpenID Connect relying-party library (github.com/coreos/go-oidc)
// discovers coffer through its configured issuer and verifies its JWTs;
// audiences are honoured against each credential's allow-list; RFC 8693
// token exchange never widens what the subject token holds.
//
// How the relying party reaches coffer: as the README tells operators to
// deploy it, through a TLS reverse proxy at the issuer URL that forwards
// the two public documents (discovery and the JWK set) to coffer's Unix
// socket and nothing else. The proxy is httputil.ReverseProxy behind
// httptest's TLS server: the least artificial stand-in for nginx/Caddy,
// and it makes go-oidc do what it does in production (an https issuer,
// discovery, the JWKS fetched from jwks_uri) with no test seam in go-oidc
// or in coffer. Clients get their tokens over the socket, as on the host.

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

const (
	tokenExchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
	accessTokenType    = "urn:ietf:params:oauth:token-type:access_token"
)

// publicProxy is the TLS front of coffer's public documents: GET of
// /.well-known/openid-configuration and /.well-known/jwks.json go to the
// socket; everything else is 404 at the proxy.
func publicProxy(t *testing.T, socket *atomic.Value) *httptest.Server {
	t.Helper()
	rp := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			r.Out.URL.Scheme, r.Out.URL.Host, r.Out.Host = "http", "coffer", "coffer"
		},
		Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", socket.Load().(string))
		}},
	}
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.Method != http.MethodGet:
			http.Error(w, "only GET", http.StatusMethodNotAllowed)
		case r.URL.Path == "/.well-known/openid-configuration", r.URL.Path == "/.well-known/jwks.json":
			rp.ServeHTTP(w, r)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv
}

// oauthError reads an RFC 6749 error answer.
func oauthError(t *testing.T, res apiResp) (int, string) {
	t.Helper()
	var e api.OAuth2Error
	if err := json.Unmarshal(res.body, &e); err != nil {
		t.Fatalf("answer %d %s is not an OAuth2 error: %v", res.status, res.body, err)
	}
	return res.status, e.Error
}

// exchange posts an RFC 8693 token exchange of subject with extra
// parameters.
func (d *daemonProc) exchange(t *testing.T, subject string, extra url.Values) apiResp {
	t.Helper()
	v := url.Values{"grant_type": {tokenExchangeGrant}, "subject_token": {subject}, "subject_token_type": {accessTokenType}}
	for k, x := range extra {
		v[k] = x
	}
	return d.send(t, "POST", "/oauth2/token", nil, v)
}

func TestOIDCRelyingParty(t *testing.T) {
	t.Parallel()
	var socket atomic.Value
	proxy := publicProxy(t, &socket)
	// The issuer comes from the config file (the flag's twin), with a
	// trailing slash: iss must equal it exactly, URLs are built from it.
	issuer := proxy.URL + "/"
	dir := workDir(t)
	conf := filepath.Join(dir, "coffer.toml")
	if err := os.WriteFile(conf, []byte("issuer = \""+issuer+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "--config", conf)
	socket.Store(d.socket)

	const billing, pay, evil = "https://billing.example", "https://pay.example/api", "https://evil.example"
	d.newUser(t, "rp")
	d.setRole(t, "default", "rp", "member")
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "rp", "audiences": []string{billing, pay}})
	if got := d.getCred(t, oc.ID); !slices.Equal(got.Audiences, []string{billing, pay}) {
		t.Fatalf("credential audiences %v", got.Audiences)
	}

	// The relying party: discovery through the issuer, over TLS.
	rpCtx := oidc.ClientContext(context.Background(), proxy.Client())
	provider, err := oidc.NewProvider(rpCtx, issuer)
	if err != nil {
		t.Fatalf("go-oidc discovery at %s: %v", issuer, err)
	}
	if got, want := provider.Endpoint().TokenURL, proxy.URL+"/oauth2/token"; got != want {
		t.Errorf("discovered token endpoint %q, want %q", got, want)
	}
	var disc map[string]any
	if err := provider.Claims(&disc); err != nil {
		t.Fatal(err)
	}
	var meta map[string]any
	d.mustAPI(t, "GET", "/.well-known/oauth-authorization-server", nil, http.StatusOK, &meta)
	for _, k := range []string{"issuer", "jwks_uri", "token_endpoint", "grant_types_supported", "id_token_signing_alg_values_supported"} {
		a, _ := json.Marshal(disc[k])
		b, _ := json.Marshal(meta[k])
		if disc[k] == nil || string(a) != string(b) {
			t.Errorf("%s: discovery %s, RFC 8414 metadata %s", k, a, b)
		}
	}
	if a, _ := json.Marshal(disc["grant_types_supported"]); !strings.Contains(string(a), tokenExchangeGrant) {
		t.Errorf("grant_types_supported %s lacks token exchange", a)
	}
	verifier := func(aud string) *oidc.IDTokenVerifier { return provider.Verifier(&oidc.Config{ClientID: aud}) }

	token := func(params url.Values) (string, error) {
		cfg := clientcredentials.Config{ClientID: oc.ClientID, ClientSecret: oc.ClientSecret, TokenURL: tokenURL, EndpointParams: params}
		tok, err := cfg.Token(d.oauthCtx())
		if err != nil {
			return "", err
		}
		return tok.AccessToken, nil
	}

	t.Run("audience", func(t *testing.T) {
		tok, err := token(url.Values{"audience": {billing}})
		if err != nil {
			t.Fatal(err)
		}
		id, err := verifier(billing).Verify(rpCtx, tok)
		if err != nil {
			t.Fatalf("go-oidc refuses coffer's token for its audience: %v", err)
		}
		if id.Issuer != issuer || !slices.Equal(id.Audience, []string{billing}) {
			t.Errorf("iss %q aud %v", id.Issuer, id.Audience)
		}
		if _, err := verifier(pay).Verify(rpCtx, tok); err == nil {
			t.Error("a token for billing is accepted by pay")
		}
		// coffer is not billing: the token is no bearer on its API, and
		// billing cannot trade it for a token for someone else.
		d.wantRefused(t, "a JWT for billing at coffer", tok)
		// billing may also ask coffer: the answer names the audience
		var in api.Introspection
		res := d.send(t, "POST", "/oauth2/introspect", nil, url.Values{"token": {tok}})
		if json.Unmarshal(res.body, &in) != nil || !in.Active || !slices.Equal(in.Audience, []string{billing}) {
			t.Errorf("introspection of a JWT for billing: %s", res.body)
		}
		// A service authorizing through coffer: billing, naming itself,
		// is told yes; pay, or a service that does not say who it is,
		// no (the token was shown to billing, not to them).
		for aud, want := range map[string]bool{billing: true, pay: false, "": false} {
			var dec api.Decision
			d.mustAPI(t, "POST", "/v1/authorize", map[string]any{"token": tok, "service": "billing", "method": "GET", "path": "/x", "audience": aud}, http.StatusOK, &dec)
			if dec.Allowed != want || !slices.Equal(dec.Audience, []string{billing}) {
				t.Errorf("authorize a JWT for billing, asked by audience %q: %+v, want allowed=%v and its aud", aud, dec, want)
			}
		}
		for _, to := range []string{pay, strings.TrimSuffix(issuer, "/"), issuer} {
			if status, code := oauthError(t, d.exchange(t, tok, url.Values{"audience": {to}})); status != 400 || code != "invalid_grant" {
				t.Errorf("billing exchanging its token for %s: %d %s, want 400 invalid_grant", to, status, code)
			}
		}
		// A client that wants both asks for both.
		both, err := token(url.Values{"audience": {billing}, "resource": {issuer}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifier(billing).Verify(rpCtx, both); err != nil {
			t.Errorf("billing refuses a token for billing and coffer: %v", err)
		}
		d.wantWorks(t, "a JWT for billing and coffer", both)
	})
	t.Run("resource", func(t *testing.T) {
		tok, err := token(url.Values{"resource": {pay}})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifier(pay).Verify(rpCtx, tok); err != nil {
			t.Fatalf("pay refuses its token: %v", err)
		}
		if _, err := verifier(billing).Verify(rpCtx, tok); err == nil {
			t.Error("a token for pay is accepted by billing")
		}
	})
	t.Run("default is the first audience", func(t *testing.T) {
		tok, err := token(nil)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifier(billing).Verify(rpCtx, tok); err != nil {
			t.Fatalf("default audience: %v", err)
		}
		if _, err := verifier(pay).Verify(rpCtx, tok); err == nil {
			t.Error("the default token is accepted by the second audience")
		}
	})
	// The attacker: a client asking for an audience not on its list gets
	// 400 invalid_target, never a token for another audience.
	t.Run("audience not on the allow-list", func(t *testing.T) {
		for _, p := range []url.Values{{"audience": {evil}}, {"resource": {evil}}, {"audience": {billing}, "resource": {evil}},
			{"audience": {strings.TrimSuffix(billing, "e")}}, {"audience": {strings.ToUpper(billing)}}} {
			_, err := token(p)
			var re *oauth2.RetrieveError
			if !errors.As(err, &re) || re.ErrorCode != "invalid_target" || re.Response.StatusCode != http.StatusBadRequest {
				t.Errorf("%v: %v, want 400 invalid_target", p, err)
			}
		}
	})
	t.Run("a token from another issuer", func(t *testing.T) {
		// A second daemon with the default issuer: its token fails the
		// relying party's issuer check even for the right audience.
		d2 := startDaemon(t, workDir(t))
		d2.newUser(t, "rp")
		d2.setRole(t, "default", "rp", "member")
		oc2 := d2.newCred(t, "default", map[string]any{"type": "oauth2", "user": "rp", "audiences": []string{billing}})
		cfg := clientcredentials.Config{ClientID: oc2.ClientID, ClientSecret: oc2.ClientSecret, TokenURL: tokenURL}
		tok, err := cfg.Token(d2.oauthCtx())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := verifier(billing).Verify(rpCtx, tok.AccessToken); err == nil {
			t.Error("a token of another coffer (issuer http://coffer) is accepted")
		}
	})

	// Token exchange: a workload's session token for a billing JWT.
	auth := d.newCred(t, "default", map[string]any{"type": "auth-token", "user": "rp", "audiences": []string{billing}})
	sess := d.login(t, auth.Token)
	t.Run("exchange", func(t *testing.T) {
		res := d.exchange(t, sess.Token, url.Values{"audience": {billing}, "scope": {"reader"}})
		var tr api.TokenResponse
		if res.status != http.StatusOK || json.Unmarshal(res.body, &tr) != nil {
			t.Fatalf("exchange: %d %s", res.status, res.body)
		}
		if tr.IssuedTokenType != accessTokenType || tr.TokenType != "Bearer" || tr.Scope != "reader" {
			t.Errorf("answer %+v", tr)
		}
		id, err := verifier(billing).Verify(rpCtx, tr.AccessToken)
		if err != nil {
			t.Fatalf("go-oidc refuses the exchanged token: %v", err)
		}
		if sess.ExpiresAt == nil || id.Expiry.After(*sess.ExpiresAt) {
			t.Errorf("exchanged token expires %v, after its subject (%v)", id.Expiry, sess.ExpiresAt)
		}
		var claims struct {
			Roles []string `json:"roles"`
		}
		if err := id.Claims(&claims); err != nil || !slices.Equal(claims.Roles, []string{"reader"}) {
			t.Errorf("roles %v %v", claims.Roles, err)
		}
		if _, err := verifier(pay).Verify(rpCtx, tr.AccessToken); err == nil {
			t.Error("the exchanged token is accepted by another audience")
		}
	})
	// The attacker's exchanges, each refused with its exact code.
	expiring := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "rp", "expire_in": "2s", "audiences": []string{billing}})
	revoked := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "rp", "audiences": []string{billing}})
	d.mustAPI(t, "POST", "/v1/credentials/"+revoked.ID+"/revoke", nil, http.StatusOK, nil)
	t.Run("exchange refusals", func(t *testing.T) {
		for _, c := range []struct {
			name    string
			subject string
			extra   url.Values
			status  int
			code    string
		}{
			{"audience not on the subject's list", sess.Token, url.Values{"audience": {pay}}, 400, "invalid_target"},
			{"more roles than the subject", sess.Token, url.Values{"scope": {"admin"}}, 400, "invalid_scope"},
			{"revoked subject", revoked.Token, nil, 400, "invalid_grant"},
			{"forged subject", wrongSecret(t, sess.Token), nil, 400, "invalid_grant"},
			{"client secret as subject", oc.ClientSecret, nil, 400, "invalid_grant"},
			{"id token type", sess.Token, url.Values{"subject_token_type": {"urn:ietf:params:oauth:token-type:id_token"}}, 400, "unsupported_token_type"},
			{"no subject token type", sess.Token, url.Values{"subject_token_type": {""}}, 400, "invalid_request"},
			{"actor token", sess.Token, url.Values{"actor_token": {sess.Token}, "actor_token_type": {accessTokenType}}, 400, "invalid_request"},
			{"client authentication beside it", sess.Token, url.Values{"client_id": {oc.ClientID}, "client_secret": {oc.ClientSecret}}, 401, "invalid_client"},
		} {
			t.Run(c.name, func(t *testing.T) {
				if status, code := oauthError(t, d.exchange(t, c.subject, c.extra)); status != c.status || code != c.code {
					t.Errorf("%d %s, want %d %s", status, code, c.status, c.code)
				}
			})
		}
		// A subject near its end: the JWT ends with it; then nothing.
		res := d.exchange(t, expiring.Token, nil)
		var tr api.TokenResponse
		if res.status != http.StatusOK || json.Unmarshal(res.body, &tr) != nil {
			t.Fatalf("exchange of a live access token: %d %s", res.status, res.body)
		}
		if tr.ExpiresIn > 2 {
			t.Errorf("expires_in %d, beyond its subject's 2s", tr.ExpiresIn)
		}
		time.Sleep(time.Until(expiring.ExpiresAt.Add(100 * time.Millisecond)))
		if status, code := oauthError(t, d.exchange(t, expiring.Token, nil)); status != 400 || code != "invalid_grant" {
			t.Errorf("expired subject: %d %s, want 400 invalid_grant", status, code)
		}
		if _, err := verifier(billing).Verify(rpCtx, tr.AccessToken); err == nil {
			t.Error("a JWT exchanged from an expired subject still verifies")
		}
	})
	// Revoking the subject's session ends what was exchanged from it at
	// coffer (introspection), and its exchanges.
	t.Run("revoked subject session", func(t *testing.T) {
		res := d.exchange(t, sess.Token, nil)
		var tr api.TokenResponse
		if res.status != http.StatusOK || json.Unmarshal(res.body, &tr) != nil {
			t.Fatalf("exchange: %d %s", res.status, res.body)
		}
		d.mustAPI(t, "DELETE", "/v1/sessions/"+sess.ID, nil, http.StatusNoContent, nil)
		var in api.Introspection
		res = d.send(t, "POST", "/oauth2/introspect", nil, url.Values{"token": {tr.AccessToken}})
		if json.Unmarshal(res.body, &in) != nil || in.Active {
			t.Errorf("exchanged JWT of a revoked session introspects %s", res.body)
		}
		if status, code := oauthError(t, d.exchange(t, sess.Token, nil)); status != 400 || code != "invalid_grant" {
			t.Errorf("revoked session: %d %s, want 400 invalid_grant", status, code)
		}
	})

	// The CLI, by example: audiences at create, token with --audience,
	// token exchange from a file.
	t.Run("cli", func(t *testing.T) {
		out := d.mustCLI(t, "", "-o", "json", "cred", "create", "--type", "oauth2", "--user", "rp", "--audience", pay, "--audience", billing)
		var c api.Credential
		if err := json.Unmarshal([]byte(out.stdout), &c); err != nil || !slices.Equal(c.Audiences, []string{pay, billing}) {
			t.Fatalf("cred create --audience: %v %s", err, out.stdout)
		}
		secretFile := filepath.Join(t.TempDir(), "secret")
		if err := os.WriteFile(secretFile, []byte(c.ClientSecret+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		out = d.mustCLI(t, "", "-o", "json", "token", "--client-id", c.ClientID, "--client-secret-file", secretFile, "--audience", billing)
		var tr api.TokenResponse
		if err := json.Unmarshal([]byte(out.stdout), &tr); err != nil {
			t.Fatal(err)
		}
		if _, err := verifier(billing).Verify(rpCtx, tr.AccessToken); err != nil {
			t.Errorf("coffer token --audience: %v", err)
		}
		if r := d.cli(t, "", "token", "--client-id", c.ClientID, "--client-secret-file", secretFile, "--audience", evil); r.code != 1 || !strings.Contains(r.stderr, "invalid_target") {
			t.Errorf("coffer token --audience %s: %s", evil, r)
		}
		at := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "rp", "audiences": []string{pay}})
		out = d.mustCLI(t, at.Token, "-o", "json", "token", "--subject-token-file", "-", "--audience", pay)
		if err := json.Unmarshal([]byte(out.stdout), &tr); err != nil {
			t.Fatal(err)
		}
		if _, err := verifier(pay).Verify(rpCtx, tr.AccessToken); err != nil || tr.IssuedTokenType != accessTokenType {
			t.Errorf("coffer token --subject-token-file: %v %+v", err, tr)
		}
	})
}

// An issuer that relying parties could not use is refused at start.
func TestIssuerChecked(t *testing.T) {
	t.Parallel()
	for _, bad := range []string{"coffer.example", "https://coffer.example/?tenant=a", "https://coffer.example/#x", "ftp://coffer.example"} {
		d := launchDaemon(t, workDir(t), "daemon", "--dev", "--issuer", bad)
		if code := d.waitExit(t); code != 2 || !strings.Contains(d.stderr.String(), "--issuer") {
			t.Errorf("--issuer %q: exit %d, stderr %s", bad, code, d.stderr)
		}
	}
}
