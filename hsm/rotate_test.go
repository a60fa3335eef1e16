package hsm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-keypont/crypto11"
)

func TestParseKeyLabel(t *testing.T) {
	tests := []struct {
		label string
		base  string
		v     int
		ok    bool
	}{
		{"coffer-kek-1", "coffer-kek", 1, true},
		{"coffer-kek-12", "coffer-kek", 12, true},
		{"a-2", "a", 2, true},
		{"coffer-kek", "", 0, false},
		{"coffer-kek-0", "", 0, false},
		{"coffer-kek-01", "", 0, false},
		{"coffer-kek--1", "coffer-kek-", 1, true},
		{"coffer-kek-1x", "", 0, false},
		{"-1", "", 0, false},
		{"kek-", "", 0, false},
		{"kek-1234567890", "", 0, false},
	}
	for _, tt := range tests {
		base, v, ok := ParseKeyLabel(tt.label)
		if ok != tt.ok || (ok && (base != tt.base || v != tt.v)) {
			t.Errorf("ParseKeyLabel(%q) = %q, %d, %v; want %q, %d, %v", tt.label, base, v, ok, tt.base, tt.v, tt.ok)
		}
	}
}

func labels(vs []KeyVersion) string {
	var b bytes.Buffer
	for _, v := range vs {
		fmt.Fprintf(&b, "%s/%d", v.Label, v.Version)
		if v.Current {
			b.WriteString("*")
		}
		b.WriteString(" ")
	}
	return b.String()
}

