package daemon

// The JWS algorithms coffer signs with, one per kind of HSM signing key:
// ES256 (ECDSA P-256 with SHA-256, signatures as r||s) and PS256 (RSA-PSS
// with SHA-256, MGF1-SHA-256 and a 32-byte salt). The key decides the
// algorithm: a token header's alg must be the one of the key its kid
// names, so a key can never be used with another algorithm.
//
// go-jose (github.com/go-jose/go-jose/v4) does the JOSE: RFC 7638
// thumbprints, JWKs, the compact JWS around the HSM's signature and its
// verification. What stays here is coffer's policy, which go-jose does not
// have: which keys may sign (go-jose also takes P-384, P-521 and RSA keys
// of any size), and low-S ES256 signatures only.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"

	jose "github.com/go-jose/go-jose/v4"
)

// PublicKey is the public half of a signing key: *ecdsa.PublicKey (P-256,
// ES256) or *rsa.PublicKey (PS256). It is the same type as
// hsm.PublicKey (an alias of one unnamed interface).
type PublicKey = interface{ Equal(crypto.PublicKey) bool }

const (
	algES256 = string(jose.ES256)
	algPS256 = string(jose.PS256)
	// rsaMinBits is the smallest RSA key PS256 accepts (RFC 7518 §3.5).
	rsaMinBits = 2048
)

// jwsKey is a public key coffer signs with, and its one JWS algorithm.
type jwsKey struct {
	pub PublicKey
	alg jose.SignatureAlgorithm
	// sigLen is the length of every signature in its JWS form.
	sigLen int
}

// jwsKeyOf returns the JWS view of pub, or an error for a key coffer does
// not sign with.
func jwsKeyOf(pub PublicKey) (jwsKey, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve != elliptic.P256() {
			return jwsKey{}, errors.New("jwt: signing key is an EC key but not P-256")
		}
		if _, err := k.Bytes(); err != nil { // not a point of the curve
			return jwsKey{}, errors.New("jwt: invalid EC P-256 public key")
		}
		return jwsKey{pub: k, alg: jose.ES256, sigLen: 64}, nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() < rsaMinBits || k.E < 3 || k.E%2 == 0 {
			return jwsKey{}, errors.New("jwt: signing key is an RSA key under 2048 bits or with a bad exponent")
		}
		return jwsKey{pub: k, alg: jose.PS256, sigLen: k.Size()}, nil
	}
	return jwsKey{}, errors.New("jwt: signing key is neither an EC P-256 nor an RSA public key")
}

// jwk is the key as go-jose's JWK, without kid.
func (k jwsKey) jwk() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: k.pub, Algorithm: string(k.alg), Use: "sig"}
}

// kid is the RFC 7638 thumbprint (SHA-256, base64url) of the key.
func (k jwsKey) kid() (string, error) {
	tp, err := k.jwk().Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("jwt: thumbprint: %w", err)
	}
	return jwtB64.EncodeToString(tp), nil
}

// jwsAlgOf names the JWS algorithm of pub, or "" for a key coffer does
// not sign with.
func jwsAlgOf(pub PublicKey) string {
	k, err := jwsKeyOf(pub)
	if err != nil {
		return ""
	}
	return string(k.alg)
}

// jwtKeyID is the RFC 7638 thumbprint (SHA-256, base64url) of pub.
func jwtKeyID(pub PublicKey) (string, error) {
	k, err := jwsKeyOf(pub)
	if err != nil {
		return "", err
	}
	return k.kid()
}

// KeyID is the RFC 7638 JWK thumbprint (SHA-256, base64url) of pub. pub
// must be a key coffer signs with (the HSM signing key always is); KeyID
// panics otherwise, as that is a programming error.
func KeyID(pub PublicKey) string {
	kid, err := jwtKeyID(pub)
	if err != nil {
		panic(err)
	}
	return kid
}

// PublicJWK returns pub as a JWK with its kid, use "sig" and its alg: an
// EC key with x and y as fixed 32-byte values (leading zeros kept, RFC
// 7518 §6.2.1.2), an RSA key with n and e (RFC 7518 §6.3.1), as go-jose
// writes them. Like KeyID it panics for a key coffer does not sign with.
func PublicJWK(pub PublicKey) JWK {
	k, err := jwsKeyOf(pub)
	if err != nil {
		panic(err)
	}
	jk := k.jwk()
	if jk.KeyID, err = k.kid(); err != nil {
		panic(err)
	}
	var j JWK
	b, err := jk.MarshalJSON()
	if err == nil {
		err = json.Unmarshal(b, &j)
	}
	if err != nil {
		panic(fmt.Errorf("jwt: JWK of a valid key: %w", err))
	}
	return j
}

