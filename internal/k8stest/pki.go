package k8stest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// AdminUser and AdminGroup are who the admin client certificate names;
// system:masters passes every authorizer.
const (
	AdminUser  = "coffer-admin"
	AdminGroup = "system:masters"
)

// writePKI makes the CA, kube-apiserver's serving certificate, the admin
// client certificate and, unless an external signer signs them, the
// service account key, all under cp.Dir.
func (cp *ControlPlane) writePKI(opts Options) error {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate CA key: %w", err)
	}
	caTmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: "coffer k8stest CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(48 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, caCert, err := sign(caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return fmt.Errorf("self-sign CA: %w", err)
	}
	cp.CAPEM = pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER})
	cp.CAFile = filepath.Join(cp.Dir, "ca.crt")
	if err := os.WriteFile(cp.CAFile, cp.CAPEM, 0o644); err != nil {
		return fmt.Errorf("write CA: %w", err)
	}

	serving := &x509.Certificate{
		Subject:     pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(48 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	if err := cp.writeLeaf(serving, caCert, caKey, "serving"); err != nil {
		return err
	}
	admin := &x509.Certificate{
		Subject:     pkix.Name{CommonName: AdminUser, Organization: []string{AdminGroup}},
		NotBefore:   now.Add(-time.Hour),
		NotAfter:    now.Add(48 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if err := cp.writeLeaf(admin, caCert, caKey, "admin"); err != nil {
		return err
	}
	cp.AdminCertFile = filepath.Join(cp.Dir, "admin.crt")
	cp.AdminKeyFile = filepath.Join(cp.Dir, "admin.key")

	cp.ServiceAccountIssuer = opts.ServiceAccountIssuer
	if cp.ServiceAccountIssuer == "" {
		cp.ServiceAccountIssuer = DefaultIssuer
	}
	if opts.ServiceAccountSigningEndpoint != "" {
		return nil
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate service account key: %w", err)
	}
	cp.ServiceAccountKeyFile = filepath.Join(cp.Dir, "sa.key")
	cp.ServiceAccountPublicKeyFile = filepath.Join(cp.Dir, "sa.pub")
	if err := writeKey(cp.ServiceAccountKeyFile, saKey); err != nil {
		return fmt.Errorf("service account key: %w", err)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(saKey.Public())
	if err != nil {
		return fmt.Errorf("marshal service account public key: %w", err)
	}
	if err := os.WriteFile(cp.ServiceAccountPublicKeyFile, pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o644); err != nil {
		return fmt.Errorf("write service account public key: %w", err)
	}
	return nil
}

// writeLeaf signs tmpl with the CA and writes name.crt and name.key.
func (cp *ControlPlane) writeLeaf(tmpl, ca *x509.Certificate, caKey crypto.Signer, name string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate %s key: %w", name, err)
	}
	der, _, err := sign(tmpl, ca, key.Public(), caKey)
	if err != nil {
		return fmt.Errorf("sign %s certificate: %w", name, err)
	}
	crt := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	if err := os.WriteFile(filepath.Join(cp.Dir, name+".crt"), crt, 0o644); err != nil {
		return fmt.Errorf("write %s certificate: %w", name, err)
	}
	if err := writeKey(filepath.Join(cp.Dir, name+".key"), key); err != nil {
		return fmt.Errorf("%s key: %w", name, err)
	}
	return nil
}

// sign issues tmpl (with a random serial) for pub, signed by parent's key.
func sign(tmpl, parent *x509.Certificate, pub crypto.PublicKey, parentKey crypto.Signer) ([]byte, *x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, fmt.Errorf("serial number: %w", err)
	}
	tmpl.SerialNumber = serial
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, pub, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return der, cert, nil
}

// writeKey writes key as a PKCS #8 PEM file readable by its owner only.
func writeKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("marshal: %w", err)
	}
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	return nil
}

func certPool(caPEM []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("no certificate in the CA PEM")
	}
	return pool, nil
}

// kubeconfig is the part of client-go's kubeconfig format written here.
// kubeconfig files may be JSON as well as YAML.
type kubeconfig struct {
	APIVersion     string         `json:"apiVersion"`
	Kind           string         `json:"kind"`
	Clusters       []namedCluster `json:"clusters"`
	Users          []namedUser    `json:"users"`
	Contexts       []namedContext `json:"contexts"`
	CurrentContext string         `json:"current-context"`
}

type namedCluster struct {
	Name    string `json:"name"`
	Cluster struct {
		Server string `json:"server"`
		CAData []byte `json:"certificate-authority-data,omitempty"`
	} `json:"cluster"`
}

type namedUser struct {
	Name string `json:"name"`
	User struct {
		CertData []byte `json:"client-certificate-data,omitempty"`
		KeyData  []byte `json:"client-key-data,omitempty"`
		Token    string `json:"token,omitempty"`
	} `json:"user"`
}

