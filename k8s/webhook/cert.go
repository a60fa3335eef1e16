package webhook

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
)

const (
	// CertValidity is how long a serving certificate is valid.
	CertValidity = 365 * 24 * time.Hour
	// CertRenewBefore: a certificate that ends within this is re-issued
	// at start (a new CA for the webhook kubeconfigs).
	CertRenewBefore = 30 * 24 * time.Hour
)

// defaultNames are in every serving certificate.
var defaultNames = []string{"127.0.0.1", "::1", "localhost"}

// CertOptions says which serving certificate to load or issue.
type CertOptions struct {
	// Path keeps the certificate (PEM, public): the same one is used
	// again after a restart, so the CA in the webhook kubeconfigs stays.
	Path string
	// Key is the serving key (in the HSM); the certificate is self-issued,
	// signed by it: it is its own CA.
	Key crypto.Signer
	// Names are extra subject alternative names: IP addresses or DNS names.
	Names []string
	Now   func() time.Time // nil: time.Now
}

// ServingCert is a loaded or issued certificate.
type ServingCert struct {
	Cert   *x509.Certificate
	PEM    []byte
	Issued bool   // made now (none, or the one kept did not fit)
	Why    string // why it was issued
}

// SANs returns the subject alternative names a certificate with extra
// names gets: 127.0.0.1, ::1, localhost and names, each once, IPs in
// canonical form. A name that is neither an IP nor a DNS name is an error.
func SANs(names []string) (ips []net.IP, dns []string, err error) {
	seen := map[string]bool{}
	for _, n := range append(slices.Clone(defaultNames), names...) {
		n = strings.TrimSpace(n)
		if ip := net.ParseIP(n); ip != nil {
			if !seen["ip:"+ip.String()] {
				seen["ip:"+ip.String()] = true
				ips = append(ips, ip)
			}
			continue
		}
		n = strings.ToLower(strings.TrimSuffix(n, "."))
		if !validDNSName(n) {
			return nil, nil, fmt.Errorf("--k8s-san %q is neither an IP address nor a DNS name", n)
		}
		if !seen["dns:"+n] {
			seen["dns:"+n] = true
			dns = append(dns, n)
		}
	}
	return ips, dns, nil
}

func validDNSName(n string) bool {
	if n == "" || len(n) > 253 {
		return false
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// LoadOrIssue returns the serving certificate kept at o.Path when it is
// for o.Key, has exactly the wanted names and is valid for longer than
// CertRenewBefore; otherwise it issues a new one, signed in the HSM, and
// keeps it at o.Path.
func LoadOrIssue(o CertOptions) (ServingCert, error) {
	now := time.Now
	if o.Now != nil {
		now = o.Now
	}
	ips, dns, err := SANs(o.Names)
	if err != nil {
		return ServingCert{}, err
	}
	why := "no certificate yet"
	data, err := os.ReadFile(o.Path)
	switch {
	case err == nil:
		cert, reason := fits(data, o.Key, ips, dns, now())
		if reason == "" {
			return ServingCert{Cert: cert, PEM: data}, nil
		}
		why = reason
	case !errors.Is(err, fs.ErrNotExist):
		return ServingCert{}, fmt.Errorf("read the webhook certificate: %w", err)
	}
	cert, pemBytes, err := issue(o.Key, ips, dns, now())
	if err != nil {
		return ServingCert{}, err
	}
	if err := atomicfile.Write(o.Path, pemBytes, 0o644); err != nil {
		return ServingCert{}, fmt.Errorf("keep the webhook certificate: %w", err)
	}
	return ServingCert{Cert: cert, PEM: pemBytes, Issued: true, Why: why}, nil
}

// fits says why a kept certificate cannot be used again ("" if it can).
func fits(data []byte, key crypto.Signer, ips []net.IP, dns []string, now time.Time) (*x509.Certificate, string) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, "the kept certificate is not one PEM certificate"
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, "the kept certificate does not parse"
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	switch {
	case !ok || !pub.Equal(cert.PublicKey):
		return nil, "the kept certificate is for another key"
	case cert.CheckSignatureFrom(cert) != nil:
		return nil, "the kept certificate is not self-signed by its key"
	case !sameIPs(cert.IPAddresses, ips) || !sameStrings(cert.DNSNames, dns):
		return nil, "the names changed (--k8s-san)"
	case now.Before(cert.NotBefore):
		return nil, "the kept certificate is not valid yet"
	case !now.Add(CertRenewBefore).Before(cert.NotAfter):
		return nil, "the kept certificate ends within " + CertRenewBefore.String()
	}
	return cert, ""
}

func sameIPs(a, b []net.IP) bool {
	s := func(ips []net.IP) []string {
		out := make([]string, len(ips))
		for i, ip := range ips {
			out[i] = ip.String()
		}
		return out
	}
	return sameStrings(s(a), s(b))
}

func sameStrings(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

// issue makes a self-signed serving certificate for key: its own CA (the
// kubeconfig's certificate-authority-data), server auth, valid for
// CertValidity from a little before now.
func issue(key crypto.Signer, ips []net.IP, dns []string, now time.Time) (*x509.Certificate, []byte, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, nil, fmt.Errorf("webhook certificate: %w", err)
	}
	ski := sha256.Sum256(pubDER)
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "coffer Kubernetes webhooks", Organization: []string{"coffer"}},
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              now.Add(CertValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski[:20],
		IPAddresses:           ips,
		DNSNames:              dns,
	}
	if _, ok := key.Public().(*rsa.PublicKey); ok {
		tmpl.SignatureAlgorithm = x509.SHA256WithRSAPSS
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign the webhook certificate in the HSM: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("webhook certificate: %w", err)
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}
