package daemon

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestCheckIssuer(t *testing.T) {
	for _, ok := range []string{DefaultIssuer, "https://coffer.example", "https://coffer.example/", "https://h.example:8443/coffer"} {
		if err := CheckIssuer(ok); err != nil {
			t.Errorf("CheckIssuer(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "coffer.example", "/coffer", "ftp://coffer.example", "https://", "https://u:p@coffer.example",
		"https://coffer.example/?a=b", "https://coffer.example/?", "https://coffer.example/#x", "https://coffer.example/#", "https://coffer .example"} {
		if err := CheckIssuer(bad); err == nil {
			t.Errorf("CheckIssuer(%q) accepted it", bad)
		}
	}
}

// The discovery document and the RFC 8414 one are the same document, built
// from the issuer, naming the algorithms of the JWK set.
func TestOpenIDConfiguration(t *testing.T) {
	e := newEnv(t)
	e.svc.cfg.Issuer = "https://coffer.example/"
	d := e.svc.OpenIDConfiguration()
	a, _ := json.Marshal(d)
	b, _ := json.Marshal(e.svc.ServerMetadata())
	if string(a) != string(b) {
		t.Fatalf("discovery %s\n!= metadata %s", a, b)
	}
	if d.Issuer != "https://coffer.example/" || d.JWKSURI != "https://coffer.example/.well-known/jwks.json" ||
		d.TokenEndpoint != "https://coffer.example/oauth2/token" || !slices.Equal(d.IDTokenSigningAlgValuesSupported, []string{"ES256"}) ||
		!slices.Contains(d.GrantTypesSupported, GrantTokenExchange) || !slices.Equal(d.SubjectTypesSupported, []string{"public"}) {
		t.Fatalf("discovery %s", a)
	}
}

// On an RSA signing key the discovery document names PS256, the algorithm
// relying parties will see.
func TestOpenIDConfigurationPS256(t *testing.T) {
	e := newEnvKeys(t, newFakeKeysRSA(true))
	if got := e.svc.OpenIDConfiguration().IDTokenSigningAlgValuesSupported; !slices.Equal(got, []string{"PS256"}) {
		t.Fatalf("id_token_signing_alg_values_supported %v, want [PS256]", got)
	}
}

// A credential record written before audiences existed reads as one
// without audiences: tokens for the issuer only, as before.
func TestCredentialRecordWithoutAudiences(t *testing.T) {
	old := `{"id":"x","name":"n","type":"oauth2","user_id":"u","project_id":"p","roles":["reader"],"rules":null,` +
		`"policies":[],"session_type":"client","token_id":"t","client_id":"c","authn_count":0,"created_at":"2025-01-01T00:00:00Z"}`
	var r credentialRecord
	if err := json.Unmarshal([]byte(old), &r); err != nil || r.Audiences != nil {
		t.Fatalf("old record: %+v %v", r, err)
	}
	e := newEnv(t)
	aud, err := e.svc.tokenAudience(r.Audiences, Audiences{})
	if err != nil || !slices.Equal(aud, []string{DefaultIssuer}) {
		t.Fatalf("default aud of an old record %v %v", aud, err)
	}
	// And a new one keeps its list only when it has one.
	b, _ := json.Marshal(credentialRecord{})
	if strings.Contains(string(b), "audiences") {
		t.Fatalf("empty audiences written: %s", b)
	}
}

func TestCredentialAudiencesInput(t *testing.T) {
	e := newIdentityEnv(t)
	c, _ := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob", Audiences: []string{"https://b.example", "a", "https://b.example"}})
	if !slices.Equal(c.Audiences, []string{"https://b.example", "a"}) {
		t.Fatalf("audiences %v: want the order given, without repeats", c.Audiences)
	}
	got, err := e.svc.GetCredential(context.Background(), e.grant(t, ActReadCredential, Resource{Credential: c.ID}))
	if err != nil || !slices.Equal(got.Audiences, c.Audiences) {
		t.Fatalf("read %v %v", got.Audiences, err)
	}
	for _, bad := range [][]string{{""}, {"a b"}, {"a\x00"}, {strings.Repeat("a", maxAudienceLen+1)}, slices.Repeat([]string{"a"}, maxAudiences+1)} {
		_, _, err := e.svc.CreateCredential(context.Background(), e.grant(t, ActCreateCredential, Resource{Project: "p1"}),
			CredentialInput{Type: CredOAuth2, User: "bob", Audiences: bad})
		wantCode(t, err, CodeInvalidCredential)
	}
}

// aud is what the client asked for, each value on the allow-list, or
// invalid_target; never another audience instead.
func TestClientCredentialsAudience(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob", Audiences: []string{"https://a.example", "b"}})
	_, plain := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	aud := func(tok string) []string {
		t.Helper()
		c, err := VerifyJWT(tok, e.svc.jwtKeys(), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return c.Audience
	}
	for _, tt := range []struct {
		name   string
		client Issued
		ask    Audiences
		want   []string
		code   string
	}{
		{"default is the first of the list", iss, Audiences{}, []string{"https://a.example"}, ""},
		{"audience on the list", iss, Audiences{Audience: []string{"b"}}, []string{"b"}, ""},
		{"resource on the list", iss, Audiences{Resource: []string{"https://a.example"}}, []string{"https://a.example"}, ""},
		{"both", iss, Audiences{Audience: []string{"b"}, Resource: []string{"https://a.example"}}, []string{"b", "https://a.example"}, ""},
		{"the issuer", iss, Audiences{Audience: []string{DefaultIssuer}}, []string{DefaultIssuer}, ""},
		{"not on the list", iss, Audiences{Audience: []string{"https://evil.example"}}, nil, CodeInvalidTarget},
		{"one of two not on the list", iss, Audiences{Audience: []string{"b"}, Resource: []string{"https://evil.example"}}, nil, CodeInvalidTarget},
		{"a prefix of one on the list", iss, Audiences{Resource: []string{"https://a.exampl"}}, nil, CodeInvalidTarget},
		{"resource not absolute", iss, Audiences{Resource: []string{"b"}}, nil, CodeInvalidTarget},
		{"resource with a fragment", iss, Audiences{Resource: []string{"https://a.example#x"}}, nil, CodeInvalidTarget},
		{"empty audience", iss, Audiences{Audience: []string{""}}, nil, CodeInvalidTarget},
		{"no list: the issuer", plain, Audiences{}, []string{DefaultIssuer}, ""},
		{"no list: anything else", plain, Audiences{Audience: []string{"b"}}, nil, CodeInvalidTarget},
	} {
		t.Run(tt.name, func(t *testing.T) {
			at, err := e.svc.ClientCredentials(ctx, tt.client.ClientID, tt.client.ClientSecret, "", tt.ask)
			wantCode(t, err, tt.code)
			if err == nil && !slices.Equal(aud(at.Token), tt.want) {
				t.Fatalf("aud %v, want %v", aud(at.Token), tt.want)
			}
		})
	}
	found := false
	for _, ev := range e.events() {
		found = found || ev.Action == "oauth2.token" && ev.Outcome == "denied" && ev.Code == CodeInvalidTarget
	}
	if !found {
		t.Error("no audit record of the invalid_target refusals")
	}
}

// newExchangeEnv has bob's auth token logged in: its session token.
func newExchangeEnv(t *testing.T, audiences ...string) (*identityEnv, Credential, string) {
	t.Helper()
	e := newIdentityEnv(t)
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", Audiences: audiences})
	_, cfs, err := e.svc.Login(context.Background(), iss.Token)
	if err != nil {
		t.Fatal(err)
	}
	return e, cred, cfs
}

func exchangeReq(subject string, aud ...string) TokenExchangeRequest {
	return TokenExchangeRequest{SubjectToken: subject, SubjectTokenType: TokenTypeAccessToken, Audiences: Audiences{Audience: aud}}
}

func TestTokenExchange(t *testing.T) {
	e, cred, cfs := newExchangeEnv(t, "https://billing.example", "https://pay.example")
	ctx := context.Background()
	subject, err := e.svc.Authenticate(ctx, anonPrincipal, cfs)
	if err != nil {
		t.Fatal(err)
	}
	at, err := e.svc.TokenExchange(ctx, exchangeReq(cfs, "https://pay.example"))
	wantCode(t, err, "")
	c, err := VerifyJWT(at.Token, e.svc.jwtKeys(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Audience, []string{"https://pay.example"}) || c.Issuer != DefaultIssuer || c.ClientID != cred.ID ||
		!slices.Equal(c.Roles, []string{"member", "reader"}) || c.JTI != at.SessionID || c.Project != "p1" {
		t.Fatalf("claims %+v", c)
	}
	if c.ExpiresAt > subject.Token.ExpiresAt.Unix() {
		t.Fatalf("exp %d after the subject's %v", c.ExpiresAt, subject.Token.ExpiresAt)
	}
	// A JWT for another audience is not a bearer at coffer (nor can it be
	// exchanged: below); one for coffer's issuer acts as bob, with the
	// subject's roles at most.
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, at.Token); err == nil {
		t.Fatal("a JWT for https://pay.example is a bearer at coffer")
	}
	if in, _ := e.svc.Introspect(ctx, at.Token); !in.Active || !slices.Equal(in.Audience, []string{"https://pay.example"}) {
		t.Fatalf("a JWT for another audience introspects %+v", in)
	}
	atc, err := e.svc.TokenExchange(ctx, exchangeReq(cfs, DefaultIssuer))
	wantCode(t, err, "")
	p := e.bearer(t, atc.Token)
	if p.Token.Kind != SessionOAuth2 || p.Token.CredentialID != cred.ID {
		t.Fatalf("bearer %+v", p.Token)
	}
	// Narrower scope; default audience; a JWT subject.
	at2, err := e.svc.TokenExchange(ctx, TokenExchangeRequest{SubjectToken: cfs, SubjectTokenType: TokenTypeAccessToken, Scope: "reader"})
	wantCode(t, err, "")
	c2, _ := VerifyJWT(at2.Token, e.svc.jwtKeys(), time.Now())
	if at2.Scope != "reader" || !slices.Equal(c2.Roles, []string{"reader"}) || !slices.Equal(c2.Audience, []string{"https://billing.example"}) {
		t.Fatalf("scoped %+v %+v", at2, c2)
	}

	// The refusals, exactly.
	for _, tt := range []struct {
		name string
		req  TokenExchangeRequest
		code string
	}{
		{"audience not on the list", exchangeReq(cfs, "https://evil.example"), CodeInvalidTarget},
		{"resource not on the list", TokenExchangeRequest{SubjectToken: cfs, SubjectTokenType: TokenTypeAccessToken, Audiences: Audiences{Resource: []string{"https://evil.example/"}}}, CodeInvalidTarget},
		{"more roles than the subject", TokenExchangeRequest{SubjectToken: cfs, SubjectTokenType: TokenTypeAccessToken, Scope: "admin"}, CodeInvalidScope},
		{"a role the subject lacks beside one it has", TokenExchangeRequest{SubjectToken: cfs, SubjectTokenType: TokenTypeAccessToken, Scope: "reader admin"}, CodeInvalidScope},
		{"an exchanged token again", exchangeReq(atc.Token), CodeInvalidGrant},
		{"no subject token", TokenExchangeRequest{SubjectTokenType: TokenTypeAccessToken}, CodeInvalidRequest},
		{"no subject token type", TokenExchangeRequest{SubjectToken: cfs}, CodeInvalidRequest},
		{"an id token type", TokenExchangeRequest{SubjectToken: cfs, SubjectTokenType: "urn:ietf:params:oauth:token-type:id_token"}, CodeUnsupportedTokenType},
		{"a saml token type", TokenExchangeRequest{SubjectToken: cfs, SubjectTokenType: "urn:ietf:params:oauth:token-type:saml2"}, CodeUnsupportedTokenType},
		{"a refresh token asked for", TokenExchangeRequest{SubjectToken: cfs, SubjectTokenType: TokenTypeAccessToken, RequestedTokenType: "urn:ietf:params:oauth:token-type:refresh_token"}, CodeInvalidRequest},
		{"garbage", exchangeReq("cfs_garbage"), CodeInvalidGrant},
		{"a corrupted session token", exchangeReq(corrupt(cfs)), CodeInvalidGrant},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.TokenExchange(ctx, tt.req)
			wantCode(t, err, tt.code)
		})
	}

	// Revoking the subject's session ends the exchanged JWT with it, and
	// the subject cannot be exchanged again.
	if err := e.svc.RevokeSession(ctx, e.grant(t, ActManageSession, Resource{Session: subject.Token.SessionID})); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, at.Token); err == nil {
		t.Fatal("an exchanged JWT outlives its subject's session")
	}
	if in, _ := e.svc.Introspect(ctx, at.Token); in.Active {
		t.Fatal("an exchanged JWT of a revoked subject introspects active")
	}
	_, err = e.svc.TokenExchange(ctx, exchangeReq(cfs))
	wantCode(t, err, CodeInvalidGrant)
}

