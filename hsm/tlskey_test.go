package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/tpmtest"
)

func TestTLSKey(t *testing.T) {
	cfg := tokenCfg(t, "coffer-tlskey")
	h := openTest(t, cfg)
	ctx := context.Background()
	key, err := h.TLSKey(ctx, DefaultTLSKeyLabel)
	if err != nil {
		t.Fatalf("TLSKey: %v", err)
	}
	pub, ok := key.Public().(*ecdsa.PublicKey)
	if !ok {
		t.Fatalf("public key is %T, want *ecdsa.PublicKey", key.Public())
	}
	// Signatures made in the token verify.
	d := sha256.Sum256([]byte("hello"))
	sig, err := key.Sign(rand.Reader, d[:], nil)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if !ecdsa.VerifyASN1(pub, d[:], sig) {
		t.Fatal("signature does not verify")
	}
	// Never extractable.
	sensitive, extractable, err := h.TLSKeyAttributes(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if !sensitive || extractable {
		t.Fatalf("CKA_SENSITIVE=%v CKA_EXTRACTABLE=%v, want true false", sensitive, extractable)
	}
	// Found again, the same key, by a second call.
	again, err := h.TLSKey(ctx, DefaultTLSKeyLabel)
	if err != nil {
		t.Fatal(err)
	}
	if !pub.Equal(again.Public()) {
		t.Fatal("a second TLSKey made another key")
	}
	// Not the signing key, and not listed as one.
	if pub.Equal(h.SigningPublicKey()) {
		t.Fatal("the TLS key is the token signing key")
	}
	keys, err := h.SigningKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if k.Label == DefaultTLSKeyLabel {
			t.Fatal("the TLS key is listed as a signing key version")
		}
	}
	// A TLS handshake signed in the token.
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "t"},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, pub, key)
	if err != nil {
		t.Fatalf("self-sign: %v", err)
	}
	cert, _ := x509.ParseCertificate(der)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err == nil {
			_ = c.(*tls.Conn).Handshake()
			c.Close()
		}
	}()
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatalf("TLS handshake: %v", err)
	}
	c.Close()
}

func TestTLSKeyRefusesReservedLabels(t *testing.T) {
	h := openTest(t, tokenCfg(t, "coffer-tlskey"))
	for _, l := range []string{DefaultKEKLabel, "coffer-kek-2", DefaultSigningKeyLabel, ImportKeyLabel, "", "a b", K8sKeyBase + "-1", K8sKeyBase} {
		if _, err := h.TLSKey(context.Background(), l); err == nil {
			t.Errorf("TLSKey(%q) succeeded", l)
		}
	}
}

// TestTPMTLSKey makes and uses the TLS key on a real tpm2-pkcs11 token
// (over a software TPM).
func TestTPMTLSKey(t *testing.T) {
	tok := tpmtest.Start(t, "coffer-tls")
	tok.Setenv(t)
	ctx := context.Background()
	h, err := Open(ctx, Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() { _ = h.Close() }()
	key, err := h.TLSKey(ctx, DefaultTLSKeyLabel)
	if err != nil {
		t.Fatalf("TLSKey: %v", err)
	}
	d := sha256.Sum256([]byte("tpm"))
	sig, err := key.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if pub, ok := key.Public().(*ecdsa.PublicKey); !ok || !ecdsa.VerifyASN1(pub, d[:], sig) {
		t.Fatalf("the TPM's signature does not verify (%T)", key.Public())
	}
	if s, x, err := h.TLSKeyAttributes(ctx, key); err != nil || !s || x {
		t.Fatalf("CKA_SENSITIVE=%v CKA_EXTRACTABLE=%v (%v)", s, x, err)
	}
}
