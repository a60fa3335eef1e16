package hsm

import (
	"context"
	"crypto/rand"
	"errors"
	"strings"
	"testing"
)

// TestEnvelopeScheme: an envelope names its scheme; one from before
// schemes were named (no scheme) is aes-256-gcm; an envelope that claims
// another scheme than its KEK's does not open, before any decryption.
func TestEnvelopeScheme(t *testing.T) {
	h := openTest(t, tokenCfg(t, "coffer-scheme"))
	ctx := context.Background()
	aad := []byte("p/s/1")
	s, err := h.Seal(ctx, []byte("payload"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if s.Scheme != "aes-256-gcm" {
		t.Fatalf("Scheme = %q, want aes-256-gcm", s.Scheme)
	}
	legacy := *s
	legacy.Scheme = ""
	if pt, err := h.Unseal(ctx, &legacy, aad); err != nil || string(pt) != "payload" {
		t.Fatalf("Unseal of an envelope without a scheme = %q, %v", pt, err)
	}

	claim := legacy
	claim.Scheme, claim.WrapNonce, claim.WrappedDEK = string(KEKRSAOAEP), nil, make([]byte, 384)
	if _, err := rand.Read(claim.WrappedDEK); err != nil {
		t.Fatal(err)
	}
	if _, err := h.Unseal(ctx, &claim, aad); !errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), "envelope says rsa-3072-oaep-sha256 but KEK coffer-kek-1 is aes-256-gcm") {
		t.Fatalf("Unseal of an envelope claiming RSA-OAEP under an AES KEK: %v", err)
	}
	if err := h.Check(ctx); err != nil {
		t.Fatalf("Check: %v", err)
	}

	if _, err := h.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	moved, err := h.Rewrap(ctx, &legacy, aad)
	if err != nil || moved.KEK != "coffer-kek-2" || moved.Scheme != "aes-256-gcm" {
		t.Fatalf("Rewrap of an envelope without a scheme = %+v, %v", moved, err)
	}
	same, err := h.Rewrap(ctx, moved, aad)
	if err != nil || same.Scheme != moved.Scheme || string(same.WrappedDEK) != string(moved.WrappedDEK) {
		t.Fatalf("Rewrap under the current KEK changed the envelope: %+v, %v", same, err)
	}
	keks, err := h.KEKs(ctx)
	if err != nil || len(keks) != 2 || keks[0].Scheme != "aes-256-gcm" || keks[1].Scheme != "aes-256-gcm" {
		t.Fatalf("KEKs = %+v, %v", keks, err)
	}
}

// TestSameFamilyLabelsRefused: the KEK and the signing key may both be
// RSA key pairs, so their labels must not be versions of one name.
func TestSameFamilyLabelsRefused(t *testing.T) {
	cfg := Config{ModulePath: DefaultModulePath, TokenLabel: "t", PIN: "1234", KEKLabel: "coffer-1", SigningKeyLabel: "coffer-2", MaxSessions: 2}
	if err := validateConfig(cfg); err == nil || !strings.Contains(err.Error(), "versions of the same name") {
		t.Fatalf("validateConfig = %v", err)
	}
	cfg.SigningKeyLabel = "coffer-sig-1"
	if err := validateConfig(cfg); err != nil {
		t.Fatal(err)
	}
}

// TestK8sLabelsReserved: the KEK and the signing key may not take the
// label bases of the Kubernetes keys (coffer-k8s-sa, coffer-k8s-tls), nor
// any version of them.
func TestK8sLabelsReserved(t *testing.T) {
	for _, l := range []string{"coffer-k8s-sa", "coffer-k8s-sa-1", "coffer-k8s-sa-7", "coffer-k8s-tls", "coffer-k8s-tls-1", "coffer-k8s-tls-2"} {
		for _, kek := range []bool{true, false} {
			cfg := Config{ModulePath: DefaultModulePath, TokenLabel: "t", PIN: "1234", KEKLabel: "coffer-kek-1", SigningKeyLabel: "coffer-sig-1", MaxSessions: 2}
			if kek {
				cfg.KEKLabel = l
			} else {
				cfg.SigningKeyLabel = l
			}
			if err := validateConfig(cfg); err == nil || !strings.Contains(err.Error(), "HSM key label "+l+" is reserved") {
				t.Errorf("KEK %q, signing key %q: %v", cfg.KEKLabel, cfg.SigningKeyLabel, err)
			}
		}
	}
	// Neighbours are not reserved.
	for _, l := range []string{"coffer-k8s-sa2-1", "coffer-k8s-1", "coffer-k8s-sax", "my-coffer-k8s-tls-1"} {
		cfg := Config{ModulePath: DefaultModulePath, TokenLabel: "t", PIN: "1234", KEKLabel: l, SigningKeyLabel: "coffer-sig-1", MaxSessions: 2}
		if err := validateConfig(cfg); err != nil {
			t.Errorf("KEK %q: %v", l, err)
		}
	}
}
