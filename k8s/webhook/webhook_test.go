package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hsm"
)

// fakeReviewer answers with fixed results and remembers the questions.
type fakeReviewer struct {
	token    string
	auds     []string
	access   daemon.AccessReview
	tr       daemon.TokenReviewResult
	ar       daemon.AccessReviewResult
	err      error
	princips []daemon.Principal
}

func (f *fakeReviewer) ReviewToken(_ context.Context, p daemon.Principal, token string, auds []string) (daemon.TokenReviewResult, error) {
	f.token, f.auds, f.princips = token, auds, append(f.princips, p)
	return f.tr, f.err
}

func (f *fakeReviewer) ReviewAccess(_ context.Context, p daemon.Principal, in daemon.AccessReview) (daemon.AccessReviewResult, error) {
	f.access, f.princips = in, append(f.princips, p)
	return f.ar, f.err
}

func post(t *testing.T, h http.Handler, path, body string) (int, map[string]any) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, path, strings.NewReader(body)))
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("answer is not JSON: %q", rec.Body.String())
	}
	return rec.Code, out
}

const trBody = `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"cft_secret","audiences":["a","b"]}}`

func TestTokenReviewHandler(t *testing.T) {
	f := &fakeReviewer{tr: daemon.TokenReviewResult{Authenticated: true, Username: "service-account-X", UID: "u1",
		Groups: []string{"coffer:p:reader", "system:authenticated"}, Extra: map[string][]string{"coffer.dev/project": {"p"}}, Audiences: []string{"a"}}}
	h := NewHandler(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	code, out := post(t, h, TokenReviewPath, trBody)
	if code != 200 {
		t.Fatalf("status %d: %v", code, out)
	}
	if f.token != "cft_secret" || !slices.Equal(f.auds, []string{"a", "b"}) || f.princips[0].Channel != daemon.ChannelKubernetes {
		t.Fatalf("asked %q %v as %+v", f.token, f.auds, f.princips)
	}
	b, _ := json.Marshal(out)
	want := `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","status":{"audiences":["a"],"authenticated":true,"user":{"extra":{"coffer.dev/project":["p"]},"groups":["coffer:p:reader","system:authenticated"],"uid":"u1","username":"service-account-X"}}}`
	if string(b) != want {
		t.Fatalf("answer\n%s\nwant\n%s", b, want)
	}
	// Not authenticated: 200 with the reason; the token is never echoed.
	f.tr = daemon.TokenReviewResult{Error: "invalid or expired token"}
	code, out = post(t, h, TokenReviewPath, trBody)
	st := out["status"].(map[string]any)
	if code != 200 || st["authenticated"] != nil || st["error"] != "invalid or expired token" {
		t.Fatalf("%d %v", code, out)
	}
	// Rate limited: an answer, not an error status.
	f.err = &daemon.Error{Class: daemon.ErrRateLimited, Code: daemon.CodeRateLimited, Message: "too many failed authentications; retry in 3 seconds"}
	code, out = post(t, h, TokenReviewPath, trBody)
	if code != 200 || out["status"].(map[string]any)["error"] != "too many failed authentications; retry in 3 seconds" {
		t.Fatalf("%d %v", code, out)
	}
	// The HSM or the store failing: 503, the apiserver fails closed.
	f.err = &daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeHSMUnavailable, Message: "the HSM is unavailable"}
	code, out = post(t, h, TokenReviewPath, trBody)
	if code != 503 || out["error"] != daemon.CodeHSMUnavailable {
		t.Fatalf("%d %v", code, out)
	}
	f.err = errors.New("boom")
	if code, _ = post(t, h, TokenReviewPath, trBody); code != 500 {
		t.Fatalf("internal error: %d", code)
	}
}

