package main

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"gopkg.in/yaml.v3"
)

func TestWebhookKubeconfig(t *testing.T) {
	dir := t.TempDir()
	bearerFile := filepath.Join(dir, "bearer")
	if err := os.WriteFile(bearerFile, []byte("0123456789abcdef0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	w := api.K8sWebhook{Server: "https://127.0.0.1:8443", TokenReviewPath: "/v1/k8s/tokenreview", SubjectAccessReviewPath: "/v1/k8s/subjectaccessreview",
		CertificateAuthority: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n", BearerFile: bearerFile}
	parse := func(out []byte) kubeconfig {
		t.Helper()
		var kc kubeconfig
		if err := yaml.Unmarshal(out, &kc); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return kc
	}
	out, err := webhookKubeconfig(w, kubeconfigOptions{kind: "authn"})
	if err != nil {
		t.Fatal(err)
	}
	kc := parse(out)
	ca, _ := base64.StdEncoding.DecodeString(kc.Clusters[0].Cluster.CertificateAuthorityData)
	if kc.Clusters[0].Cluster.Server != "https://127.0.0.1:8443/v1/k8s/tokenreview" || string(ca) != w.CertificateAuthority ||
		kc.Users[0].User.TokenFile != bearerFile || kc.Users[0].User.Token != "" || kc.CurrentContext != "coffer" ||
		kc.Contexts[0].Context.Cluster != "coffer" || kc.Contexts[0].Context.User != "kube-apiserver" {
		t.Fatalf("authn kubeconfig:\n%s", out)
	}
	if !strings.HasPrefix(string(out), "# kube-apiserver --authentication-token-webhook-config-file") {
		t.Fatalf("no hint: %s", out)
	}
	out, err = webhookKubeconfig(w, kubeconfigOptions{kind: "authz", server: "https://coffer.example:9443/", embedToken: true})
	if err != nil {
		t.Fatal(err)
	}
	kc = parse(out)
	if kc.Clusters[0].Cluster.Server != "https://coffer.example:9443/v1/k8s/subjectaccessreview" || kc.Users[0].User.Token != "0123456789abcdef0123456789abcdef" || kc.Users[0].User.TokenFile != "" {
		t.Fatalf("authz kubeconfig:\n%s", out)
	}
	// A daemon that requires a client certificate.
	w.ClientCAFile = "/etc/coffer/k8s-ca.pem"
	if _, err := webhookKubeconfig(w, kubeconfigOptions{kind: "authn"}); err == nil || !strings.Contains(err.Error(), "--client-certificate") {
		t.Fatalf("without the client certificate: %v", err)
	}
	out, err = webhookKubeconfig(w, kubeconfigOptions{kind: "authn", clientCert: "/etc/kubernetes/pki/apiserver-coffer.crt", clientKey: "/etc/kubernetes/pki/apiserver-coffer.key"})
	if err != nil {
		t.Fatal(err)
	}
	if u := parse(out).Users[0].User; u.ClientCertificate != "/etc/kubernetes/pki/apiserver-coffer.crt" || u.ClientKey != "/etc/kubernetes/pki/apiserver-coffer.key" || u.TokenFile != bearerFile {
		t.Fatalf("client certificate kubeconfig:\n%s", out)
	}
	for _, s := range []string{"http://127.0.0.1:1", "127.0.0.1:1", "https://"} {
		if _, err := webhookKubeconfig(w, kubeconfigOptions{kind: "authn", server: s}); err == nil {
			t.Errorf("--server %q taken", s)
		}
	}
}
