package e2e

// End-to-end tests beside a real Kubernetes control plane
// (internal/k8stest): etcd and kube-apiserver on loopback, driven with
// kubectl, next to the real coffer daemon. `make k8s-test` builds the
// programs and runs the TestK8s tests; without COFFER_K8S_BIN (as in
// `make test`) they skip.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/k8stest"
)

// TestK8sControlPlane checks the test bed itself: the release it runs,
// objects written through kubectl and found in etcd, a watch, a service
// account token used as a bearer, a restart of kube-apiserver that keeps
// etcd; and the coffer daemon serving beside it, as the Kubernetes
// integrations' tests will combine them.
func TestK8sControlPlane(t *testing.T) {
	k8stest.Bin(t) // skip before starting anything when the programs are not wanted
	d := startDaemon(t, workDir(t))
	cp := k8stest.Start(t, k8stest.Options{})

	var ver struct {
		Client struct {
			GitVersion string `json:"gitVersion"`
		} `json:"clientVersion"`
		Server struct {
			GitVersion string `json:"gitVersion"`
		} `json:"serverVersion"`
	}
	out := cp.Kubectl(t, "version", "--output=json")
	if err := json.Unmarshal([]byte(out), &ver); err != nil {
		t.Fatalf("kubectl version: %v\n%s", err, out)
	}
	if ver.Server.GitVersion != k8stest.Version || ver.Client.GitVersion != k8stest.Version {
		t.Fatalf("kubectl version: client %q, server %q; want %s for both", ver.Client.GitVersion, ver.Server.GitVersion, k8stest.Version)
	}
	if who := cp.Kubectl(t, "auth", "whoami", "--output=jsonpath={.status.userInfo.username}"); who != k8stest.AdminUser {
		t.Errorf("kubectl auth whoami with the admin kubeconfig: %q, want %q", who, k8stest.AdminUser)
	}

	const ns, name, value = "coffer-e2e", "db", "s3cr3t-k8s-value"
	cp.Kubectl(t, "create", "namespace", ns)
	cp.Kubectl(t, "--namespace="+ns, "create", "secret", "generic", name, "--from-literal=password="+value)
	checkSecret := func(when string) {
		t.Helper()
		got := cp.Kubectl(t, "--namespace="+ns, "get", "secret", name, "--output=jsonpath={.data.password}")
		if b, err := base64.StdEncoding.DecodeString(got); err != nil || string(b) != value {
			t.Fatalf("%s: secret %s/%s password = %q (%v), want base64 of %q", when, ns, name, got, err, value)
		}
	}
	checkSecret("after create")

	// Without an encryption configuration the object is stored as is:
	// Kubernetes' protobuf envelope ("k8s\x00") with the value in clear.
	// The KMS tests assert the opposite.
	key := "/registry/secrets/" + ns + "/" + name
	raw := cp.EtcdGet(t, key)
	if len(raw) == 0 {
		t.Fatalf("etcd has nothing under %s", key)
	}
	if !bytes.HasPrefix(raw, []byte("k8s\x00")) || !bytes.Contains(raw, []byte(value)) {
		t.Errorf("etcd %s = %q, want the unencrypted protobuf object holding %q", key, raw, value)
	}
	if got := cp.EtcdGet(t, "/registry/secrets/"+ns+"/absent"); got != nil {
		t.Errorf("EtcdGet of a missing key = %q, want nil", got)
	}

	// A watch: an ADDED event for a Secret created after it began.
	watchSecret(t, cp, ns, "watched")

	// A service account token, signed by the generated key and taken as a
	// bearer token.
	cp.Kubectl(t, "--namespace="+ns, "create", "serviceaccount", "robot")
	tok := strings.TrimSpace(cp.Kubectl(t, "--namespace="+ns, "create", "token", "robot", "--duration=10m"))
	want := "system:serviceaccount:" + ns + ":robot"
	if who := cp.KubectlToken(t, tok, "auth", "whoami", "--output=jsonpath={.status.userInfo.username}"); who != want {
		t.Errorf("kubectl auth whoami --token: %q, want %q", who, want)
	}
	if r := cp.RunKubectl(t, tok, "", "--namespace="+ns, "get", "secrets"); r.Code == 0 || !strings.Contains(r.Stderr, "Forbidden") {
		t.Errorf("a service account without roles listed secrets (RBAC is on), want Forbidden:\n%s", r)
	}
	if r := cp.RunKubectl(t, "not-a-token", "", "auth", "whoami"); r.Code == 0 || !strings.Contains(r.Stderr, "Unauthorized") {
		t.Errorf("an unknown bearer token, want Unauthorized:\n%s", r)
	}

	// kube-apiserver restarts on its port; etcd keeps the objects.
	start := time.Now()
	cp.Restart(t)
	t.Logf("kube-apiserver restarted and ready in %s", time.Since(start).Round(time.Millisecond))
	checkSecret("after a restart of kube-apiserver")

	// coffer serves beside the control plane.
	d.mustCLI(t, "", "project", "create", "k8s-side")
	if r := d.mustCLI(t, "", "project", "list"); !strings.Contains(r.stdout, "k8s-side") {
		t.Errorf("coffer project list does not show k8s-side:\n%s", r)
	}
}