func TestBadReviews(t *testing.T) {
	f := &fakeReviewer{}
	h := NewHandler(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	tests := []struct {
		name, path, body string
		status           int
		msg              string
	}{
		{"v1beta1 TokenReview", TokenReviewPath, `{"apiVersion":"authentication.k8s.io/v1beta1","kind":"TokenReview","spec":{"token":"x"}}`, 400, "--authentication-token-webhook-version=v1"},
		{"wrong kind", TokenReviewPath, `{"apiVersion":"authentication.k8s.io/v1","kind":"SubjectAccessReview"}`, 400, "kind TokenReview"},
		{"SAR to the TokenReview route", TokenReviewPath, `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview"}`, 400, "want apiVersion authentication.k8s.io/v1"},
		{"malformed", TokenReviewPath, `{"apiVersion":`, 400, "malformed JSON"},
		{"wrong type", TokenReviewPath, `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":5}}`, 400, "wrong type"},
		{"empty", TokenReviewPath, ``, 400, "empty body"},
		{"too large", TokenReviewPath, `{"apiVersion":"` + strings.Repeat("a", MaxBodyBytes) + `"}`, 413, "at most"},
		{"v1beta1 SAR", SubjectAccessReviewPath, `{"apiVersion":"authorization.k8s.io/v1beta1","kind":"SubjectAccessReview","spec":{}}`, 400, "--authorization-webhook-version=v1"},
		{"SAR without attributes", SubjectAccessReviewPath, `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"x"}}`, 400, "neither"},
		{"SAR with both", SubjectAccessReviewPath, `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"resourceAttributes":{},"nonResourceAttributes":{}}}`, 400, "both"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, out := post(t, h, tt.path, tt.body)
			if code != tt.status || !strings.Contains(out["message"].(string), tt.msg) {
				t.Fatalf("%d %v, want %d with %q", code, out, tt.status, tt.msg)
			}
		})
	}
	if len(f.princips) != 0 {
		t.Fatal("a bad review reached the domain")
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, TokenReviewPath, nil))
	if rec.Code != 405 || rec.Header().Get("Allow") != "POST" {
		t.Fatalf("GET: %d %v", rec.Code, rec.Header())
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/k8s/other", nil))
	if rec.Code != 404 {
		t.Fatalf("unknown route: %d", rec.Code)
	}
}

func TestSubjectAccessReviewHandler(t *testing.T) {
	f := &fakeReviewer{ar: daemon.AccessReviewResult{Denied: true, Reason: "coffer: no"}}
	h := NewHandler(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	body := `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"service-account-X","uid":"u1",
		"groups":["coffer:p:reader"],"extra":{"coffer.dev/project":["p"]},
		"resourceAttributes":{"namespace":"default","verb":"list","version":"v1","resource":"secrets"}}}`
	code, out := post(t, h, SubjectAccessReviewPath, body)
	b, _ := json.Marshal(out)
	if code != 200 || string(b) != `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":false,"denied":true,"reason":"coffer: no"}}` {
		t.Fatalf("%d %s", code, b)
	}
	want := daemon.AccessReview{User: "service-account-X", UID: "u1", Groups: []string{"coffer:p:reader"},
		Extra: map[string][]string{"coffer.dev/project": {"p"}}, Verb: "list", Path: "/api/v1/namespaces/default/secrets"}
	if got := f.access; got.User != want.User || got.UID != want.UID || !slices.Equal(got.Groups, want.Groups) ||
		got.Extra["coffer.dev/project"][0] != "p" || got.Verb != want.Verb || got.Path != want.Path {
		t.Fatalf("asked %+v, want %+v", got, want)
	}
	// No opinion; a non-resource request.
	f.ar = daemon.AccessReviewResult{}
	code, out = post(t, h, SubjectAccessReviewPath, `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","spec":{"user":"bob","nonResourceAttributes":{"path":"/healthz","verb":"get"}}}`)
	b, _ = json.Marshal(out)
	if code != 200 || string(b) != `{"apiVersion":"authorization.k8s.io/v1","kind":"SubjectAccessReview","status":{"allowed":false}}` {
		t.Fatalf("%d %s", code, b)
	}
	if f.access.Path != "/healthz" || f.access.Verb != "get" {
		t.Fatalf("asked %+v", f.access)
	}
}

func TestRequestPath(t *testing.T) {
	for _, tt := range []struct {
		a    ResourceAttributes
		want string
	}{
		{ResourceAttributes{Namespace: "default", Version: "v1", Resource: "pods", Name: "web"}, "/api/v1/namespaces/default/pods/web"},
		{ResourceAttributes{Namespace: "default", Version: "v1", Resource: "pods", Name: "web", Subresource: "log"}, "/api/v1/namespaces/default/pods/web/log"},
		{ResourceAttributes{Version: "v1", Resource: "pods"}, "/api/v1/pods"},
		{ResourceAttributes{Version: "v1", Resource: "nodes", Name: "n1"}, "/api/v1/nodes/n1"},
		{ResourceAttributes{Namespace: "kube-system", Group: "apps", Version: "v1", Resource: "deployments"}, "/apis/apps/v1/namespaces/kube-system/deployments"},
		{ResourceAttributes{Group: "rbac.authorization.k8s.io", Version: "v1", Resource: "clusterroles", Name: "admin"}, "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin"},
		{ResourceAttributes{Namespace: "team", Version: "v1", Resource: "namespaces", Name: "team"}, "/api/v1/namespaces/team"},
		{ResourceAttributes{Version: "v1", Resource: "namespaces"}, "/api/v1/namespaces"},
		{ResourceAttributes{Namespace: "a", Resource: "pods"}, "/api/*/namespaces/a/pods"},
		{ResourceAttributes{Version: "v1", Namespace: "a/../b", Resource: "pods", Name: "x%2F"}, "/api/v1/namespaces/a%2F..%2Fb/pods/x%252F"},
	} {
		if got := RequestPath(&tt.a); got != tt.want {
			t.Errorf("RequestPath(%+v) = %q, want %q", tt.a, got, tt.want)
		}
	}
}

func TestCheckAddr(t *testing.T) {
	for addr, ok := range map[string]bool{"127.0.0.1:8443": true, "[::1]:8443": true, "localhost:1": true, "0.0.0.0:8443": false, ":8443": false, "10.0.0.1:8443": false, "127.0.0.1": false} {
		if err := CheckAddr(addr, false); (err == nil) != ok {
			t.Errorf("CheckAddr(%q) = %v", addr, err)
		}
	}
	if err := CheckAddr("0.0.0.0:8443", true); err != nil {
		t.Errorf("--k8s-listen-any: %v", err)
	}
}

func TestReadBearer(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "b")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	long := strings.Repeat("k", MinBearerLen)
	if b, err := ReadBearer(write(long + "\n")); err != nil || string(b) != long {
		t.Fatalf("%q %v", b, err)
	}
	for _, bad := range []string{"tiny-bearer", strings.Repeat("k", 20) + " " + strings.Repeat("k", 20), strings.Repeat("é", 20)} {
		_, err := ReadBearer(write(bad))
		if err == nil {
			t.Fatalf("ReadBearer(%q) succeeded", bad)
		}
		if strings.Contains(err.Error(), bad) {
			t.Fatal("the error quotes the bearer")
		}
	}
}