// A subject close to its end gives a JWT that ends with it; an expired one
// gives nothing.
// A service shown a token for it cannot use it at coffer, nor trade it
// for one for another audience or for coffer.
func TestTokenForAnotherAudience(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob", Audiences: []string{"https://a.example", "https://b.example"}})
	at, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
	wantCode(t, err, "")
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, at.Token); err == nil {
		t.Fatal("a JWT for https://a.example is a bearer at coffer")
	}
	for _, aud := range []string{"https://b.example", DefaultIssuer, ""} {
		var ask []string
		if aud != "" {
			ask = []string{aud}
		}
		_, err := e.svc.TokenExchange(ctx, exchangeReq(at.Token, ask...))
		wantCode(t, err, CodeInvalidGrant)
	}
	if r, err := e.svc.ReviewToken(ctx, kubeAPIServer, at.Token, nil); err != nil || r.Authenticated {
		t.Fatalf("a JWT for https://a.example authenticates to Kubernetes: %+v %v", r, err)
	}
	// Asking for coffer's issuer too gives a token that works at both.
	both, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "", Audiences{Audience: []string{"https://a.example"}, Resource: []string{DefaultIssuer}})
	wantCode(t, err, "")
	e.bearer(t, both.Token)
}

// TestAuthorizeHonoursAudience: a JWT that names other audiences is
// authorized for a service that names itself only when it is one of
// them; one for other audiences only never for a service that does not
// say who it is; a token for coffer alone goes wherever its rules allow.
func TestAuthorizeHonoursAudience(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob", Audiences: []string{"https://a.example", "https://b.example"}})
	forA, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "", Audiences{Audience: []string{"https://a.example"}})
	wantCode(t, err, "")
	forCoffer, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "", Audiences{Audience: []string{"https://a.example"}, Resource: []string{DefaultIssuer}})
	wantCode(t, err, "")
	_, opaque := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	_, plainCred := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	plain, err := e.svc.ClientCredentials(ctx, plainCred.ClientID, plainCred.ClientSecret, "")
	wantCode(t, err, "")
	for _, tt := range []struct {
		token, audience string
		allowed         bool
	}{
		{forA.Token, "https://a.example", true},
		{forA.Token, "", false},
		{forA.Token, "https://b.example", false}, // on the credential's list, not in this token
		{forA.Token, "https://c.example", false},
		{forCoffer.Token, "", true}, // a bearer at coffer: coffer's own API
		{forCoffer.Token, "https://a.example", true},
		{forCoffer.Token, "https://c.example", false}, // shown to a: not c's
		{plain.Token, "https://c.example", true},      // for coffer alone
		{opaque.Token, "https://c.example", true},     // no audience
	} {
		d, err := e.svc.AuthorizeCall(ctx, Call{Token: tt.token, Service: "svc", Method: "GET", Path: "/x", Audience: tt.audience})
		if err != nil || d.Allowed != tt.allowed {
			t.Errorf("token %.8s… asked by audience %q: %+v %v, want allowed=%v", tt.token, tt.audience, d, err, tt.allowed)
		}
		if tt.token == forA.Token && !slices.Equal(d.Audience, []string{"https://a.example"}) {
			t.Errorf("the decision names audience %q, want the token's aud", d.Audience)
		}
	}
}