type namedContext struct {
	Name    string `json:"name"`
	Context struct {
		Cluster string `json:"cluster"`
		User    string `json:"user"`
	} `json:"context"`
}

// writeKubeconfig writes a one-cluster, one-user kubeconfig to path.
// encoding/json writes the []byte fields in base64, as the *-data fields
// want.
func writeKubeconfig(path, server string, caPEM, certPEM, keyPEM []byte, token string) error {
	var c namedCluster
	c.Name = "cluster"
	c.Cluster.Server = server
	c.Cluster.CAData = caPEM
	var u namedUser
	u.Name = "user"
	u.User.CertData, u.User.KeyData, u.User.Token = certPEM, keyPEM, token
	var x namedContext
	x.Name = "default"
	x.Context.Cluster, x.Context.User = c.Name, u.Name
	b, err := json.MarshalIndent(kubeconfig{
		APIVersion: "v1", Kind: "Config",
		Clusters: []namedCluster{c}, Users: []namedUser{u}, Contexts: []namedContext{x},
		CurrentContext: x.Name,
	}, "", "  ")
	if err != nil {
		return fmt.Errorf("encode kubeconfig %s: %w", path, err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write kubeconfig: %w", err)
	}
	return nil
}

// writeKubeconfigs writes the admin kubeconfig and the one without
// credentials that RunKubectl uses with --token, for cp.URL.
func (cp *ControlPlane) writeKubeconfigs() error {
	cert, err := os.ReadFile(cp.AdminCertFile)
	if err != nil {
		return fmt.Errorf("read admin certificate: %w", err)
	}
	key, err := os.ReadFile(cp.AdminKeyFile)
	if err != nil {
		return fmt.Errorf("read admin key: %w", err)
	}
	cp.AdminKubeconfig = filepath.Join(cp.Dir, "admin.kubeconfig")
	if err := writeKubeconfig(cp.AdminKubeconfig, cp.URL, cp.CAPEM, cert, key, ""); err != nil {
		return err
	}
	cp.tokenConfig = filepath.Join(cp.Dir, "token.kubeconfig")
	return writeKubeconfig(cp.tokenConfig, cp.URL, cp.CAPEM, nil, nil, "")
}

// Webhook is how kube-apiserver reaches a webhook (a TokenReview or
// SubjectAccessReview server): its URL, the CA its serving certificate
// chains to, and optionally what kube-apiserver presents to it.
type Webhook struct {
	URL   string // https://127.0.0.1:PORT/path
	CAPEM []byte
	// ClientCertPEM and ClientKeyPEM, when set, are the client
	// certificate kube-apiserver presents.
	ClientCertPEM, ClientKeyPEM []byte
	// Token, when set, is the bearer token kube-apiserver sends.
	Token string
}

// WebhookKubeconfig writes the kubeconfig-format file that
// --authentication-token-webhook-config-file and
// --authorization-webhook-config-file want (the cluster is the webhook,
// the user is kube-apiserver), in a temporary directory of t, and returns
// its path.
func WebhookKubeconfig(t testing.TB, w Webhook) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "webhook.kubeconfig")
	if err := writeKubeconfig(path, w.URL, w.CAPEM, w.ClientCertPEM, w.ClientKeyPEM, w.Token); err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	return path
}

// KMSv2EncryptionConfig writes an EncryptionConfiguration that encrypts
// Secrets with the KMS v2 plugin named name at the Unix socket path (and
// still reads unencrypted ones), in a temporary directory of t, and
// returns its path for Options.EncryptionProviderConfig.
func KMSv2EncryptionConfig(t testing.TB, name, socket string) string {
	t.Helper()
	type kms struct {
		APIVersion string `json:"apiVersion"`
		Name       string `json:"name"`
		Endpoint   string `json:"endpoint"`
		Timeout    string `json:"timeout"`
	}
	type provider struct {
		KMS      *kms      `json:"kms,omitempty"`
		Identity *struct{} `json:"identity,omitempty"`
	}
	cfg := map[string]any{
		"apiVersion": "apiserver.config.k8s.io/v1",
		"kind":       "EncryptionConfiguration",
		"resources": []map[string]any{{
			"resources": []string{"secrets"},
			"providers": []provider{
				{KMS: &kms{APIVersion: "v2", Name: name, Endpoint: "unix://" + socket, Timeout: "10s"}},
				{Identity: &struct{}{}},
			},
		}},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		t.Fatalf("k8stest: encode EncryptionConfiguration: %v", err)
	}
	path := filepath.Join(t.TempDir(), "encryption.json")
	if err := os.WriteFile(path, append(b, '\n'), 0o600); err != nil {
		t.Fatalf("k8stest: write EncryptionConfiguration: %v", err)
	}
	return path
}
