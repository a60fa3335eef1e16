package tpmtest_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/eclipse-keypont/crypto11"

	"github.com/coffer-hsm/coffer/internal/tpmtest"
)

// TestTokenThroughCrypto11 proves the software TPM token does what coffer
// needs from a TPM: RSA-OAEP (SHA-256) unwrapping with a non-extractable
// 3072-bit key, and ECDSA P-256 signing.
func TestTokenThroughCrypto11(t *testing.T) {
	tok := tpmtest.Start(t, "coffer-tpm")
	tok.Setenv(t)
	ctx, err := crypto11.Configure(&crypto11.Config{Path: tok.Module, TokenLabel: tok.Label, Pin: tok.PIN})
	if err != nil {
		t.Fatalf("configure: %v", err)
	}
	defer ctx.Close()

	kek, err := ctx.GenerateRSAKeyPairWithLabel([]byte("kek"), []byte("kek"), 3072)
	if err != nil {
		t.Fatalf("generate RSA: %v", err)
	}
	dek := make([]byte, 32)
	if _, err := rand.Read(dek); err != nil {
		t.Fatal(err)
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, kek.Public().(*rsa.PublicKey), dek, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kek.(crypto.Decrypter).Decrypt(rand.Reader, wrapped, &rsa.OAEPOptions{Hash: crypto.SHA256})
	if err != nil {
		t.Fatalf("OAEP decrypt in the TPM: %v", err)
	}
	if string(got) != string(dek) {
		t.Fatal("OAEP round trip returned different bytes")
	}

	sig, err := ctx.GenerateECDSAKeyPairWithLabel([]byte("sig"), []byte("sig"), elliptic.P256())
	if err != nil {
		t.Fatalf("generate EC: %v", err)
	}
	digest := sha256.Sum256([]byte("hello"))
	der, err := sig.Sign(rand.Reader, digest[:], crypto.SHA256)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if !ecdsa.VerifyASN1(sig.Public().(*ecdsa.PublicKey), digest[:], der) {
		t.Fatal("the TPM's ECDSA signature does not verify")
	}
}
