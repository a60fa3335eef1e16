package unixapi

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/daemon"
)

// fakeAuditor keeps recorded events.
type fakeAuditor struct {
	mu     sync.Mutex
	events []audit.Event
}

func (a *fakeAuditor) Record(e audit.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *fakeAuditor) Entries(context.Context, uint64, int) ([]json.RawMessage, uint64, error) {
	return []json.RawMessage{json.RawMessage(`{"seq":1}`)}, 1, nil
}

func (a *fakeAuditor) Tail(context.Context, int) ([]json.RawMessage, uint64, error) {
	return []json.RawMessage{json.RawMessage(`{"seq":1}`)}, 1, nil
}

func (a *fakeAuditor) Verify(context.Context) (audit.Report, error) {
	return audit.Report{OK: true, Entries: 1}, nil
}

func (a *fakeAuditor) take() []audit.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	out := a.events
	a.events = nil
	return out
}

// auditBackend adds what the audit tests call to fakeBackend.
type auditBackend struct {
	fakeBackend
	token   string // the one valid bearer token
	limited string // a token whose caller is rate limited
}

func (b *auditBackend) Authenticate(_ context.Context, p daemon.Principal, bearer string) (daemon.Principal, error) {
	if bearer == b.limited {
		return p, &daemon.Error{Class: daemon.ErrRateLimited, Code: daemon.CodeRateLimited, Message: "too many failed authentications"}
	}
	if bearer != b.token {
		return p, unauthenticated("invalid or expired token")
	}
	p.Token = &daemon.TokenIdentity{Kind: "access-token", SessionID: "sess-1", CredentialID: "cred-1", UserID: "user-1", ProjectID: "proj-1"}
	return p, nil
}

func (b *auditBackend) Deliver(_ context.Context, p daemon.Principal, req daemon.DeliveryRequest) (daemon.Delivery, error) {
	name := req.Name
	if p.Token == nil || name != "db" {
		return daemon.Delivery{}, daemon.NotFound("nothing to deliver under %q", name)
	}
	return daemon.Delivery{Payload: []byte("PAYLOAD-SECRET"), SecretID: "sec-1", Version: 3}, nil
}

