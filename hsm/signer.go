package hsm

// Signing keys of both schemes: an EC P-256 key pair (ES256) or an
// RSA-3072 key pair (PS256: RSA-PSS with SHA-256, MGF1-SHA-256 and a salt
// as long as the hash). Open creates the scheme ChooseSchemes picked for
// the token; an existing version signs in the scheme of its key type.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"
	"slices"

	"github.com/eclipse-keypont/crypto11"
)

// PublicKey is the public half of a signing key: *ecdsa.PublicKey
// (P-256, ES256) or *rsa.PublicKey (PS256). It is an alias of an unnamed
// interface so that packages that do not import hsm can name the same
// type.
type PublicKey = interface{ Equal(crypto.PublicKey) bool }

// pssSHA256 is RSA-PSS as JWS PS256 defines it (RFC 7518 §3.5).
var pssSHA256 = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}

// SigningSchemeOf returns the scheme a signing key's public half signs
// with, or "" for a key coffer does not sign with.
func SigningSchemeOf(pub crypto.PublicKey) SigningScheme {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return SignES256
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= rsaBits {
			return SignPS256
		}
	}
	return ""
}

// checkSigner returns the public half of signer, or an error when it is
// neither a P-256 nor an RSA key of at least 3072 bits.
func (h *HSM) checkSigner(label string, signer crypto11.Signer) (PublicKey, error) {
	pub := signer.Public()
	if SigningSchemeOf(pub) == "" {
		return nil, fmt.Errorf("HSM signing key %s on token %s is neither an EC P-256 key nor an RSA key of at least %d bits", label, h.cfg.TokenLabel, rsaBits)
	}
	return pub.(PublicKey), nil
}

func (h *HSM) findSigner(label string) (crypto11.Signer, error) {
	keys, err := h.ctx.FindKeyPairsWithAttributes(keyAttrs(label))
	if err != nil || len(keys) == 0 {
		return nil, err
	}
	return keys[0], nil
}

// generateSigner creates signing key label in the scheme chosen for the
// token; its private half is sensitive, not extractable and may only sign.
func (h *HSM) generateSigner(label string) (crypto11.Signer, error) {
	if h.schemes.Signing == SignPS256 {
		return h.generateRSAKeyPair(label, rsaSignOnly)
	}
	pub := keyAttrs(label)
	_ = pub.Set(crypto11.CkaLabel, []byte(label))
	priv := pub.Copy()
	setAll(priv, attrs{
		{crypto11.CkaPrivate, true},
		{crypto11.CkaSensitive, true},
		{crypto11.CkaExtractable, false},
	})
	return h.ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
}

type tokenSigner struct {
	label   string
	version int
	signer  crypto11.Signer
}

// listSigners returns the signing key versions on the token, of both
// schemes, lowest first.
func (h *HSM) listSigners() ([]tokenSigner, error) {
	signers, err := h.ctx.FindKeyPairsWithAttributes(crypto11.NewAttributeSet())
	if err != nil {
		return nil, err
	}
	f := h.sigFamily()
	var out []tokenSigner
	seen := map[string]bool{}
	for _, s := range signers {
		id, err := h.cka(s)
		if err != nil {
			return nil, err
		}
		if v := f.version(id); v > 0 && !seen[id] {
			seen[id] = true
			out = append(out, tokenSigner{id, v, s})
		}
	}
	slices.SortFunc(out, func(a, b tokenSigner) int { return a.version - b.version })
	return out, nil
}

// findCurrentSigner returns the highest signing key version on the token,
// or nil.
func (h *HSM) findCurrentSigner() (string, crypto11.Signer, error) {
	ss, err := h.listSigners()
	if err != nil || len(ss) == 0 {
		return "", nil, err
	}
	s := ss[len(ss)-1]
	return s.label, s.signer, nil
}

// Sign signs a SHA-256 digest with the current signing key and returns
// the signature in its JWS form: r||s (64 bytes) for ES256, the RSA-PSS
// signature (the modulus size) for PS256. SigningPublicKey says which.
func (h *HSM) Sign(ctx context.Context, digest []byte) (sig []byte, err error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("sign: digest is %d bytes, want 32 (SHA-256)", len(digest))
	}
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	label, signer, pub := h.currentSigner()
	defer func() {
		if r := recover(); r != nil {
			sig, err = nil, fmt.Errorf("%w: sign with %s: %v", ErrUnavailable, label, panicError(r))
		}
	}()
	sig, err = signWith(signer, pub, digest)
	if err != nil {
		return nil, fmt.Errorf("%w: sign with %s on token %s: %s", ErrUnavailable, label, h.cfg.TokenLabel, ckrName(err))
	}
	return sig, nil
}

// signWith signs digest with signer in the scheme of its public half pub.
func signWith(signer crypto.Signer, pub PublicKey, digest []byte) ([]byte, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		der, err := signer.Sign(rand.Reader, digest, crypto.SHA256)
		if err != nil {
			return nil, err
		}
		return derToRaw(der, 32)
	case *rsa.PublicKey:
		sig, err := signer.Sign(rand.Reader, digest, pssSHA256)
		if err != nil {
			return nil, err
		}
		if len(sig) != k.Size() {
			return nil, fmt.Errorf("sign: RSA-PSS signature from HSM is %d bytes, want %d", len(sig), k.Size())
		}
		return sig, nil
	}
	return nil, errors.New("sign: unsupported signing key")
}

// Verify checks a signature in the JWS form Sign returns.
func Verify(pub PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if len(sig) != 64 {
			return false
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k, digest, r, s)
	case *rsa.PublicKey:
		return rsa.VerifyPSS(k, crypto.SHA256, digest, sig, pssSHA256) == nil
	}
	return false
}

// testSigner signs a random digest and verifies it with pub.
func testSigner(signer crypto11.Signer, pub PublicKey) error {
	return testSignVerify(
		func(d []byte) ([]byte, error) { return signWith(signer, pub, d) },
		func(d, sig []byte) bool { return Verify(pub, d, sig) })
}

// testSignVerify signs the SHA-256 digest of random bytes with sign and
// checks the signature with verify: a key that answers but signs wrongly
// is found before it is used.
func testSignVerify(sign func(digest []byte) ([]byte, error), verify func(digest, sig []byte) bool) error {
	var msg [32]byte
	if _, err := rand.Read(msg[:]); err != nil {
		return err
	}
	d := sha256.Sum256(msg[:])
	sig, err := sign(d[:])
	if err != nil {
		return errors.New(ckrName(err))
	}
	if !verify(d[:], sig) {
		return errors.New("its signatures do not verify with its public key")
	}
	return nil
}

// derToRaw converts an ASN.1 ECDSA-Sig-Value to fixed-width r||s.
func derToRaw(der []byte, size int) ([]byte, error) {
	var v struct{ R, S *big.Int }
	rest, err := asn1.Unmarshal(der, &v)
	if err != nil || len(rest) != 0 || v.R == nil || v.S == nil {
		return nil, errors.New("sign: malformed ECDSA signature from HSM")
	}
	if v.R.Sign() <= 0 || v.S.Sign() <= 0 || v.R.BitLen() > size*8 || v.S.BitLen() > size*8 {
		return nil, errors.New("sign: ECDSA signature from HSM out of range")
	}
	out := make([]byte, 2*size)
	v.R.FillBytes(out[:size])
	v.S.FillBytes(out[size:])
	return out, nil
}
