package unixapi

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// oauthFake answers ClientCredentials and TokenExchange as told and
// records their calls.
type oauthFake struct {
	Backend
	// 0 ok, 1 invalid_client (exchange: invalid_grant), 2 invalid_scope,
	// 3 unavailable, 4 invalid_target, 5 unsupported_token_type
	answer    int
	calls     []oauthCall
	exchanges []daemon.TokenExchangeRequest
}

const oauthAnswers = 6

type oauthCall struct {
	id, secret, scope string
	ask               []daemon.Audiences
}

const fakeAccessToken = "eyJfake.access.token"

func (f *oauthFake) ClientCredentials(_ context.Context, id, secret, scope string, ask ...daemon.Audiences) (daemon.AccessToken, error) {
	f.calls = append(f.calls, oauthCall{id, secret, scope, ask})
	return f.reply(scope, daemon.CodeInvalidClient)
}

func (f *oauthFake) TokenExchange(_ context.Context, req daemon.TokenExchangeRequest) (daemon.AccessToken, error) {
	f.exchanges = append(f.exchanges, req)
	return f.reply(req.Scope, daemon.CodeInvalidGrant)
}

func (f *oauthFake) reply(scope, badToken string) (daemon.AccessToken, error) {
	switch f.answer {
	case 0:
		return daemon.AccessToken{Token: fakeAccessToken, ExpiresIn: 60, Scope: scope}, nil
	case 1:
		if badToken == daemon.CodeInvalidGrant {
			return daemon.AccessToken{}, daemon.Invalid(daemon.CodeInvalidGrant, "the subject token is invalid or expired")
		}
		return daemon.AccessToken{}, &daemon.Error{Class: daemon.ErrUnauthenticated, Code: daemon.CodeInvalidClient, Message: "client authentication failed"}
	case 2:
		return daemon.AccessToken{}, daemon.Invalid(daemon.CodeInvalidScope, "scope is not allowed")
	case 4:
		return daemon.AccessToken{}, daemon.Invalid(daemon.CodeInvalidTarget, "audience is not among the credential's audiences")
	case 5:
		return daemon.AccessToken{}, daemon.Invalid(daemon.CodeUnsupportedTokenType, "subject_token_type is not supported")
	default:
		return daemon.AccessToken{}, &daemon.Error{Class: daemon.ErrUnavailable, Code: "hsm_unavailable", Message: "the HSM is unavailable", Err: errors.New("fault")}
	}
}

