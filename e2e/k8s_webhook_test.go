package e2e

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/pkcs11"
	"gopkg.in/yaml.v3"
)

// webhookKubeconfig is what the test reads of `coffer k8s webhook-config`.
type webhookKubeconfig struct {
	Clusters []struct {
		Cluster struct {
			Server string `yaml:"server"`
			CAData string `yaml:"certificate-authority-data"`
		} `yaml:"cluster"`
	} `yaml:"clusters"`
	Users []struct {
		User struct {
			Token     string `yaml:"token"`
			TokenFile string `yaml:"tokenFile"`
		} `yaml:"user"`
	} `yaml:"users"`
}

// k8sClient is kube-apiserver as one webhook kubeconfig describes it.
type k8sClient struct {
	server string
	token  string
	ca     []byte
	http   *http.Client
}

func webhookClient(t *testing.T, d *daemonProc, kind string, extra ...string) k8sClient {
	t.Helper()
	out := d.mustCLI(t, "", append([]string{"k8s", "webhook-config", "--kind", kind}, extra...)...).stdout
	var kc webhookKubeconfig
	if err := yaml.Unmarshal([]byte(out), &kc); err != nil {
		t.Fatalf("webhook-config is no kubeconfig: %v\n%s", err, out)
	}
	if len(kc.Clusters) != 1 || len(kc.Users) != 1 {
		t.Fatalf("kubeconfig:\n%s", out)
	}
	ca, err := base64.StdEncoding.DecodeString(kc.Clusters[0].Cluster.CAData)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		t.Fatalf("certificate-authority-data holds no certificate:\n%s", out)
	}
	tok := kc.Users[0].User.Token
	if f := kc.Users[0].User.TokenFile; f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		tok = strings.TrimSpace(string(b))
	}
	return k8sClient{
		server: kc.Clusters[0].Cluster.Server, token: tok, ca: ca,
		// Verified against the kubeconfig's CA only: no system roots.
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}},
	}
}

// post sends body as kube-apiserver would, with bearer (k.token if "").
func (k k8sClient) post(t *testing.T, bearer string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, k.server, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if bearer == "" {
		bearer = k.token
	}
	req.Header.Set("Authorization", "Bearer "+bearer)
	res, err := k.http.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", k.server, err)
	}
	defer res.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(res.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return res.StatusCode, out
}