// p256HalfOrder is ⌊n/2⌋, n the order of P-256, as 32 bytes big-endian.
var p256HalfOrder = func() []byte {
	return new(big.Int).Rsh(elliptic.P256().Params().N, 1).FillBytes(make([]byte, 32))
}()

// es256LowS reports whether the ES256 signature r||s has s ≤ n/2.
//
// ECDSA signatures are malleable: wherever (r, s) verifies, so does
// (r, n−s), so each token would have a second valid string (a different
// bearer, cache key and log line for the same token). crypto/ecdsa and
// go-jose accept both, so this rule is written here: coffer accepts the
// low-S form only (as Bitcoin's BIP 62 does) and its signer always
// produces it (es256ToLowS).
func es256LowS(sig []byte) bool {
	return len(sig) == 64 && bytes.Compare(sig[32:], p256HalfOrder) <= 0
}

// es256ToLowS returns the low-S twin of the ES256 signature sig when its s
// is above n/2 (the HSM returns either), else sig itself. A signature with
// s ≥ n is returned as it is: it does not verify either way.
func es256ToLowS(sig []byte) []byte {
	if len(sig) != 64 || es256LowS(sig) {
		return sig
	}
	n := elliptic.P256().Params().N
	s := new(big.Int).SetBytes(sig[32:])
	if s.Cmp(n) >= 0 {
		return sig
	}
	out := slices.Clone(sig)
	s.Sub(n, s).FillBytes(out[32:])
	return out
}

// signDigest has s sign a SHA-256 digest with key, and returns the
// signature in its JWS form: checked for length and, for ES256, low-S.
func signDigest(ctx context.Context, s JWTSigner, key jwsKey, digest []byte) ([]byte, error) {
	sig, err := s.Sign(ctx, digest)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	if len(sig) != key.sigLen {
		return nil, fmt.Errorf("signer returned %d bytes, want %d", len(sig), key.sigLen)
	}
	if key.alg == jose.ES256 {
		sig = es256ToLowS(sig)
	}
	return sig, nil
}

// hsmJWS is a jose.OpaqueSigner over a JWTSigner: go-jose builds the JWS,
// the HSM signs its SHA-256 digest (one Sign call per JWS).
type hsmJWS struct {
	ctx context.Context // of the MintJWT call: SignPayload takes none
	s   JWTSigner
	key jwsKey
	kid string
}

func (h hsmJWS) Public() *jose.JSONWebKey {
	jk := h.key.jwk()
	jk.KeyID = h.kid // go-jose writes it as the header's kid
	return jk
}

func (h hsmJWS) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{h.key.alg} }

func (h hsmJWS) SignPayload(payload []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if alg != h.key.alg {
		return nil, jose.ErrUnsupportedAlgorithm
	}
	digest := sha256.Sum256(payload)
	return signDigest(h.ctx, h.s, h.key, digest[:])
}

// signJWS returns the compact JWS of payload with the protected header
// {"alg":ALG,"kid":KID,"typ":"at+jwt"}, signed by s.
func signJWS(ctx context.Context, s JWTSigner, key jwsKey, kid string, payload []byte) (string, error) {
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: key.alg, Key: hsmJWS{ctx: ctx, s: s, key: key, kid: kid}},
		(&jose.SignerOptions{}).WithType(jwtTyp))
	if err != nil {
		return "", err
	}
	obj, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return obj.CompactSerialize()
}

// verifyJWS verifies the compact JWS token with key, the key's algorithm
// being the only one allowed, and returns its payload, or a fixed reason
// why not. The caller has checked its parts (strict base64url, header
// members, signature length): go-jose is more lenient about those. (It
// also verifies PS256 with any salt length, where coffer signs with 32
// bytes; that needs the private key to exploit, so it is left to go-jose.)
func verifyJWS(token string, key jwsKey) (payload []byte, reason string) {
	obj, err := jose.ParseSignedCompact(token, []jose.SignatureAlgorithm{key.alg})
	if err != nil || len(obj.Signatures) != 1 {
		return nil, "malformed header"
	}
	if key.alg == jose.ES256 && !es256LowS(obj.Signatures[0].Signature) {
		return nil, "signature is not low-S"
	}
	payload, err = obj.Verify(key.pub)
	if err != nil {
		return nil, "bad signature"
	}
	return payload, ""
}
