package k8stest

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The programs are not needed here: these check what Start writes before
// it runs them, and the skip rule.

func TestBinSkipsWhenUnset(t *testing.T) {
	t.Setenv("CI", "true") // the rule does not depend on CI
	var ran bool
	t.Run("unset", func(t *testing.T) {
		t.Setenv(BinEnv, "")
		Bin(t)
		ran = true
	})
	if ran {
		t.Fatalf("Bin returned with %s unset; want a skip", BinEnv)
	}
}

func readCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil || blk.Type != "CERTIFICATE" {
		t.Fatalf("%s: no CERTIFICATE block", path)
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return c
}

func TestPKI(t *testing.T) {
	cp := &ControlPlane{Dir: t.TempDir(), URL: "https://127.0.0.1:6443"}
	if err := cp.writePKI(Options{}); err != nil {
		t.Fatal(err)
	}
	pool, err := certPool(cp.CAPEM)
	if err != nil {
		t.Fatal(err)
	}
	serving := readCert(t, filepath.Join(cp.Dir, "serving.crt"))
	for _, host := range []string{"127.0.0.1", "::1", "localhost"} {
		if _, err := serving.Verify(x509.VerifyOptions{Roots: pool, DNSName: host}); err != nil {
			t.Errorf("serving certificate for %s: %v", host, err)
		}
	}
	if !slices.ContainsFunc(serving.IPAddresses, func(ip net.IP) bool { return ip.Equal(net.IPv4(127, 0, 0, 1)) }) {
		t.Errorf("serving certificate IPs %v lack 127.0.0.1", serving.IPAddresses)
	}
	admin := readCert(t, cp.AdminCertFile)
	if _, err := admin.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("admin client certificate: %v", err)
	}
	if admin.Subject.CommonName != AdminUser || !slices.Equal(admin.Subject.Organization, []string{AdminGroup}) {
		t.Errorf("admin subject %v, want CN=%s O=%s", admin.Subject, AdminUser, AdminGroup)
	}
	for _, f := range []string{cp.ServiceAccountKeyFile, cp.AdminKeyFile} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			t.Fatalf("%s: no PEM", f)
		}
		if _, err := x509.ParsePKCS8PrivateKey(blk.Bytes); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	if cp.ServiceAccountIssuer != DefaultIssuer {
		t.Errorf("issuer %q, want %q", cp.ServiceAccountIssuer, DefaultIssuer)
	}

	if err := cp.writeKubeconfigs(); err != nil {
		t.Fatal(err)
	}
	var kc kubeconfig
	b, err := os.ReadFile(cp.AdminKubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &kc); err != nil {
		t.Fatal(err)
	}
	if kc.Clusters[0].Cluster.Server != cp.URL || string(kc.Clusters[0].Cluster.CAData) != string(cp.CAPEM) ||
		len(kc.Users[0].User.CertData) == 0 || kc.CurrentContext != kc.Contexts[0].Name {
		t.Errorf("admin kubeconfig: %s", b)
	}
	// The *-data fields are base64 in the file, as kubeconfig wants.
	if !strings.Contains(string(b), `"certificate-authority-data": "LS0t`) {
		t.Errorf("certificate-authority-data is not base64 PEM:\n%s", b)
	}
}

func TestPKIWithSigningEndpoint(t *testing.T) {
	cp := &ControlPlane{Dir: t.TempDir()}
	opts := Options{ServiceAccountSigningEndpoint: "/run/signer.sock", ServiceAccountIssuer: "https://issuer.test"}
	if err := cp.writePKI(opts); err != nil {
		t.Fatal(err)
	}
	if cp.ServiceAccountKeyFile != "" || cp.ServiceAccountIssuer != "https://issuer.test" {
		t.Errorf("key file %q issuer %q; want none and the option's", cp.ServiceAccountKeyFile, cp.ServiceAccountIssuer)
	}
	args := strings.Join(cp.apiServerArgs(opts), " ")
	if !strings.Contains(args, "--service-account-signing-endpoint=/run/signer.sock") ||
		strings.Contains(args, "--service-account-key-file") || strings.Contains(args, "--service-account-signing-key-file") {
		t.Errorf("args: %s", args)
	}
}

func TestAPIServerArgs(t *testing.T) {
	cp := &ControlPlane{Dir: "/d", EtcdURL: "http://127.0.0.1:1", ServiceAccountIssuer: DefaultIssuer}
	for _, tc := range []struct {
		name string
		opts Options
		want []string
		not  []string
	}{
		{"default", Options{}, []string{"--authorization-mode=Node,RBAC"}, []string{"webhook", "encryption"}},
		{"webhooks", Options{TokenWebhookConfig: "/a", AuthorizationWebhookConfig: "/z", AuthorizationWebhookUnauthorizedTTL: 1e9}, []string{
			"--authorization-mode=Node,Webhook,RBAC",
			"--authentication-token-webhook-config-file=/a",
			"--authentication-token-webhook-cache-ttl=0s",
			"--authentication-token-webhook-version=v1",
			"--authorization-webhook-version=v1",
			"--authorization-webhook-config-file=/z",
			"--authorization-webhook-cache-authorized-ttl=0s",
			"--authorization-webhook-cache-unauthorized-ttl=1s",
		}, []string{"Node,RBAC"}},
		{"encryption", Options{EncryptionProviderConfig: "/e", EncryptionProviderConfigAutomaticReload: true, ExtraArgs: []string{"--v=4"}}, []string{
			"--encryption-provider-config=/e", "--encryption-provider-config-automatic-reload=true", "--v=4",
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := cp.apiServerArgs(tc.opts)
			for _, w := range tc.want {
				if !slices.Contains(args, w) {
					t.Errorf("missing %s in %q", w, args)
				}
			}
			joined := strings.Join(args, " ")
			for _, n := range tc.not {
				if strings.Contains(joined, n) {
					t.Errorf("unexpected %s in %q", n, args)
				}
			}
		})
	}
}

func TestKMSv2EncryptionConfig(t *testing.T) {
	b, err := os.ReadFile(KMSv2EncryptionConfig(t, "coffer", "/run/kms.sock"))
	if err != nil {
		t.Fatal(err)
	}
	var cfg struct {
		Kind      string `json:"kind"`
		Resources []struct {
			Resources []string         `json:"resources"`
			Providers []map[string]any `json:"providers"`
		} `json:"resources"`
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Kind != "EncryptionConfiguration" || len(cfg.Resources) != 1 || len(cfg.Resources[0].Providers) != 2 {
		t.Fatalf("config:\n%s", b)
	}
	kms, _ := cfg.Resources[0].Providers[0]["kms"].(map[string]any)
	if kms["apiVersion"] != "v2" || kms["endpoint"] != "unix:///run/kms.sock" || kms["name"] != "coffer" {
		t.Errorf("kms provider %v", kms)
	}
	if _, ok := cfg.Resources[0].Providers[1]["identity"]; !ok {
		t.Errorf("no identity fallback:\n%s", b)
	}
}