// watchSecret watches Secrets in ns over HTTPS as the admin, creates one
// named name once the watch is open, and waits for its ADDED event.
func watchSecret(t *testing.T, cp *k8stest.ControlPlane, ns, name string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet,
		cp.URL+"/api/v1/namespaces/"+ns+"/secrets?watch=true&timeoutSeconds=30&allowWatchBookmarks=false", nil)
	if err != nil {
		t.Fatal(err)
	}
	res, err := cp.HTTPClient(t).Do(req)
	if err != nil {
		t.Fatalf("watch secrets: %v", err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("watch secrets: %s", res.Status)
	}
	cp.Kubectl(t, "--namespace="+ns, "create", "secret", "generic", name, "--from-literal=k=v")
	sc := bufio.NewScanner(res.Body)
	sc.Buffer(nil, 1<<20)
	var seen []string
	for sc.Scan() {
		var ev struct {
			Type   string `json:"type"`
			Object struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			} `json:"object"`
		}
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("watch event %q: %v", sc.Bytes(), err)
		}
		seen = append(seen, ev.Type+" "+ev.Object.Metadata.Name)
		if ev.Type == "ADDED" && ev.Object.Metadata.Name == name {
			return
		}
	}
	t.Fatalf("the watch ended (%v) without ADDED %s; saw %q", sc.Err(), name, seen)
}

// TestK8sOptions checks that the Options the Kubernetes integrations use
// reach kube-apiserver and work: a token webhook and an authorization
// webhook (a small TLS server of the test's, in coffer's place) and an
// encryption configuration (aescbc, in the KMS plugin's place).
func TestK8sOptions(t *testing.T) {
	k8stest.Bin(t)
	var (
		mu       sync.Mutex
		versions = map[string]bool{} // the review kinds and versions seen
	)
	hook := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review map[string]any
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		mu.Lock()
		versions[fmt.Sprint(review["kind"], " ", review["apiVersion"])] = true
		mu.Unlock()
		spec, _ := review["spec"].(map[string]any)
		var status map[string]any
		switch r.URL.Path {
		case "/authenticate":
			status = map[string]any{"authenticated": false}
			if spec["token"] == "webhook-token" {
				status = map[string]any{"authenticated": true, "user": map[string]any{
					"username": "webhook-user", "uid": "42", "groups": []string{"webhook-group"},
				}}
			}
		case "/authorize":
			// Allow webhook-user to list configmaps; no opinion otherwise,
			// so RBAC decides (and denies).
			attrs, _ := spec["resourceAttributes"].(map[string]any)
			allowed := spec["user"] == "webhook-user" && attrs["resource"] == "configmaps" && attrs["verb"] == "list"
			status = map[string]any{"allowed": allowed}
		default:
			http.NotFound(w, r)
			return
		}
		// Answer in the version asked in.
		_ = json.NewEncoder(w).Encode(map[string]any{
			"apiVersion": review["apiVersion"], "kind": review["kind"], "status": status,
		})
	}))
	t.Cleanup(hook.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: hook.Certificate().Raw})

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	encCfg := filepath.Join(t.TempDir(), "encryption.yaml")
	if err := os.WriteFile(encCfg, []byte(`apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
- resources: [secrets]
  providers:
  - aescbc:
      keys:
      - name: k1
        secret: `+base64.StdEncoding.EncodeToString(key)+`
  - identity: {}
`), 0o600); err != nil {
		t.Fatal(err)
	}

	cp := k8stest.Start(t, k8stest.Options{
		TokenWebhookConfig:                      k8stest.WebhookKubeconfig(t, k8stest.Webhook{URL: hook.URL + "/authenticate", CAPEM: caPEM}),
		AuthorizationWebhookConfig:              k8stest.WebhookKubeconfig(t, k8stest.Webhook{URL: hook.URL + "/authorize", CAPEM: caPEM}),
		EncryptionProviderConfig:                encCfg,
		EncryptionProviderConfigAutomaticReload: true,
		ExtraArgs:                               []string{"--v=1"},
	})

	if who := cp.KubectlToken(t, "webhook-token", "auth", "whoami", "--output=jsonpath={.status.userInfo.username}"); who != "webhook-user" {
		t.Errorf("whoami with the webhook's token: %q, want webhook-user", who)
	}
	if r := cp.RunKubectl(t, "other-token", "", "auth", "whoami"); r.Code == 0 || !strings.Contains(r.Stderr, "Unauthorized") {
		t.Errorf("a token the webhook refuses, want Unauthorized:\n%s", r)
	}
	cp.KubectlToken(t, "webhook-token", "--namespace=default", "get", "configmaps")
	if r := cp.RunKubectl(t, "webhook-token", "", "--namespace=default", "get", "secrets"); r.Code == 0 || !strings.Contains(r.Stderr, "Forbidden") {
		t.Errorf("secrets, which the authorization webhook does not allow, want Forbidden:\n%s", r)
	}

	mu.Lock()
	want := map[string]bool{"TokenReview authentication.k8s.io/v1": true, "SubjectAccessReview authorization.k8s.io/v1": true}
	if !maps.Equal(versions, want) {
		t.Errorf("the webhooks got %v, want %v", versions, want)
	}
	mu.Unlock()

	cp.Kubectl(t, "--namespace=default", "create", "secret", "generic", "sealed", "--from-literal=k=plain-value-xyz")
	raw := cp.EtcdGet(t, "/registry/secrets/default/sealed")
	if !bytes.HasPrefix(raw, []byte("k8s:enc:aescbc:v1:k1:")) || bytes.Contains(raw, []byte("plain-value-xyz")) {
		t.Errorf("etcd holds %q, want aescbc ciphertext without the value", raw)
	}
	if got := cp.Kubectl(t, "--namespace=default", "get", "secret", "sealed", "--output=jsonpath={.data.k}"); got != base64.StdEncoding.EncodeToString([]byte("plain-value-xyz")) {
		t.Errorf("the encrypted secret reads back as %q", got)
	}
}