func TestCertLoadOrIssue(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	path := filepath.Join(t.TempDir(), "k8s-webhook.crt")
	now := time.Now()
	clock := func() time.Time { return now }
	c1, err := LoadOrIssue(CertOptions{Path: path, Key: key, Names: []string{"coffer.example"}, Now: clock})
	if err != nil || !c1.Issued {
		t.Fatalf("%+v %v", c1, err)
	}
	if !slices.Equal(c1.Cert.DNSNames, []string{"localhost", "coffer.example"}) || len(c1.Cert.IPAddresses) != 2 || !c1.Cert.IsCA {
		t.Fatalf("names %v %v", c1.Cert.DNSNames, c1.Cert.IPAddresses)
	}
	// Kept: the same certificate after a restart.
	c2, err := LoadOrIssue(CertOptions{Path: path, Key: key, Names: []string{"COFFER.example."}, Now: clock})
	if err != nil || c2.Issued || !bytes.Equal(c1.PEM, c2.PEM) {
		t.Fatalf("not kept: %+v %v", c2, err)
	}
	// Re-issued: other names, another key, near its end.
	for _, tt := range []struct {
		name string
		o    CertOptions
		why  string
	}{
		{"names", CertOptions{Path: path, Key: key, Now: clock}, "names changed"},
		{"key", CertOptions{Path: path, Key: must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader)), Now: clock}, "another key"},
		{"expiry", CertOptions{Path: path, Key: key, Now: func() time.Time { return now.Add(CertValidity - CertRenewBefore) }}, "ends within"},
	} {
		if _, err := LoadOrIssue(CertOptions{Path: path, Key: key, Now: clock}); err != nil {
			t.Fatal(err)
		}
		// (the line above makes the kept one fit the default names again)
		if tt.name == "names" {
			tt.o.Names = []string{"x.example"}
		}
		c, err := LoadOrIssue(tt.o)
		if err != nil || !c.Issued || !strings.Contains(c.Why, tt.why) {
			t.Errorf("%s: %+v %v", tt.name, c.Why, err)
		}
	}
	if err := os.WriteFile(path, []byte("junk"), 0o644); err != nil {
		t.Fatal(err)
	}
	if c, err := LoadOrIssue(CertOptions{Path: path, Key: key}); err != nil || !c.Issued {
		t.Fatalf("junk: %+v %v", c, err)
	}
	if _, err := LoadOrIssue(CertOptions{Path: path, Key: key, Names: []string{"not a name"}}); err == nil {
		t.Fatal("a bad name was taken")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// realEnv is a daemon over a SoftHSM dev token with project p1, user bob
// (member), and the HTTPS listener with its key in the HSM.
type realEnv struct {
	svc    *daemon.Service
	url    string
	client *http.Client
	bearer string
	root   daemon.Principal
}

func newRealEnv(t *testing.T, clientCAs *x509.CertPool, clientCert *tls.Certificate) *realEnv {
	t.Helper()
	if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM required in CI: %v", err)
		}
		t.Skipf("no SoftHSM: %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	hcfg, err := hsm.PrepareDevToken(ctx, filepath.Join(dir, "hsm"), hsm.DefaultModulePath, "coffer-webhook")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc, err := daemon.Open(ctx, daemon.Config{StateDir: filepath.Join(dir, "state"), HSM: hcfg, Version: "test", Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	key, err := svc.K8sServingKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := LoadOrIssue(CertOptions{Path: filepath.Join(dir, "k8s-webhook.crt"), Key: key})
	if err != nil {
		t.Fatal(err)
	}
	e := &realEnv{svc: svc, bearer: strings.Repeat("b", 40), root: daemon.Principal{Channel: daemon.ChannelUnix, HasCred: true}}
	cfg := Config{Addr: "127.0.0.1:0", Cert: tls.Certificate{Certificate: [][]byte{sc.Cert.Raw}, PrivateKey: key, Leaf: sc.Cert}, Logger: log, ClientCAs: clientCAs}
	if clientCAs == nil {
		cfg.Bearer = []byte(e.bearer)
	}
	srv, err := NewServer(NewHandler(svc, log), cfg)
	if err != nil {
		t.Fatal(err)
	}
	l, err := srv.Listen()
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(sc.PEM)
	tc := &tls.Config{RootCAs: pool}
	if clientCert != nil {
		tc.Certificates = []tls.Certificate{*clientCert}
	}
	e.client = &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
	e.url = "https://" + l.Addr().String()
	for _, step := range []func() error{
		func() error {
			_, err := svc.CreateProject(ctx, e.grant(t, daemon.ActManageProjects, daemon.Resource{}), "p1")
			return err
		},
		func() error {
			_, err := svc.CreateUser(ctx, e.grant(t, daemon.ActManageUsers, daemon.Resource{}), daemon.UserInput{Name: "bob"})
			return err
		},
		func() error {
			_, err := svc.SetRole(ctx, e.grant(t, daemon.ActManageRoles, daemon.Resource{Project: "p1"}), "bob", "member")
			return err
		},
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}
	return e
}

func (e *realEnv) grant(t *testing.T, a daemon.Action, r daemon.Resource) daemon.Grant {
	t.Helper()
	g, err := e.svc.Authorize(context.Background(), e.root, a, r)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (e *realEnv) post(t *testing.T, path, bearer string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, e.url+path, bytes.NewReader(b))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	res, err := e.client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, out
}

func tokenReview(token string) map[string]any {
	return map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": map[string]any{"token": token}}
}

func TestOverHTTPS(t *testing.T) {
	e := newRealEnv(t, nil, nil)
	ctx := context.Background()
	cred, iss, err := e.svc.CreateCredential(ctx, e.grant(t, daemon.ActCreateCredential, daemon.Resource{Project: "p1"}), daemon.CredentialInput{
		Type: daemon.CredAccessToken, User: "bob", Name: "pods",
		AccessRules: []daemon.AccessRule{{Service: "kubernetes", Method: "get", Path: "/api/v1/namespaces/*/pods/*"}}})
	if err != nil {
		t.Fatal(err)
	}
	code, out := e.post(t, TokenReviewPath, e.bearer, tokenReview(iss.Token))
	st, _ := out["status"].(map[string]any)
	user, _ := st["user"].(map[string]any)
	if code != 200 || st["authenticated"] != true || user["username"] != "service-account-"+strings.ToLower(cred.TokenID) || user["uid"] != cred.ID {
		t.Fatalf("%d %v", code, out)
	}
	sar := func(verb, ns, resource, name string) map[string]any {
		return map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": map[string]any{
			"user": user["username"], "uid": user["uid"], "groups": user["groups"], "extra": user["extra"],
			"resourceAttributes": map[string]any{"verb": verb, "namespace": ns, "version": "v1", "resource": resource, "name": name}}}
	}
	code, out = e.post(t, SubjectAccessReviewPath, e.bearer, sar("list", "default", "secrets", ""))
	st = out["status"].(map[string]any)
	if code != 200 || st["allowed"] != false || st["denied"] != true || !strings.Contains(st["reason"].(string), "access rules of credential pods") {
		t.Fatalf("list secrets: %d %v", code, out)
	}
	code, out = e.post(t, SubjectAccessReviewPath, e.bearer, sar("get", "default", "pods", "web"))
	st = out["status"].(map[string]any)
	if code != 200 || st["allowed"] != false || st["denied"] != nil {
		t.Fatalf("get pod: %d %v", code, out)
	}
	// The listener's own authentication.
	for _, b := range []string{"", "wrong", iss.Token} {
		if code, out := e.post(t, TokenReviewPath, b, tokenReview(iss.Token)); code != 401 || out["error"] != "unauthenticated" {
			t.Fatalf("bearer %q: %d %v", b, code, out)
		}
	}
	// Revoked: not authenticated.
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, daemon.ActManageCredential, daemon.Resource{Credential: cred.ID})); err != nil {
		t.Fatal(err)
	}
	code, out = e.post(t, TokenReviewPath, e.bearer, tokenReview(iss.Token))
	st = out["status"].(map[string]any)
	if code != 200 || st["authenticated"] != nil || st["error"] != "invalid or expired token" {
		t.Fatalf("revoked: %d %v", code, out)
	}
}