func TestTokenExchangeNeverOutlivesTheSubject(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	exp := time.Now().Add(10 * time.Minute).UTC()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", ExpiresAt: &exp})
	at, err := e.svc.TokenExchange(ctx, exchangeReq(iss.Token))
	wantCode(t, err, "")
	c, _ := VerifyJWT(at.Token, e.svc.jwtKeys(), time.Now())
	if c.ExpiresAt > exp.Unix() || c.ExpiresAt < exp.Unix()-2 || at.ExpiresIn > 600 {
		t.Fatalf("exp %d expires_in %d, want the subject's %d", c.ExpiresAt, at.ExpiresIn, exp.Unix())
	}
	e.svc.now = func() time.Time { return exp.Add(time.Second) }
	defer func() { e.svc.now = func() time.Time { return time.Now().UTC() } }()
	_, err = e.svc.TokenExchange(ctx, exchangeReq(iss.Token))
	wantCode(t, err, CodeInvalidGrant)
}

// A revoked subject's credential gives nothing, and failed exchanges count
// into the caller's limiter like every other token check.
func TestTokenExchangeRevokedAndRateLimited(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	cred, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: cred.ID})); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.TokenExchange(ctx, exchangeReq(iss.Token))
	wantCode(t, err, CodeInvalidGrant)
	if _, ok := findEvent(e.events(), "oauth2.token", "denied", map[string]string{}); !ok {
		t.Error("the refused exchange is not in the audit log")
	}

	e.svc.authGate = newAuthGate(AuthLimit{Burst: 3, Refill: time.Hour}, time.Now, e.svc.log)
	caller := WithPrincipal(ctx, userPrincipal)
	for range 3 {
		_, err := e.svc.TokenExchange(caller, exchangeReq("cft_nonsense"))
		wantCode(t, err, CodeInvalidGrant)
	}
	_, err = e.svc.TokenExchange(caller, exchangeReq(iss.Token))
	wantCode(t, err, CodeRateLimited)
	// The same caller's other token checks are limited too.
	_, err = e.svc.Introspect(caller, iss.Token)
	wantCode(t, err, CodeRateLimited)
}