func k8sTokenReview(token string, auds ...string) map[string]any {
	spec := map[string]any{"token": token}
	if auds != nil {
		spec["audiences"] = auds
	}
	return map[string]any{"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
}

func k8sSAR(user map[string]any, attrs map[string]any) map[string]any {
	spec := map[string]any{"user": user["username"], "uid": user["uid"], "groups": user["groups"], "extra": user["extra"]}
	if _, ok := attrs["path"]; ok {
		spec["nonResourceAttributes"] = attrs
	} else {
		spec["resourceAttributes"] = attrs
	}
	return map[string]any{"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
}

func k8sStatus(t *testing.T, out map[string]any) map[string]any {
	t.Helper()
	st, ok := out["status"].(map[string]any)
	if !ok {
		t.Fatalf("no status: %v", out)
	}
	return st
}

func TestK8sWebhooks(t *testing.T) {
	dir := workDir(t)
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	bearerFile := filepath.Join(dir, "k8s-bearer")
	if err := os.WriteFile(bearerFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	args := []string{"--k8s-listen", "127.0.0.1:0", "--k8s-bearer-file", bearerFile}
	d := startDaemon(t, dir, args...)
	d.newUser(t, "bob")
	d.setRole(t, "default", "bob", "member")
	pods := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "bob", "name": "pods",
		"access_rules": []map[string]string{{"service": "kubernetes", "method": "get", "path": "/api/v1/namespaces/*/pods/*"}}})
	free := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "bob", "name": "free"})
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "bob", "name": "client", "roles": []string{"reader"}})
	jwt := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken

	authn := webhookClient(t, d, "authn")
	authz := webhookClient(t, d, "authz")
	if !strings.HasPrefix(authn.server, "https://127.0.0.1:") || !strings.HasSuffix(authn.server, "/v1/k8s/tokenreview") ||
		!strings.HasSuffix(authz.server, "/v1/k8s/subjectaccessreview") || authn.token != hex.EncodeToString(secret) {
		t.Fatalf("kubeconfigs: %q %q", authn.server, authz.server)
	}

	// A valid token: its credential's identity.
	code, out := authn.post(t, "", k8sTokenReview(pods.Token))
	st := k8sStatus(t, out)
	user, _ := st["user"].(map[string]any)
	if code != 200 || st["authenticated"] != true || user["username"] != "service-account-"+strings.ToLower(pods.TokenID) || user["uid"] != pods.ID {
		t.Fatalf("TokenReview: %d %v", code, out)
	}
	groups, _ := json.Marshal(user["groups"])
	if string(groups) != `["coffer:default:reader","coffer:default:member","system:authenticated"]` {
		t.Fatalf("groups %s", groups)
	}
	if out["apiVersion"] != "authentication.k8s.io/v1" || out["kind"] != "TokenReview" || strings.Contains(mustJSON(out), pods.Token) {
		t.Fatalf("answer %v", out)
	}
	// An OAuth2 JWT: its client's identity, its scope's groups; the
	// requested audiences come back (no --k8s-audience: any).
	code, out = authn.post(t, "", k8sTokenReview(jwt, "https://kubernetes.default.svc"))
	st = k8sStatus(t, out)
	ju, _ := st["user"].(map[string]any)
	if code != 200 || st["authenticated"] != true || ju["username"] != "service-account-"+strings.ToLower(oc.TokenID) ||
		mustJSON(ju["groups"]) != `["coffer:default:reader","system:authenticated"]` || mustJSON(st["audiences"]) != `["https://kubernetes.default.svc"]` {
		t.Fatalf("JWT TokenReview: %d %v", code, out)
	}

	// The credential's rules allow only get on pods: list secrets is denied.
	code, out = authz.post(t, "", k8sSAR(user, map[string]any{"verb": "list", "namespace": "default", "version": "v1", "resource": "secrets"}))
	st = k8sStatus(t, out)
	if code != 200 || st["allowed"] != false || st["denied"] != true || !strings.Contains(st["reason"].(string), "access rules of credential pods") {
		t.Fatalf("list secrets: %d %v", code, out)
	}
	code, out = authz.post(t, "", k8sSAR(user, map[string]any{"verb": "get", "namespace": "default", "version": "v1", "resource": "pods", "name": "web"}))
	st = k8sStatus(t, out)
	if code != 200 || st["allowed"] != false || st["denied"] != nil {
		t.Fatalf("get pod: no opinion expected: %d %v", code, out)
	}
	code, out = authz.post(t, "", k8sSAR(map[string]any{"username": "alice"}, map[string]any{"verb": "delete", "path": "/healthz"}))
	if st = k8sStatus(t, out); code != 200 || st["denied"] != nil {
		t.Fatalf("a user that is not coffer's: %d %v", code, out)
	}

	// Revoked: not authenticated (a 200 that says so).
	code, out = authn.post(t, "", k8sTokenReview(free.Token))
	if k8sStatus(t, out)["authenticated"] != true {
		t.Fatalf("before revocation: %d %v", code, out)
	}
	d.mustAPI(t, "POST", "/v1/credentials/"+free.ID+"/revoke", nil, http.StatusOK, nil)
	code, out = authn.post(t, "", k8sTokenReview(free.Token))
	st = k8sStatus(t, out)
	if code != 200 || st["authenticated"] != nil || st["error"] != "invalid or expired token" || st["user"] != nil {
		t.Fatalf("revoked: %d %v", code, out)
	}

	// The webhook itself refuses a caller without its bearer.
	for _, b := range []string{"wrong", pods.Token} {
		code, out = authn.post(t, b, k8sTokenReview(pods.Token))
		if code != http.StatusUnauthorized || out["error"] != "unauthenticated" {
			t.Fatalf("bearer %q: %d %v", b[:5], code, out)
		}
	}
	// A v1beta1 review: 400 saying what to set.
	code, out = authn.post(t, "", map[string]any{"apiVersion": "authentication.k8s.io/v1beta1", "kind": "TokenReview", "spec": map[string]any{"token": pods.Token}})
	if code != 400 || !strings.Contains(out["message"].(string), "--authentication-token-webhook-version=v1") {
		t.Fatalf("v1beta1: %d %v", code, out)
	}
	// The bearer rotated: a new one in the file, then SIGHUP; the old one
	// is refused from then on, without a restart. A file that cannot be
	// used is refused by the reload and the running bearer kept.
	secret2 := make([]byte, 32)
	if _, err := rand.Read(secret2); err != nil {
		t.Fatal(err)
	}
	reload := func(content string) {
		t.Helper()
		if err := os.WriteFile(bearerFile, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		n := strings.Count(d.stderr.String(), "configuration reloaded")
		if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for strings.Count(d.stderr.String(), "configuration reloaded") == n {
			if time.Now().After(deadline) {
				t.Fatalf("no reload within 10s:\n%s", d.stderr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	reload(hex.EncodeToString(secret2) + "\n")
	if code, out := authn.post(t, hex.EncodeToString(secret2), k8sTokenReview(pods.Token)); code != 200 || k8sStatus(t, out)["authenticated"] != true {
		t.Fatalf("the new bearer after SIGHUP: %d %v", code, out)
	}
	if code, out := authn.post(t, hex.EncodeToString(secret), k8sTokenReview(pods.Token)); code != http.StatusUnauthorized {
		t.Fatalf("the old bearer after SIGHUP: %d %v", code, out)
	}
	reload("short\n")
	if !strings.Contains(d.stderr.String(), "keeping the Kubernetes webhooks' running bearer and client CAs") {
		t.Fatalf("a bad bearer file was not reported:\n%s", d.stderr)
	}
	if code, out := authn.post(t, hex.EncodeToString(secret2), k8sTokenReview(pods.Token)); code != 200 || k8sStatus(t, out)["authenticated"] != true {
		t.Fatalf("the running bearer after a refused reload: %d %v", code, out)
	}
	if err := os.WriteFile(bearerFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Nothing secret in the daemon's output.
	for _, s := range []string{pods.Token, free.Token, jwt, hex.EncodeToString(secret), hex.EncodeToString(secret2)} {
		if strings.Contains(d.stderr.String(), s) || strings.Contains(d.stdout.String(), s) {
			t.Fatal("a token or the webhook bearer in the daemon's output")
		}
	}

	// The TLS key is in the token and cannot leave it.
	d.Stop(t)
	checkKeyInToken(t, filepath.Join(dir, ".coffer", "hsm"), "coffer-k8s-tls")

	// After a restart: the same serving certificate, so the kubeconfigs
	// kube-apiserver has keep working.
	d2 := startDaemon(t, dir, args...)
	again := webhookClient(t, d2, "authn")
	if !bytes.Equal(again.ca, authn.ca) {
		t.Fatal("the webhook CA changed across a restart")
	}
	if code, out := again.post(t, "", k8sTokenReview(pods.Token)); code != 200 || k8sStatus(t, out)["authenticated"] != true {
		t.Fatalf("after restart: %d %v", code, out)
	}
}

func TestK8sWebhooksNeedAuthentication(t *testing.T) {
	dir := workDir(t)
	for _, tt := range []struct {
		args []string
		msg  string
	}{
		{[]string{"--k8s-listen", "127.0.0.1:0"}, "--k8s-client-ca or --k8s-bearer-file"},
		{[]string{"--k8s-listen", "0.0.0.0:0", "--k8s-bearer-file", "/dev/null"}, "not a loopback address"},
	} {
		d := launchDaemon(t, dir, append([]string{"daemon", "--dev"}, tt.args...)...)
		if code := d.waitExit(t); code != 2 || !strings.Contains(d.stderr.String(), tt.msg) {
			t.Fatalf("coffer daemon %v: exit %d\n%s", tt.args, code, d.stderr)
		}
	}
	d := startDaemon(t, dir)
	if r := d.cli(t, "", "k8s", "webhook-config"); r.code != 1 || !strings.Contains(r.stderr, "--k8s-listen") {
		t.Fatalf("webhook-config without a listener:\n%s", r)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

// checkKeyInToken opens the dev token (the daemon stopped) and checks
// the serving key's private half: one object, CKA_SENSITIVE true,
// CKA_EXTRACTABLE false, its value unreadable.
func checkKeyInToken(t *testing.T, hsmDir, id string) {
	t.Helper()
	t.Setenv("SOFTHSM2_CONF", filepath.Join(hsmDir, "softhsm2.conf"))
	pin, err := os.ReadFile(filepath.Join(hsmDir, "hsm-pin"))
	if err != nil {
		t.Fatal(err)
	}
	p := pkcs11.New(softHSMModule)
	if p == nil {
		t.Fatal("cannot load SoftHSM")
	}
	if err := p.Initialize(); err != nil {
		t.Fatal(err)
	}
	defer p.Destroy()
	defer p.Finalize()
	slots, err := p.GetSlotList(true)
	if err != nil {
		t.Fatal(err)
	}
	var slot uint
	found := false
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err == nil && strings.TrimRight(ti.Label, " ") == "coffer-dev" {
			slot, found = s, true
		}
	}
	if !found {
		t.Fatal("no coffer-dev token")
	}
	sh, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	defer p.CloseSession(sh)
	if err := p.Login(sh, pkcs11.CKU_USER, strings.TrimSpace(string(pin))); err != nil {
		t.Fatal(err)
	}
	defer p.Logout(sh)
	if err := p.FindObjectsInit(sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(id)),
	}); err != nil {
		t.Fatal(err)
	}
	objs, _, err := p.FindObjects(sh, 10)
	p.FindObjectsFinal(sh)
	if err != nil || len(objs) != 1 {
		t.Fatalf("private halves of %s: %d (%v), want 1", id, len(objs), err)
	}
	attrs, err := p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	if attrs[0].Value[0] != 1 || attrs[1].Value[0] != 0 {
		t.Fatalf("%s: CKA_SENSITIVE=%v CKA_EXTRACTABLE=%v, want true false", id, attrs[0].Value, attrs[1].Value)
	}
	if kt := attrs[2].Value[0]; kt != pkcs11.CKK_EC {
		t.Fatalf("%s: key type %d, want CKK_EC", id, kt)
	}
	_, err = p.GetAttributeValue(sh, objs[0], []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)})
	var perr pkcs11.Error
	if !errors.As(err, &perr) || perr != pkcs11.CKR_ATTRIBUTE_SENSITIVE {
		t.Fatalf("%s: reading CKA_VALUE: %v, want CKR_ATTRIBUTE_SENSITIVE", id, err)
	}
}