func (b *auditBackend) ClientCredentials(_ context.Context, id, secret, _ string) (daemon.AccessToken, error) {
	return daemon.AccessToken{Token: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln", ExpiresIn: 60}, nil
}

func (b *auditBackend) Introspect(context.Context, string) (daemon.Introspection, error) {
	return daemon.Introspection{}, nil
}

// AuthorizeCall allows b.token to call service "svc".
func (b *auditBackend) AuthorizeCall(_ context.Context, token, service, _, _ string) (daemon.Decision, error) {
	if token != b.token {
		return daemon.Decision{Reason: "invalid or expired token"}, nil
	}
	return daemon.Decision{Allowed: service == "svc", User: "alice", Project: "default", Roles: []string{"reader"}}, nil
}

func TestAuditHook(t *testing.T) {
	tok, _, err := daemon.NewToken(daemon.PrefixAccessToken)
	if err != nil {
		t.Fatal(err)
	}
	badTok, parsedBad, _ := daemon.NewToken(daemon.PrefixAccessToken)
	limitedTok, parsedLimited, _ := daemon.NewToken(daemon.PrefixAccessToken)
	b := &auditBackend{token: tok, limited: limitedTok}
	a := &fakeAuditor{}
	srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.SetAuditor(a)
	unix := daemon.Principal{Channel: daemon.ChannelUnix, HasCred: true, UID: 0, GID: 0, PID: 42}
	send := func(method, target, body, bearer string, hdr map[string]string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, target, strings.NewReader(body))
		r = r.WithContext(daemon.WithPrincipal(r.Context(), unix))
		if bearer != "" {
			r.Header.Set("Authorization", "Bearer "+bearer)
		}
		for k, v := range hdr {
			r.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		srv.ServeHTTP(w, r)
		return w
	}
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded"}
	clientID := daemon.NewTokenID()
	tests := []struct {
		name                     string
		method, target, body, tk string
		hdr                      map[string]string
		want                     *audit.Event // nil: nothing recorded
		principal                func(*audit.Principal) bool
	}{
		{name: "a change", method: "POST", target: "/v1/projects/default/secrets", body: `{"display_name":"db","payload":"UEFZTE9BRC1TRUNSRVQ="}`,
			want: &audit.Event{Action: "secret.create", Outcome: "ok", Status: 201, Target: map[string]string{"project": "default", "secret": "01a20000-0000-7000-8000-000000000001"}},
			principal: func(p *audit.Principal) bool {
				return p.Channel == "unix" && p.UID != nil && *p.UID == 0 && p.PID == 42 && p.Session == ""
			}},
		{name: "a failed change", method: "POST", target: "/v1/projects/default/secrets", body: `{"display_name":"db","payload":"!!"}`,
			want: &audit.Event{Action: "secret.create", Outcome: "failed", Status: 400, Code: "invalid_payload", Target: map[string]string{"project": "default"}}},
		{name: "a read", method: "GET", target: "/v1/status"},
		{name: "a delivery", method: "GET", target: "/v1/deliver/db?key=user", tk: tok,
			want: &audit.Event{Action: "deliver", Outcome: "ok", Status: 200, Target: map[string]string{"name": "db", "key": "user", "secret": "sec-1", "version": "3"}},
			principal: func(p *audit.Principal) bool {
				return p.TokenKind == "access-token" && p.Session == "sess-1" && p.Credential == "cred-1" && p.User == "user-1" && p.TokenID == ""
			}},
		{name: "a refused delivery", method: "GET", target: "/v1/deliver/other",
			want: &audit.Event{Action: "deliver", Outcome: "denied", Status: 404, Code: "not_found", Target: map[string]string{"name": "other"}}},
		{name: "a bad bearer token on a read", method: "GET", target: "/v1/status", tk: badTok,
			want:      &audit.Event{Action: "GET /v1/status", Outcome: "denied", Status: 401, Code: "unauthenticated"},
			principal: func(p *audit.Principal) bool { return p.TokenID == "cft_"+parsedBad.ID && p.Session == "" }},
		{name: "a rate-limited bearer token on a read", method: "GET", target: "/v1/status", tk: limitedTok,
			want:      &audit.Event{Action: "GET /v1/status", Outcome: "denied", Status: 429, Code: "rate_limited"},
			principal: func(p *audit.Principal) bool { return p.TokenID == "cft_"+parsedLimited.ID }},
		{name: "a bad bearer token on a change", method: "DELETE", target: "/v1/secrets/sec-9", tk: badTok,
			want: &audit.Event{Action: "secret.delete", Outcome: "denied", Status: 401, Code: "unauthenticated", Target: map[string]string{"secret": "sec-9"}}},
		{name: "a token pasted as an id", method: "DELETE", target: "/v1/secrets/" + badTok, tk: badTok,
			want: &audit.Event{Action: "secret.delete", Outcome: "denied", Status: 401, Code: "unauthenticated", Target: map[string]string{"secret": "[withheld]"}}},
		{name: "an OAuth2 token", method: "POST", target: "/oauth2/token", body: url.Values{"grant_type": {"client_credentials"}, "client_id": {clientID}, "client_secret": {badTok}}.Encode(), hdr: form,
			want: &audit.Event{Action: "oauth2.token", Outcome: "ok", Status: 200, Target: map[string]string{"client_id": clientID}}},
		{name: "an OAuth2 secret given as the client id", method: "POST", target: "/oauth2/token", body: url.Values{"grant_type": {"client_credentials"}, "client_id": {badTok}, "client_secret": {clientID}}.Encode(), hdr: form,
			want: &audit.Event{Action: "oauth2.token", Outcome: "ok", Status: 200}},
		{name: "an inactive token introspected", method: "POST", target: "/oauth2/introspect", body: url.Values{"token": {badTok}}.Encode(), hdr: form,
			want: &audit.Event{Action: "oauth2.introspect", Outcome: "denied", Status: 200, Target: map[string]string{"active": "false", "token_id": "cft_" + parsedBad.ID}}},
		{name: "an allowed authorization", method: "POST", target: "/v1/authorize", body: `{"token":"` + tok + `","service":"svc","method":"GET","path":"/x"}`,
			want: &audit.Event{Action: "authorize", Outcome: "ok", Status: 200, Target: map[string]string{"user": "alice", "project": "default", "allowed": "true"}}},
		{name: "a refused authorization", method: "POST", target: "/v1/authorize", body: `{"token":"` + tok + `","service":"other","method":"GET","path":"/x"}`,
			want: &audit.Event{Action: "authorize", Outcome: "denied", Status: 200, Target: map[string]string{"user": "alice", "project": "default", "allowed": "false"}}},
		{name: "an authorization of a bad token", method: "POST", target: "/v1/authorize", body: `{"token":"` + badTok + `","service":"svc","method":"GET","path":"/x"}`,
			want: &audit.Event{Action: "authorize", Outcome: "denied", Status: 200, Target: map[string]string{"allowed": "false"}}},
		{name: "a malformed authorization", method: "POST", target: "/v1/authorize", body: `{"token":`,
			want: &audit.Event{Action: "authorize", Outcome: "failed", Status: 400, Code: "invalid_json"}},
		{name: "the audit log read", method: "GET", target: "/v1/audit?tail=3"},
		{name: "the audit log verified", method: "POST", target: "/v1/audit/verify",
			want: &audit.Event{Action: "audit.verify", Outcome: "ok", Status: 200}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := send(tt.method, tt.target, tt.body, tt.tk, tt.hdr)
			got := a.take()
			if tt.want == nil {
				if len(got) != 0 {
					t.Fatalf("status %d: recorded %+v, want nothing", w.Code, got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("status %d (%s): recorded %d events, want 1", w.Code, w.Body, len(got))
			}
			e := got[0]
			if e.Action != tt.want.Action || e.Outcome != tt.want.Outcome || e.Status != tt.want.Status || e.Code != tt.want.Code || !sameMap(e.Target, tt.want.Target) {
				t.Errorf("event %+v\nwant  %+v", e, *tt.want)
			}
			if e.Principal == nil || tt.principal != nil && !tt.principal(e.Principal) {
				t.Errorf("principal %+v", e.Principal)
			}
			line, _ := json.Marshal(e)
			for _, secret := range []string{tok, badTok, "PAYLOAD-SECRET", "UEFZTE9BRC1TRUNSRVQ=", "eyJhbGciOiJFUzI1NiJ9"} {
				if strings.Contains(string(line), secret) {
					t.Errorf("LEAK: the event %s holds a secret", line)
				}
			}
		})
	}
}

func sameMap(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestAuditRoutesWithoutAuditor(t *testing.T) {
	c, _ := serve(t, &fakeBackend{})
	_, err := c.AuditVerify(context.Background())
	var ae *APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != "unavailable" {
		t.Fatalf("verify without an audit log: %v, want 503 unavailable", err)
	}
}

func TestAuditHookRecordsAPanic(t *testing.T) {
	a := &fakeAuditor{}
	srv := NewServer(&fakeBackend{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.SetAuditor(a)
	r := httptest.NewRequest("DELETE", "/v1/secrets/sec-1", nil) // fakeBackend has no DeleteSecret: it panics
	func() {
		defer func() {
			if recover() == nil {
				t.Error("the panic was swallowed")
			}
		}()
		srv.ServeHTTP(httptest.NewRecorder(), r)
	}()
	got := a.take()
	if len(got) != 1 || got[0].Action != "secret.delete" || got[0].Outcome != audit.OutcomeFailed || got[0].Status != 500 {
		t.Fatalf("recorded %+v, want one failed secret.delete", got)
	}
}

// Every change has an event name, and every named route exists.
func TestAuditRouteNames(t *testing.T) {
	routes := NewServer(&fakeBackend{}, nil).Routes()
	served := map[string]bool{}
	for _, r := range routes {
		served[r] = true
		if method, _, _ := strings.Cut(r, " "); method != http.MethodGet && auditRoutes[r].action == "" {
			t.Errorf("route %q changes something but has no audit action name in auditRoutes", r)
		}
	}
	for r := range auditRoutes {
		if !served[r] {
			t.Errorf("auditRoutes names %q, which the server does not serve", r)
		}
	}
}