func TestRotateKEK(t *testing.T) {
	cfg := tokenCfg(t, "coffer-rot-kek")
	ctx := context.Background()
	h, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	aad := []byte("p/s/1")
	old, err := h.Seal(ctx, []byte("sealed under kek-1"), aad)
	if err != nil {
		t.Fatal(err)
	}

	label, err := h.RotateKEK(ctx)
	if err != nil {
		t.Fatalf("RotateKEK: %v", err)
	}
	if label != "coffer-kek-2" || h.CurrentKEK() != "coffer-kek-2" || h.Info().KeyLabels[0] != "coffer-kek-2" {
		t.Fatalf("RotateKEK = %q, current %q, info %v", label, h.CurrentKEK(), h.Info().KeyLabels)
	}
	keks, err := h.KEKs(ctx)
	if err != nil || labels(keks) != "coffer-kek-1/1 coffer-kek-2/2* " {
		t.Fatalf("KEKs = %s, %v", labels(keks), err)
	}
	fresh, err := h.Seal(ctx, []byte("sealed under kek-2"), aad)
	if err != nil || fresh.KEK != "coffer-kek-2" {
		t.Fatalf("Seal after rotation: KEK %q, %v", fresh.KEK, err)
	}
	if got, err := h.Unseal(ctx, old, aad); err != nil || string(got) != "sealed under kek-1" {
		t.Fatalf("Unseal of a kek-1 envelope after rotation = %q, %v", got, err)
	}

	// Rewrap: only the DEK wrapping changes.
	re, err := h.Rewrap(ctx, old, aad)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if re.KEK != "coffer-kek-2" || !bytes.Equal(re.Nonce, old.Nonce) || !bytes.Equal(re.Ciphertext, old.Ciphertext) ||
		bytes.Equal(re.WrapNonce, old.WrapNonce) || bytes.Equal(re.WrappedDEK, old.WrappedDEK) || len(re.WrappedDEK) != 48 {
		t.Fatalf("Rewrap changed the wrong fields: kek %q", re.KEK)
	}
	if old.KEK != "coffer-kek-1" {
		t.Fatal("Rewrap modified its input")
	}
	if got, err := h.Unseal(ctx, re, aad); err != nil || string(got) != "sealed under kek-1" {
		t.Fatalf("Unseal of the rewrapped envelope = %q, %v", got, err)
	}
	if _, err := h.Rewrap(ctx, old, []byte("p/s/2")); !errors.Is(err, ErrOpen) {
		t.Fatalf("Rewrap with the wrong aad: %v, want ErrOpen", err)
	}
	if same, err := h.Rewrap(ctx, fresh, aad); err != nil || same.KEK != fresh.KEK || !bytes.Equal(same.WrappedDEK, fresh.WrappedDEK) {
		t.Fatalf("Rewrap of a current envelope: %v", err)
	}
	if _, err := h.Rewrap(ctx, &Sealed{KEK: "coffer-kek-1"}, aad); !errors.Is(err, ErrOpen) {
		t.Fatalf("Rewrap of a malformed envelope: %v, want ErrOpen", err)
	}

	// Destroy: never the current one, never an unknown label.
	for _, tt := range []struct {
		label string
		want  error
	}{
		{"coffer-kek-2", ErrKeyCurrent},
		{"coffer-kek-9", ErrKeyNotFound},
		{"coffer-sig-1", ErrKeyNotFound},
		{"other", ErrKeyNotFound},
		{"", ErrKeyNotFound},
	} {
		if err := h.DestroyKEK(ctx, tt.label); !errors.Is(err, tt.want) {
			t.Errorf("DestroyKEK(%q) = %v, want %v", tt.label, err, tt.want)
		}
	}
	if err := h.DestroyKEK(ctx, "coffer-kek-1"); err != nil {
		t.Fatalf("DestroyKEK(coffer-kek-1): %v", err)
	}
	if _, err := h.Unseal(ctx, old, aad); !errors.Is(err, ErrOpen) {
		t.Fatalf("Unseal under a destroyed KEK: %v, want ErrOpen", err)
	}
	if err := h.DestroyKEK(ctx, "coffer-kek-1"); !errors.Is(err, ErrKeyNotFound) {
		t.Fatalf("second DestroyKEK: %v, want ErrKeyNotFound", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart picks the highest version and does not recreate kek-1.
	h = openTest(t, cfg)
	if h.CurrentKEK() != "coffer-kek-2" {
		t.Fatalf("after reopen current KEK %q, want coffer-kek-2", h.CurrentKEK())
	}
	if keks, err := h.KEKs(ctx); err != nil || labels(keks) != "coffer-kek-2/2* " {
		t.Fatalf("KEKs after reopen = %s, %v", labels(keks), err)
	}
	if got, err := h.Unseal(ctx, re, aad); err != nil || string(got) != "sealed under kek-1" {
		t.Fatalf("Unseal after reopen = %q, %v", got, err)
	}
	c11 := h.ctx.(*crypto11.Context)
	k, err := c11.FindKey([]byte("coffer-kek-2"), []byte("coffer-kek-2"))
	if err != nil {
		t.Fatalf("kek-2 by CKA_ID and label: %v", err)
	}
	attrs, err := c11.GetAttributes(k, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaToken, crypto11.CkaValueLen})
	if err != nil {
		t.Fatal(err)
	}
	if attrs[crypto11.CkaSensitive].Value[0] != 1 || attrs[crypto11.CkaExtractable].Value[0] != 0 ||
		attrs[crypto11.CkaToken].Value[0] != 1 || bytesToUint(attrs[crypto11.CkaValueLen].Value) != 32 {
		t.Fatalf("kek-2 attributes: %v", attrs)
	}

	// The next rotation counts on from the highest version.
	if l, err := h.RotateKEK(ctx); err != nil || l != "coffer-kek-3" {
		t.Fatalf("second RotateKEK = %q, %v", l, err)
	}
}

func TestRotateKEKUnversionedLabel(t *testing.T) {
	cfg := tokenCfg(t, "coffer-rot-plain")
	cfg.KEKLabel = "plain-kek"
	h := openTest(t, cfg)
	if h.CurrentKEK() != "plain-kek" {
		t.Fatalf("current %q", h.CurrentKEK())
	}
	_, err := h.RotateKEK(context.Background())
	want := "HSM key label plain-kek has no -N version suffix; rotation needs versioned labels such as coffer-kek-1"
	if err == nil || err.Error() != want {
		t.Fatalf("RotateKEK = %v, want %q", err, want)
	}
	if keks, err := h.KEKs(context.Background()); err != nil || labels(keks) != "plain-kek/1* " {
		t.Fatalf("KEKs = %s, %v", labels(keks), err)
	}
}

func verifies(pub PublicKey, d, sig []byte) bool { return Verify(pub, d, sig) }

func TestRotateSigningKey(t *testing.T) {
	cfg := tokenCfg(t, "coffer-rot-sig")
	ctx := context.Background()
	h, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	pub1 := h.SigningPublicKey()
	kv, err := h.RotateSigningKey(ctx)
	if err != nil {
		t.Fatalf("RotateSigningKey: %v", err)
	}
	if kv.Label != "coffer-sig-2" || kv.Version != 2 || !kv.Current || kv.Public == nil || kv.Public.Equal(pub1) {
		t.Fatalf("RotateSigningKey = %+v", kv)
	}
	if !h.SigningPublicKey().Equal(kv.Public) || h.Info().KeyLabels[1] != "coffer-sig-2" {
		t.Fatalf("current signing key not switched: %v", h.Info().KeyLabels)
	}
	d := sha256.Sum256([]byte("header.payload"))
	sig, err := h.Sign(ctx, d[:])
	if err != nil {
		t.Fatal(err)
	}
	if !verifies(kv.Public, d[:], sig) || verifies(pub1, d[:], sig) {
		t.Fatal("Sign does not use the new key")
	}
	keys, err := h.SigningKeys(ctx)
	if err != nil || labels(keys) != "coffer-sig-1/1 coffer-sig-2/2* " || !keys[0].Public.Equal(pub1) || !keys[1].Public.Equal(kv.Public) {
		t.Fatalf("SigningKeys = %s, %v", labels(keys), err)
	}
	for _, tt := range []struct {
		label string
		want  error
	}{
		{"coffer-sig-2", ErrKeyCurrent},
		{"coffer-sig-3", ErrKeyNotFound},
		{"coffer-kek-1", ErrKeyNotFound},
	} {
		if err := h.DestroySigningKey(ctx, tt.label); !errors.Is(err, tt.want) {
			t.Errorf("DestroySigningKey(%q) = %v, want %v", tt.label, err, tt.want)
		}
	}
	if err := h.DestroySigningKey(ctx, "coffer-sig-1"); err != nil {
		t.Fatalf("DestroySigningKey(coffer-sig-1): %v", err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openTest(t, cfg)
	if !h.SigningPublicKey().Equal(kv.Public) {
		t.Fatal("after reopen the signing key is not coffer-sig-2")
	}
	if keys, err := h.SigningKeys(ctx); err != nil || labels(keys) != "coffer-sig-2/2* " {
		t.Fatalf("SigningKeys after reopen = %s, %v", labels(keys), err)
	}
	// Both halves are gone.
	c11 := h.ctx.(*crypto11.Context)
	if pairs, err := c11.FindKeyPairs([]byte("coffer-sig-1"), nil); err != nil || len(pairs) != 0 {
		t.Fatalf("coffer-sig-1 pairs after destroy: %d, %v", len(pairs), err)
	}
}

// TestRotateUnderLoad seals, unseals and signs from several goroutines
// while both keys rotate: every envelope opens and every signature
// verifies with one of the keys (run with -race).
func TestRotateUnderLoad(t *testing.T) {
	h := openTest(t, tokenCfg(t, "coffer-rot-load"))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 25 {
				aad := fmt.Appendf(nil, "g%d/%d", g, i)
				s, err := h.Seal(ctx, aad, aad)
				if err != nil {
					errs <- err
					return
				}
				got, err := h.Unseal(ctx, s, aad)
				if err != nil || !bytes.Equal(got, aad) {
					errs <- fmt.Errorf("unseal %s: %v", aad, err)
					return
				}
				d := sha256.Sum256(aad)
				if _, err := h.Sign(ctx, d[:]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	for range 2 {
		if _, err := h.RotateKEK(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := h.RotateSigningKey(ctx); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if h.CurrentKEK() != "coffer-kek-3" {
		t.Fatalf("current KEK %q after two rotations", h.CurrentKEK())
	}
}

// TestSoftHSMTokenLossKeepsRotatedKeys: after a rotation, a token lost and
// back again is reconnected with the rotated keys current, not the first
// ones.
func TestSoftHSMTokenLossKeepsRotatedKeys(t *testing.T) {
	label := fmt.Sprintf("coffer-lost-rot-%03d", lostRuns.Add(1))
	cfg := tokenCfg(t, label)
	ctx := context.Background()
	h := openTest(t, cfg)
	h.rc.minDelay, h.rc.maxDelay = time.Millisecond, 50*time.Millisecond
	if _, err := h.RotateKEK(ctx); err != nil {
		t.Fatal(err)
	}
	sig, err := h.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	before, err := h.Seal(ctx, []byte("under kek-2"), nil)
	if err != nil {
		t.Fatal(err)
	}

	dir := tokenDir(t, label)
	away := filepath.Join(testDir, "away-"+label)
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Rename(away, dir) })
	if _, err := h.Seal(ctx, []byte("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Seal with the token gone: %v", err)
	}
	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	waitRecovered(t, h)

	if h.CurrentKEK() != "coffer-kek-2" || h.Info().KeyLabels[1] != "coffer-sig-2" || !h.SigningPublicKey().Equal(sig.Public) {
		t.Fatalf("after recovery: KEK %s, keys %v", h.CurrentKEK(), h.Info().KeyLabels)
	}
	s, err := h.Seal(ctx, []byte("after"), nil)
	if err != nil || s.KEK != "coffer-kek-2" {
		t.Fatalf("Seal after recovery: KEK %q, %v", s.KEK, err)
	}
	if got, err := h.Unseal(ctx, before, nil); err != nil || string(got) != "under kek-2" {
		t.Fatalf("Unseal after recovery = %q, %v", got, err)
	}
	d := sha256.Sum256([]byte("after"))
	if sg, err := h.Sign(ctx, d[:]); err != nil || !verifies(sig.Public, d[:], sg) {
		t.Fatalf("Sign after recovery does not use coffer-sig-2: %v", err)
	}
}

// BenchmarkRewrap is one DEK moved to the current KEK: an unwrap with the
// old KEK and a wrap with the new one, both in the token.
func BenchmarkRewrap(b *testing.B) {
	h := openTest(b, tokenCfg(b, "coffer-rot-bench"))
	ctx := context.Background()
	aad := []byte("project/secret/1")
	s, err := h.Seal(ctx, make([]byte, 256), aad)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := h.RotateKEK(ctx); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.Rewrap(ctx, s, aad); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
