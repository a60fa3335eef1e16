package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"slices"
	"testing"

	"github.com/eclipse-keypont/crypto11"

	"github.com/coffer-hsm/coffer/internal/tpmtest"
)

// TestTPMRSAOAEPKEK runs the RSA-OAEP KEK scheme on a real tpm2-pkcs11
// token (over a software TPM): the token has no AES-GCM, so Open makes an
// RSA-3072 KEK; envelopes name their scheme and open only with their aad;
// rotation and re-wrapping work; the store survives a reopen.
func TestTPMRSAOAEPKEK(t *testing.T) {
	tok := tpmtest.Start(t, "coffer-hsm")
	tok.Setenv(t)
	// The DEK wrapped by the KEK itself (TestTPMIntermediateKey has the
	// default, through an intermediate key).
	cfg := Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN, Intermediate: IntermediateOff}
	ctx := context.Background()
	h, err := Open(ctx, cfg)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	defer func() { _ = h.Close() }()

	info := h.Info()
	if info.Schemes.KEK != KEKRSAOAEP || info.Schemes.Signing != SignES256 || info.Token.Manufacturer != "IBM" || !info.Token.failedDecryptSticks() {
		t.Fatalf("Info = %+v, want rsa-3072-oaep-sha256, ES256 on an IBM (swtpm) token", info)
	}
	_, k := h.currentKEK()
	at, err := h.ctx.GetAttributes(k.dec, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaSign, crypto11.CkaDecrypt})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[crypto11.AttributeType]byte{crypto11.CkaSensitive: 1, crypto11.CkaExtractable: 0, crypto11.CkaSign: 0, crypto11.CkaDecrypt: 1} {
		if a := at[typ]; a == nil || len(a.Value) != 1 || a.Value[0] != want {
			t.Errorf("KEK private half attribute %#x = %v, want %d", typ, a, want)
		}
	}
	if k.pub.N.BitLen() != 3072 {
		t.Errorf("KEK modulus is %d bits", k.pub.N.BitLen())
	}

	aad := []byte("p/s/1")
	s, err := h.Seal(ctx, []byte("sealed by a TPM"), aad)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	if s.KEK != DefaultKEKLabel || s.Scheme != string(KEKRSAOAEP) || len(s.WrapNonce) != 0 || len(s.WrappedDEK) != 384 {
		t.Fatalf("envelope = kek %s scheme %q wrap nonce %d bytes wrapped DEK %d bytes", s.KEK, s.Scheme, len(s.WrapNonce), len(s.WrappedDEK))
	}
	if pt, err := h.Unseal(ctx, s, aad); err != nil || string(pt) != "sealed by a TPM" {
		t.Fatalf("Unseal = %q, %v", pt, err)
	}

	bad := func(f func(*Sealed)) *Sealed {
		c := *s
		c.WrappedDEK, c.Ciphertext = slices.Clone(s.WrappedDEK), slices.Clone(s.Ciphertext)
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name string
		s    *Sealed
		aad  []byte
	}{
		{"other aad", s, []byte("p/s/2")},
		{"ciphertext changed", bad(func(c *Sealed) { c.Ciphertext[0] ^= 1 }), aad},
		{"claims aes-256-gcm", bad(func(c *Sealed) { c.Scheme = "" }), aad},
		{"unknown scheme", bad(func(c *Sealed) { c.Scheme = "rot13" }), aad},
		{"wrap nonce added", bad(func(c *Sealed) { c.WrapNonce = make([]byte, 12) }), aad},
		{"wrapped DEK cut", bad(func(c *Sealed) { c.WrappedDEK = c.WrappedDEK[:383] }), aad},
		// Last: the token fails this decryption, and tpm2-pkcs11 leaves
		// the session busy; coffer renews its sessions after it.
		{"wrapped DEK changed", bad(func(c *Sealed) { c.WrappedDEK[100] ^= 1 }), aad},
	} {
		if _, err := h.Unseal(ctx, tc.s, tc.aad); !errors.Is(err, ErrOpen) {
			t.Errorf("Unseal with %s: %v, want ErrOpen", tc.name, err)
		}
	}
	// Every session works again once they are renewed: more unseals than
	// the pool has sessions.
	waitRecovered(t, h)
	for range 2 * defaultMaxSessions {
		if pt, err := h.Unseal(ctx, s, aad); err != nil || string(pt) != "sealed by a TPM" {
			t.Fatalf("Unseal after the failed decryption = %q, %v", pt, err)
		}
	}

	// The import key works on the TPM too, and a bad import ciphertext
	// renews the sessions the same way.
	imp, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, h.ImportPublicKey(), make([]byte, dekSize), nil)
	if err != nil {
		t.Fatal(err)
	}
	flipped := slices.Clone(imp)
	flipped[50] ^= 1
	if _, err := h.UnwrapImport(ctx, flipped); !errors.Is(err, ErrOpen) {
		t.Fatalf("UnwrapImport of a changed ciphertext: %v, want ErrOpen", err)
	}
	waitRecovered(t, h)
	for range 2 * defaultMaxSessions {
		if dek, err := h.UnwrapImport(ctx, imp); err != nil || len(dek) != dekSize {
			t.Fatalf("UnwrapImport after the failed one: %v", err)
		}
	}

	// Rotation: a new RSA KEK, the old envelope re-wrapped to it (and
	// refused with another aad), the old KEK destroyed.
	next, err := h.RotateKEK(ctx)
	if err != nil || next != "coffer-kek-2" {
		t.Fatalf("RotateKEK = %q, %v", next, err)
	}
	if _, err := h.Rewrap(ctx, s, []byte("p/s/2")); !errors.Is(err, ErrOpen) {
		t.Fatalf("Rewrap with another aad: %v, want ErrOpen", err)
	}
	moved, err := h.Rewrap(ctx, s, aad)
	if err != nil {
		t.Fatalf("Rewrap: %v", err)
	}
	if moved.KEK != next || moved.Scheme != string(KEKRSAOAEP) || !slices.Equal(moved.Ciphertext, s.Ciphertext) {
		t.Fatalf("rewrapped envelope: kek %s scheme %s, ciphertext kept %v", moved.KEK, moved.Scheme, slices.Equal(moved.Ciphertext, s.Ciphertext))
	}
	keks, err := h.KEKs(ctx)
	if err != nil || labels(keks) != "coffer-kek-1/1 coffer-kek-2/2* " || keks[1].Scheme != string(KEKRSAOAEP) {
		t.Fatalf("KEKs = %s %+v, %v", labels(keks), keks, err)
	}
	if err := h.DestroyKEK(ctx, DefaultKEKLabel); err != nil {
		t.Fatalf("DestroyKEK: %v", err)
	}
	if _, err := h.Unseal(ctx, s, aad); !errors.Is(err, ErrOpen) {
		t.Fatalf("Unseal under the destroyed KEK: %v, want ErrOpen", err)
	}

	d := sha256.Sum256([]byte("jwt"))
	sig, err := h.Sign(ctx, d[:])
	if err != nil || !Verify(h.SigningPublicKey(), d[:], sig) {
		t.Fatalf("Sign on the TPM: %v", err)
	}
	pub := h.SigningPublicKey()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	// Reopened without creating: kek-2 is current and opens the moved
	// envelope; the signing key is the same.
	cfg.NoCreate = true
	h, err = Open(ctx, cfg)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	if h.CurrentKEK() != next || !h.SigningPublicKey().Equal(pub) {
		t.Fatalf("reopened: current KEK %s, same signing key %v", h.CurrentKEK(), h.SigningPublicKey().Equal(pub))
	}
	if _, ok := pub.(*ecdsa.PublicKey); !ok {
		t.Fatalf("TPM signing key is %T, want ECDSA", pub)
	}
	if pt, err := h.Unseal(ctx, moved, aad); err != nil || string(pt) != "sealed by a TPM" {
		t.Fatalf("Unseal after reopen = %q, %v", pt, err)
	}
}

// BenchmarkTPM measures the RSA-OAEP scheme on a software TPM: Seal wraps
// in software, Unseal decrypts in the TPM, Sign is ES256 in the TPM.
// Short runs: go test ./hsm -run '^$' -bench TPM -benchtime 20x.
func BenchmarkTPM(b *testing.B) {
	tok := tpmtest.Start(b, "coffer-bench")
	tok.Setenv(b)
	ctx := context.Background()
	h, err := Open(ctx, Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN})
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	aad := []byte("p/s/1")
	s, err := h.Seal(ctx, make([]byte, 1024), aad)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("x"))
	for _, bc := range []struct {
		name string
		op   func() error
	}{
		{"Seal", func() error { _, err := h.Seal(ctx, make([]byte, 1024), aad); return err }},
		{"Unseal", func() error { _, err := h.Unseal(ctx, s, aad); return err }},
		{"Sign", func() error { _, err := h.Sign(ctx, d[:]); return err }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if err := bc.op(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