func TestClientCertificates(t *testing.T) {
	caKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "ca"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER := must(x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey))
	ca := must(x509.ParseCertificate(caDER))
	leafKey := must(ecdsa.GenerateKey(elliptic.P256(), rand.Reader))
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	leafDER := must(x509.CreateCertificate(rand.Reader, leafTmpl, ca, &leafKey.PublicKey, caKey))
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	leaf := tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}
	e := newRealEnv(t, pool, &leaf)
	if code, out := e.post(t, TokenReviewPath, "", tokenReview("cft_x")); code != 200 || out["status"].(map[string]any)["authenticated"] != nil {
		t.Fatalf("with a client certificate: %d %v", code, out)
	}
	// Without one the handshake fails.
	e2 := *e
	e2.client = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.client.Transport.(*http.Transport).TLSClientConfig.RootCAs}}}
	req, _ := http.NewRequest(http.MethodPost, e.url+TokenReviewPath, strings.NewReader("{}"))
	if res, err := e2.client.Do(req); err == nil {
		res.Body.Close()
		t.Fatal("no client certificate, yet an answer")
	}
}

func TestNewServerNeedsAuthentication(t *testing.T) {
	if _, err := NewServer(http.NotFoundHandler(), Config{Addr: "127.0.0.1:0"}); err == nil || !strings.Contains(err.Error(), "--k8s-client-ca or --k8s-bearer-file") {
		t.Fatalf("%v", err)
	}
	if _, err := NewServer(http.NotFoundHandler(), Config{Addr: "0.0.0.0:1", Bearer: []byte("x")}); err == nil {
		t.Fatal("a non-loopback address was taken")
	}
}