func FuzzOAuth2Token(f *testing.F) {
	const form = "application/x-www-form-urlencoded"
	basic := func(id, secret string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(id)+":"+url.QueryEscape(secret)))
	}
	for _, s := range []struct{ ct, auth, body string }{
		{form, "", "grant_type=client_credentials&client_id=cfo_id&client_secret=cfo_secret&scope=a+b"},
		{form, basic("cfo_id", "cfo_secret"), "grant_type=client_credentials"},
		{form, basic("cfo:id", "se%cr&t"), "grant_type=client_credentials&client_id=cfo%3Aid"},
		{form, basic("cfo_id", "cfo_secret"), "grant_type=client_credentials&client_secret=x"},
		{form, "Basic %%%", "grant_type=client_credentials"},
		{form, "Basic " + base64.StdEncoding.EncodeToString([]byte("a%zz:b")), "grant_type=client_credentials"},
		{form, "Bearer x", "grant_type=client_credentials"},
		{form + "; charset=utf-8", "", "grant_type=password&client_id=a&client_secret=b"},
		{form, "", "grant_type=client_credentials&grant_type=client_credentials&client_id=a&client_secret=b"},
		{form, "", "client_id=a&client_secret=b"},
		{form, "", "grant_type=client_credentials&client_id=a"},
		{form, "", "%zz"},
		{"application/json", "", `{"grant_type":"client_credentials"}`},
		{"", "", ""},
		{form, "", strings.Repeat("a", api.BodyLimit+1)},
		// RFC 8707 resource and RFC 8693 audience
		{form, basic("cfo_id", "cfo_secret"), "grant_type=client_credentials&audience=https%3A%2F%2Fa.example&resource=https%3A%2F%2Fb.example%2F"},
		{form, "", "grant_type=client_credentials&client_id=a&client_secret=b&resource=x&resource=y"},
		{form, "", "grant_type=client_credentials&client_id=a&client_secret=b&audience="},
		// RFC 8693 token exchange
		{form, "", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=cfs_x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token&audience=a&scope=reader"},
		{form, "", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=cfs_x&subject_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aid_token&requested_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Ajwt&resource=https%3A%2F%2Fr.example"},
		{form, "", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=cfs_x&actor_token=cft_y&actor_token_type=urn%3Aietf%3Aparams%3Aoauth%3Atoken-type%3Aaccess_token"},
		{form, "", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=cfs_x&client_id=a&client_secret=b"},
		{form, basic("cfo_id", "cfo_secret"), "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=cfs_x"},
		{form, "Bearer cfs_x", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=cfs_x"},
		{form, "", "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Atoken-exchange&subject_token=a&subject_token=b"},
	} {
		for answer := range uint8(oauthAnswers) {
			f.Add(s.ct, s.auth, []byte(s.body), answer)
		}
	}
	f.Fuzz(func(t *testing.T, ct, auth string, body []byte, answer uint8) {
		fake := &oauthFake{answer: int(answer % oauthAnswers)}
		req := httptest.NewRequest(http.MethodPost, "/oauth2/token", bytes.NewReader(body))
		if ct != "" {
			req.Header.Set("Content-Type", ct)
		}
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		if req.Header.Get("Authorization") != auth || req.Header.Get("Content-Type") != ct {
			return // not a header value a client can send
		}
		rec := httptest.NewRecorder()
		NewServer(fake, discardLog).ServeHTTP(rec, req)

		if rec.Header().Get("Cache-Control") != "no-store" || rec.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("headers %v", rec.Header())
		}
		// The independent reading of the request.
		mt, _, _ := mime.ParseMediaType(ct)
		isForm := mt == "application/x-www-form-urlencoded"
		vals, formErr := url.ParseQuery(string(body))
		dup := false
		for _, v := range vals {
			dup = dup || len(v) > 1
		}
		basicID, basicSecret, isBasic := (&http.Request{Header: http.Header{"Authorization": {auth}}}).BasicAuth()

		const exchangeGrant = "urn:ietf:params:oauth:grant-type:token-exchange"
		// What the form asks as audiences, as the backend must get it.
		var ask daemon.Audiences
		if vals.Has("audience") {
			ask.Audience = []string{vals.Get("audience")}
		}
		if vals.Has("resource") {
			ask.Resource = []string{vals.Get("resource")}
		}
		backendCalls := len(fake.calls) + len(fake.exchanges)
		if backendCalls > 1 {
			t.Fatalf("%d backend calls", backendCalls)
		}
		if len(fake.exchanges) == 1 {
			x := fake.exchanges[0]
			if !isForm || formErr != nil || dup || vals.Get("grant_type") != exchangeGrant || auth != "" ||
				vals.Has("client_id") || vals.Has("client_secret") || vals.Has("actor_token") || vals.Has("actor_token_type") {
				t.Fatalf("token exchange backend called for %q %q %q", ct, auth, body)
			}
			if x.SubjectToken != vals.Get("subject_token") || x.SubjectTokenType != vals.Get("subject_token_type") ||
				x.RequestedTokenType != vals.Get("requested_token_type") || x.Scope != vals.Get("scope") ||
				!slices.Equal(x.Audience, ask.Audience) || !slices.Equal(x.Resource, ask.Resource) {
				t.Fatalf("token exchange backend called with %+v for %q", x, body)
			}
		}
		if len(fake.calls) == 1 {
			c := fake.calls[0]
			if !isForm || formErr != nil || dup || vals.Get("grant_type") != "client_credentials" || c.id == "" || c.secret == "" || c.scope != vals.Get("scope") {
				t.Fatalf("backend called with %+v for %q %q %q", c, ct, auth, body)
			}
			// The audiences asked reach the backend exactly: none is
			// dropped (a dropped one would default silently) or added.
			if len(c.ask) != 1 || !slices.Equal(c.ask[0].Audience, ask.Audience) || !slices.Equal(c.ask[0].Resource, ask.Resource) {
				t.Fatalf("backend asked for %+v, the form for %+v", c.ask, ask)
			}
			if isBasic {
				wantID, e1 := url.QueryUnescape(basicID)
				wantSecret, e2 := url.QueryUnescape(basicSecret)
				if e1 != nil || e2 != nil || c.id != wantID || c.secret != wantSecret || vals.Has("client_secret") {
					t.Fatalf("basic %q: backend called with %+v", auth, c)
				}
			} else if auth != "" || c.id != vals.Get("client_id") || c.secret != vals.Get("client_secret") {
				t.Fatalf("form %q: backend called with %+v", body, c)
			}
		}

		dec := json.NewDecoder(rec.Body)
		dec.DisallowUnknownFields()
		if rec.Code == http.StatusOK {
			var tr api.TokenResponse
			if backendCalls != 1 || fake.answer != 0 || dec.Decode(&tr) != nil || tr.AccessToken != fakeAccessToken || tr.TokenType != "Bearer" {
				t.Fatalf("200 with %+v after %d calls", tr, backendCalls)
			}
			if (tr.IssuedTokenType == daemon.TokenTypeAccessToken) != (len(fake.exchanges) == 1) {
				t.Fatalf("issued_token_type %q after %d exchanges", tr.IssuedTokenType, len(fake.exchanges))
			}
			return
		}
		if rec.Code == http.StatusServiceUnavailable {
			if backendCalls != 1 || fake.answer != 3 {
				t.Fatalf("503 without a backend failure")
			}
			return
		}
		var oe api.OAuth2Error
		if err := dec.Decode(&oe); err != nil {
			t.Fatalf("%d answer is not an RFC 6749 error: %v", rec.Code, err)
		}
		want := map[int][]string{
			http.StatusBadRequest: {daemon.CodeInvalidRequest, daemon.CodeUnsupportedGrantType, daemon.CodeInvalidScope,
				daemon.CodeInvalidTarget, daemon.CodeInvalidGrant, daemon.CodeUnsupportedTokenType},
			http.StatusUnauthorized:          {daemon.CodeInvalidClient},
			http.StatusRequestEntityTooLarge: {daemon.CodeInvalidRequest},
		}[rec.Code]
		if !contains(want, oe.Error) {
			t.Fatalf("status %d with error %q", rec.Code, oe.Error)
		}
		// The backend's refusals come back with their own codes.
		backendCode := map[int]string{1: daemon.CodeInvalidClient, 2: daemon.CodeInvalidScope, 4: daemon.CodeInvalidTarget, 5: daemon.CodeUnsupportedTokenType}[fake.answer]
		if len(fake.exchanges) == 1 && fake.answer == 1 {
			backendCode = daemon.CodeInvalidGrant
		}
		if backendCalls == 1 && oe.Error != backendCode {
			t.Fatalf("backend answer %d came back as %d %q", fake.answer, rec.Code, oe.Error)
		}
		// invalid_grant, invalid_target and unsupported_token_type are
		// the backend's to say, never the transport's.
		if backendCalls == 0 && (oe.Error == daemon.CodeInvalidGrant || oe.Error == daemon.CodeInvalidTarget || oe.Error == daemon.CodeUnsupportedTokenType) {
			t.Fatalf("%q without a backend call", oe.Error)
		}
		if (rec.Code == http.StatusRequestEntityTooLarge) != (isForm && len(body) > api.BodyLimit) {
			t.Fatalf("status %d for a %d-byte body", rec.Code, len(body))
		}
		if rec.Code == http.StatusUnauthorized && (rec.Header().Get("WWW-Authenticate") != "") != isBasic {
			t.Fatalf("401 WWW-Authenticate %q for Authorization %q", rec.Header().Get("WWW-Authenticate"), auth)
		}
		if !isForm && rec.Code != http.StatusBadRequest {
			t.Fatalf("a %q body got %d", ct, rec.Code)
		}
		// The answer never repeats a client secret (a duplicated parameter
		// is named, and its name may be anything).
		for _, s := range []string{vals.Get("client_secret"), basicSecret, vals.Get("subject_token"), vals.Get("actor_token")} {
			if !dup && len(s) >= 4 && strings.Contains(oe.ErrorDescription, s) {
				t.Fatalf("error description %q repeats the secret", oe.ErrorDescription)
			}
		}
	})
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
