package hsm

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/eclipse-keypont/crypto11"
)

func k8sLabels(ks []K8sKey) string {
	var b strings.Builder
	for _, k := range ks {
		fmt.Fprintf(&b, "%s/%s", k.Label, k.Alg)
		if k.Current {
			b.WriteString("*")
		}
		b.WriteString(" ")
	}
	return b.String()
}

// checkNonExtractable asserts that the private half of label is
// sensitive, not extractable, private and on the token.
func checkNonExtractable(t *testing.T, h *HSM, label string) {
	t.Helper()
	c11 := h.ctx.(*crypto11.Context)
	pairs, err := c11.FindKeyPairs([]byte(label), nil)
	if err != nil || len(pairs) != 1 {
		t.Fatalf("%s: %d key pairs (err %v), want 1", label, len(pairs), err)
	}
	a, err := c11.GetAttributes(pairs[0], []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable,
		crypto11.CkaPrivate, crypto11.CkaToken, crypto11.CkaSign, crypto11.CkaNeverExtractable})
	if err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		typ  crypto11.AttributeType
		name string
		want bool
	}{
		{crypto11.CkaSensitive, "CKA_SENSITIVE", true},
		{crypto11.CkaExtractable, "CKA_EXTRACTABLE", false},
		{crypto11.CkaNeverExtractable, "CKA_NEVER_EXTRACTABLE", true},
		{crypto11.CkaPrivate, "CKA_PRIVATE", true},
		{crypto11.CkaToken, "CKA_TOKEN", true},
		{crypto11.CkaSign, "CKA_SIGN", true},
	} {
		v := a[w.typ]
		if v == nil || len(v.Value) == 0 || (v.Value[0] != 0) != w.want {
			t.Errorf("%s: %s = %v, want %v", label, w.name, v, w.want)
		}
	}
}

func TestK8sKeys(t *testing.T) {
	cfg := tokenCfg(t, "coffer-k8s-sa")
	ctx := context.Background()
	h := openTest(t, cfg)

	if ks, err := h.K8sKeys(ctx); err != nil || len(ks) != 0 {
		t.Fatalf("K8sKeys on a fresh token = %s, %v; want none", k8sLabels(ks), err)
	}
	k1, err := h.CreateK8sKey(ctx)
	if err != nil {
		t.Fatalf("CreateK8sKey: %v", err)
	}
	if k1.Label != "coffer-k8s-sa-1" || k1.Version != 1 || !k1.Current || k1.Alg != AlgES256 {
		t.Fatalf("CreateK8sKey = %+v", k1)
	}
	checkNonExtractable(t, h, k1.Label)
	// Not one of coffer's own signing keys.
	if sk, err := h.SigningKeys(ctx); err != nil || labels(sk) != "coffer-sig-1/1* " {
		t.Fatalf("SigningKeys = %s, %v", labels(sk), err)
	}
	k2, err := h.CreateK8sKey(ctx)
	if err != nil || k2.Label != "coffer-k8s-sa-2" || k2.Version != 2 {
		t.Fatalf("second CreateK8sKey = %+v, %v", k2, err)
	}
	if ks, err := h.K8sKeys(ctx); err != nil || k8sLabels(ks) != "coffer-k8s-sa-1/ES256 coffer-k8s-sa-2/ES256* " {
		t.Fatalf("K8sKeys = %s, %v", k8sLabels(ks), err)
	}
	d := sha256.Sum256([]byte("header.payload"))
	for _, k := range []K8sKey{k1, k2} {
		sig, err := h.K8sSign(ctx, k.Label, d[:])
		if err != nil {
			t.Fatalf("K8sSign(%s): %v", k.Label, err)
		}
		if len(sig) != 64 || !VerifyK8s(k.Public, d[:], sig) {
			t.Fatalf("K8sSign(%s): signature does not verify", k.Label)
		}
	}
	if _, err := h.K8sSign(ctx, "coffer-k8s-sa-9", d[:]); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("K8sSign(unknown) = %v, want ErrKeyNotFound", err)
	}
	if _, err := h.K8sSign(ctx, k2.Label, d[:5]); err == nil {
		t.Fatal("K8sSign with a short digest succeeded")
	}
	for _, tt := range []struct {
		label string
		want  error
	}{
		{"coffer-k8s-sa-2", ErrKeyCurrent},
		{"coffer-k8s-sa-3", ErrKeyNotFound},
		{"coffer-sig-1", ErrKeyNotFound},
		{"coffer-kek-1", ErrKeyNotFound},
	} {
		if err := h.DestroyK8sKey(ctx, tt.label); !errors.Is(err, tt.want) {
			t.Errorf("DestroyK8sKey(%q) = %v, want %v", tt.label, err, tt.want)
		}
	}
	if err := h.DestroyK8sKey(ctx, k1.Label); err != nil {
		t.Fatalf("DestroyK8sKey(%s): %v", k1.Label, err)
	}
	if _, err := h.K8sSign(ctx, k1.Label, d[:]); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("K8sSign(destroyed) = %v, want ErrKeyNotFound", err)
	}
	// Reopened, the token still has version 2, and the next is 3.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openTest(t, cfg)
	ks, err := h.K8sKeys(ctx)
	if err != nil || k8sLabels(ks) != "coffer-k8s-sa-2/ES256* " || !ks[0].Public.Equal(k2.Public) {
		t.Fatalf("K8sKeys after reopen = %s, %v", k8sLabels(ks), err)
	}
	if k3, err := h.CreateK8sKey(ctx); err != nil || k3.Label != "coffer-k8s-sa-3" {
		t.Fatalf("CreateK8sKey after reopen = %+v, %v", k3, err)
	}
}

// TestK8sKeyRS256 makes the RSA-3072 key a token without P-256 ECDSA
// gets (a TPM), on SoftHSM.
func TestK8sKeyRS256(t *testing.T) {
	cfg := tokenCfg(t, "coffer-k8s-rsa")
	ctx := context.Background()
	h := openTest(t, cfg)
	if err := h.begin(ctx); err != nil {
		t.Fatal(err)
	}
	h.rotMu.Lock()
	k, err := h.generateK8sKey("coffer-k8s-sa-1", 1, AlgRS256)
	h.rotMu.Unlock()
	h.mu.RUnlock()
	if err != nil || k.Alg != AlgRS256 {
		t.Fatalf("generateK8sKey(RS256) = %+v, %v", k, err)
	}
	checkNonExtractable(t, h, k.Label)
	d := sha256.Sum256([]byte("header.payload"))
	sig, err := h.K8sSign(ctx, k.Label, d[:])
	if err != nil || len(sig) != 384 || !VerifyK8s(k.Public, d[:], sig) {
		t.Fatalf("K8sSign(RS256): %d bytes, %v", len(sig), err)
	}
	if ks, err := h.K8sKeys(ctx); err != nil || k8sLabels(ks) != "coffer-k8s-sa-1/RS256* " {
		t.Fatalf("K8sKeys = %s, %v", k8sLabels(ks), err)
	}
}