// TestWireMatchesK8sAPI proves the local wire types read what
// k8s.io/api's types write and write what they read: a member renamed or
// mistyped here would lose a field kube-apiserver sends or expects.
func TestWireMatchesK8sAPI(t *testing.T) {
	tm := metav1.TypeMeta{APIVersion: authnAPIVersion, Kind: "TokenReview"}
	tr := authnv1.TokenReview{TypeMeta: tm, Spec: authnv1.TokenReviewSpec{Token: "cft_x", Audiences: []string{"a", "b"}}}
	var got TokenReview
	roundTrip(t, tr, &got)
	want := TokenReview{APIVersion: authnAPIVersion, Kind: "TokenReview", Spec: TokenReviewSpec{Token: "cft_x", Audiences: []string{"a", "b"}}}
	if !equalJSON(t, got, want) {
		t.Errorf("TokenReview decoded as %+v, want %+v", got, want)
	}

	// The answer, read back by k8s.io/api's types.
	ours := tokenReviewResponse{APIVersion: authnAPIVersion, Kind: "TokenReview", Status: tokenReviewStatus{
		Authenticated: true, Audiences: []string{"a"},
		User: &UserInfo{Username: "service-account-x", UID: "01cred", Groups: []string{"coffer:p:admin", "system:authenticated"},
			Extra: map[string][]string{"coffer.dev/project": {"p"}}},
	}}
	var theirs authnv1.TokenReview
	roundTrip(t, ours, &theirs)
	wantStatus := authnv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"a"}, User: authnv1.UserInfo{
		Username: "service-account-x", UID: "01cred", Groups: []string{"coffer:p:admin", "system:authenticated"},
		Extra: map[string]authnv1.ExtraValue{"coffer.dev/project": {"p"}},
	}}
	if !equalJSON(t, theirs.Status, wantStatus) || theirs.APIVersion != authnAPIVersion || theirs.Kind != "TokenReview" {
		t.Errorf("k8s.io/api read the answer as %+v", theirs)
	}

	sar := authzv1.SubjectAccessReview{
		TypeMeta: metav1.TypeMeta{APIVersion: authzAPIVersion, Kind: "SubjectAccessReview"},
		Spec: authzv1.SubjectAccessReviewSpec{
			ResourceAttributes: &authzv1.ResourceAttributes{Namespace: "ns", Verb: "list", Group: "apps", Version: "v1",
				Resource: "deployments", Subresource: "scale", Name: "web"},
			User: "u", Groups: []string{"g"}, UID: "id", Extra: map[string]authzv1.ExtraValue{"k": {"v"}},
		},
	}
	var gotSAR SubjectAccessReview
	roundTrip(t, sar, &gotSAR)
	wantSAR := SubjectAccessReview{APIVersion: authzAPIVersion, Kind: "SubjectAccessReview", Spec: SubjectAccessReviewSpec{
		ResourceAttributes: &ResourceAttributes{Namespace: "ns", Verb: "list", Group: "apps", Version: "v1",
			Resource: "deployments", Subresource: "scale", Name: "web"},
		User: "u", Groups: []string{"g"}, UID: "id", Extra: map[string][]string{"k": {"v"}},
	}}
	if !equalJSON(t, gotSAR, wantSAR) {
		t.Errorf("SubjectAccessReview decoded as %+v, want %+v", gotSAR, wantSAR)
	}
	sar.Spec.ResourceAttributes = nil
	sar.Spec.NonResourceAttributes = &authzv1.NonResourceAttributes{Path: "/healthz", Verb: "get"}
	gotSAR = SubjectAccessReview{}
	roundTrip(t, sar, &gotSAR)
	if n := gotSAR.Spec.NonResourceAttributes; n == nil || *n != (NonResourceAttributes{Path: "/healthz", Verb: "get"}) || gotSAR.Spec.ResourceAttributes != nil {
		t.Errorf("nonResourceAttributes decoded as %+v", gotSAR.Spec)
	}

	oursSAR := subjectAccessReviewResponse{APIVersion: authzAPIVersion, Kind: "SubjectAccessReview",
		Status: SubjectAccessReviewStatus{Denied: true, Reason: "outside the token's rules", EvaluationError: "e"}}
	var theirSAR authzv1.SubjectAccessReview
	roundTrip(t, oursSAR, &theirSAR)
	if want := (authzv1.SubjectAccessReviewStatus{Denied: true, Reason: "outside the token's rules", EvaluationError: "e"}); theirSAR.Status != want {
		t.Errorf("k8s.io/api read the decision as %+v, want %+v", theirSAR.Status, want)
	}
}

func roundTrip(t *testing.T, from, to any) {
	t.Helper()
	b, err := json.Marshal(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, to); err != nil {
		t.Fatalf("decoding %s: %v", b, err)
	}
}

func equalJSON(t *testing.T, a, b any) bool {
	t.Helper()
	x, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	y, err := json.Marshal(b)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Equal(x, y)
}
