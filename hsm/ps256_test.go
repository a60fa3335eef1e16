package hsm

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"testing"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// withoutECDSA makes Open see the token's real mechanisms minus P-256
// ECDSA, as on a token that only has RSA, until the test ends.
func withoutECDSA(t *testing.T) {
	t.Helper()
	orig := inspect
	inspect = func(c Config) (TokenInfo, []Mechanism, error) {
		ti, ms, err := orig(c)
		var out []Mechanism
		for _, m := range ms {
			if m.Type != pkcs11.CKM_ECDSA && m.Type != pkcs11.CKM_EC_KEY_PAIR_GEN {
				out = append(out, m)
			}
		}
		return ti, out, err
	}
	t.Cleanup(func() { inspect = orig })
}

// TestPS256SigningKey: on a token without ECDSA the signing key is an
// RSA-3072 key pair in a real SoftHSM token, and Sign returns RSA-PSS
// (SHA-256, salt as long as the hash) signatures that the standard
// library verifies.
func TestPS256SigningKey(t *testing.T) {
	cfg := tokenCfg(t, "coffer-ps256")
	withoutECDSA(t)
	ctx := context.Background()
	h := openTest(t, cfg)
	if s := h.Info().Schemes; s.Signing != SignPS256 || s.KEK != KEKAESGCM {
		t.Fatalf("schemes = %+v, want aes-256-gcm and PS256", s)
	}
	pub, ok := h.SigningPublicKey().(*rsa.PublicKey)
	if !ok || pub.N.BitLen() != 3072 || SigningSchemeOf(pub) != SignPS256 {
		t.Fatalf("SigningPublicKey = %T, want an RSA-3072 key", h.SigningPublicKey())
	}
	d := sha256.Sum256([]byte("header.payload"))
	sig, err := h.Sign(ctx, d[:])
	if err != nil {
		t.Fatalf("Sign: %v", err)
	}
	if len(sig) != 384 {
		t.Fatalf("signature is %d bytes, want 384", len(sig))
	}
	if err := rsa.VerifyPSS(pub, crypto.SHA256, d[:], sig, &rsa.PSSOptions{SaltLength: sha256.Size, Hash: crypto.SHA256}); err != nil {
		t.Fatalf("rsa.VerifyPSS with a 32-byte salt: %v", err)
	}
	other := sha256.Sum256([]byte("other"))
	if Verify(pub, other[:], sig) || !Verify(pub, d[:], sig) {
		t.Fatal("Verify accepts a signature over another digest, or refuses the right one")
	}
	_, signer, _ := h.currentSigner()
	at, err := h.ctx.GetAttributes(signer, []crypto11.AttributeType{crypto11.CkaSign, crypto11.CkaDecrypt, crypto11.CkaSensitive, crypto11.CkaExtractable})
	if err != nil {
		t.Fatal(err)
	}
	for typ, want := range map[crypto11.AttributeType]byte{crypto11.CkaSign: 1, crypto11.CkaDecrypt: 0, crypto11.CkaSensitive: 1, crypto11.CkaExtractable: 0} {
		if a := at[typ]; a == nil || len(a.Value) != 1 || a.Value[0] != want {
			t.Errorf("signing key attribute %#x = %v, want %d", typ, a, want)
		}
	}

	kv, err := h.RotateSigningKey(ctx)
	if err != nil {
		t.Fatalf("RotateSigningKey: %v", err)
	}
	if kv.Scheme != string(SignPS256) || kv.Public.Equal(pub) {
		t.Fatalf("rotated to %+v, want a new PS256 key", kv)
	}
	keys, err := h.SigningKeys(ctx)
	if err != nil || labels(keys) != "coffer-sig-1/1 coffer-sig-2/2* " || keys[0].Scheme != "PS256" || keys[1].Scheme != "PS256" {
		t.Fatalf("SigningKeys = %s %+v, %v", labels(keys), keys, err)
	}
}

// TestSigningSchemePerKeyVersion: the scheme is a property of each key
// version. A token whose first signing key is EC keeps signing ES256 with
// it when Open now chooses PS256; the next rotation makes an RSA key.
func TestSigningSchemePerKeyVersion(t *testing.T) {
	cfg := tokenCfg(t, "coffer-sig-mixed")
	ctx := context.Background()
	h, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	ecPub := h.SigningPublicKey()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	withoutECDSA(t)
	h = openTest(t, cfg)
	if h.Info().Schemes.Signing != SignPS256 || !h.SigningPublicKey().Equal(ecPub) {
		t.Fatalf("reopened: scheme %s, same EC key %v", h.Info().Schemes.Signing, h.SigningPublicKey().Equal(ecPub))
	}
	d := sha256.Sum256([]byte("x"))
	if sig, err := h.Sign(ctx, d[:]); err != nil || len(sig) != 64 || !Verify(ecPub, d[:], sig) {
		t.Fatalf("Sign with the EC key: %d bytes, %v", len(sig), err)
	}
	kv, err := h.RotateSigningKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := kv.Public.(*rsa.PublicKey); !ok {
		t.Fatalf("rotated to a %T key, want RSA", kv.Public)
	}
	if sig, err := h.Sign(ctx, d[:]); err != nil || len(sig) != 384 || !Verify(kv.Public, d[:], sig) {
		t.Fatalf("Sign with the RSA key: %d bytes, %v", len(sig), err)
	}
	keys, err := h.SigningKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].Scheme != "ES256" || keys[1].Scheme != "PS256" {
		t.Fatalf("SigningKeys = %+v, %v", keys, err)
	}
	if _, ok := keys[0].Public.(*ecdsa.PublicKey); !ok {
		t.Fatalf("old key is %T", keys[0].Public)
	}
}
