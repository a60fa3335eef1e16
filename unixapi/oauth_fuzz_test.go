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
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/daemon"
)

// oauthFake answers ClientCredentials as told and records its calls.
type oauthFake struct {
	Backend
	answer int // 0 ok, 1 invalid_client, 2 invalid_scope, 3 unavailable
	calls  []oauthCall
}

type oauthCall struct{ id, secret, scope string }

const fakeAccessToken = "eyJfake.access.token"

func (f *oauthFake) ClientCredentials(_ context.Context, id, secret, scope string, _ ...daemon.Audiences) (daemon.AccessToken, error) {
	f.calls = append(f.calls, oauthCall{id, secret, scope})
	switch f.answer {
	case 0:
		return daemon.AccessToken{Token: fakeAccessToken, ExpiresIn: 60, Scope: scope}, nil
	case 1:
		return daemon.AccessToken{}, &daemon.Error{Class: daemon.ErrUnauthenticated, Code: daemon.CodeInvalidClient, Message: "client authentication failed"}
	case 2:
		return daemon.AccessToken{}, daemon.Invalid(daemon.CodeInvalidScope, "scope is not allowed")
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
		{form, "", strings.Repeat("a", BodyLimit+1)},
	} {
		for answer := range uint8(4) {
			f.Add(s.ct, s.auth, []byte(s.body), answer)
		}
	}
	f.Fuzz(func(t *testing.T, ct, auth string, body []byte, answer uint8) {
		fake := &oauthFake{answer: int(answer % 4)}
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

		if len(fake.calls) > 1 {
			t.Fatalf("%d backend calls", len(fake.calls))
		}
		if len(fake.calls) == 1 {
			c := fake.calls[0]
			if !isForm || formErr != nil || dup || vals.Get("grant_type") != "client_credentials" || c.id == "" || c.secret == "" || c.scope != vals.Get("scope") {
				t.Fatalf("backend called with %+v for %q %q %q", c, ct, auth, body)
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
			var tr TokenResponse
			if len(fake.calls) != 1 || fake.answer != 0 || dec.Decode(&tr) != nil || tr.AccessToken != fakeAccessToken || tr.TokenType != "Bearer" {
				t.Fatalf("200 with %+v after %d calls", tr, len(fake.calls))
			}
			return
		}
		if rec.Code == http.StatusServiceUnavailable {
			if len(fake.calls) != 1 || fake.answer != 3 {
				t.Fatalf("503 without a backend failure")
			}
			return
		}
		var oe OAuth2Error
		if err := dec.Decode(&oe); err != nil {
			t.Fatalf("%d answer is not an RFC 6749 error: %v", rec.Code, err)
		}
		want := map[int][]string{
			http.StatusBadRequest:            {daemon.CodeInvalidRequest, daemon.CodeUnsupportedGrantType, daemon.CodeInvalidScope},
			http.StatusUnauthorized:          {daemon.CodeInvalidClient},
			http.StatusRequestEntityTooLarge: {daemon.CodeInvalidRequest},
		}[rec.Code]
		if !contains(want, oe.Error) {
			t.Fatalf("status %d with error %q", rec.Code, oe.Error)
		}
		if (rec.Code == http.StatusRequestEntityTooLarge) != (isForm && len(body) > BodyLimit) {
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
		for _, s := range []string{vals.Get("client_secret"), basicSecret} {
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