// TestTokenPassesOnOnlyItsAudiences: a token mints nothing stronger than
// itself, audiences included: a credential it creates may list only
// audiences its own credential lists, or it could trade itself (through
// the new credential) for tokens its credential's allow-list refuses.
func TestTokenPassesOnOnlyItsAudiences(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, narrow := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Unrestricted: true, Audiences: []string{"https://a.example"}})
	_, plain := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Unrestricted: true})
	for _, c := range []struct {
		tok  string
		aud  []string
		want string
	}{
		{narrow.Token, []string{"https://b.example"}, CodeForbidden},
		{narrow.Token, []string{"https://a.example", "https://b.example"}, CodeForbidden},
		{plain.Token, []string{"https://b.example"}, CodeForbidden},
		{narrow.Token, []string{"https://a.example"}, ""},
		{plain.Token, []string{DefaultIssuer}, ""},
		{narrow.Token, nil, ""},
	} {
		p := e.bearer(t, c.tok)
		g := e.mustAuthorize(t, p, ActCreateCredential, Resource{Project: "p1"})
		_, _, err := e.svc.CreateCredential(ctx, g, CredentialInput{Type: CredOAuth2, Audiences: c.aud})
		if c.want == "" {
			if err != nil {
				t.Errorf("audiences %v: %v", c.aud, err)
			}
			continue
		}
		wantCode(t, err, c.want)
	}
}

// TestExchangeEndsWithItsSubjectToken: rotating an access token (what one
// does to a leaked one) ends what it was exchanged for, at the end of the
// rotation's grace, as it ends the token itself: its session lives on
// (the credential keeps it across rotations), so the exchanged JWT must
// follow the subject token, not only its session.
func TestExchangeEndsWithItsSubjectToken(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	cred, tok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	at, err := e.svc.TokenExchange(ctx, exchangeReq(tok.Token, DefaultIssuer))
	wantCode(t, err, "")
	e.bearer(t, at.Token)
	if _, _, err := e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: cred.ID}), CredentialRotate{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, tok.Token); err == nil {
		t.Fatal("the rotated-out token still authenticates")
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, at.Token); err == nil {
		t.Fatal("a JWT exchanged for the rotated-out token still authenticates")
	}
	if in, _ := e.svc.Introspect(ctx, at.Token); in.Active {
		t.Fatal("a JWT exchanged for the rotated-out token introspects active")
	}
}
