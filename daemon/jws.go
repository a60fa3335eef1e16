package daemon

// The JWS algorithms coffer signs with, one per kind of HSM signing key:
// ES256 (ECDSA P-256 with SHA-256, signatures as r||s) and PS256 (RSA-PSS
// with SHA-256, MGF1-SHA-256 and a 32-byte salt). The key decides the
// algorithm: a token header's alg must be the one of the key its kid
// names, so a key can never be used with another algorithm.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"math/big"
)

// PublicKey is the public half of a signing key: *ecdsa.PublicKey (P-256,
// ES256) or *rsa.PublicKey (PS256). It is the same type as
// hsm.PublicKey (an alias of one unnamed interface).
type PublicKey = interface{ Equal(crypto.PublicKey) bool }

const (
	algES256 = "ES256"
	algPS256 = "PS256"
	// rsaMinBits is the smallest RSA key PS256 accepts (RFC 7518 §3.5).
	rsaMinBits = 2048
)

// jwsKey is what JOSE needs from one kind of signing key.
type jwsKey interface {
	alg() string
	// sigLen is the length of every signature in its JWS form.
	sigLen() int
	verify(digest, sig []byte) bool
	// jwk is the key's JWK without kid.
	jwk() JWK
	// thumbprintInput is the RFC 7638 §3.2 JSON: the required members
	// only, in lexicographic order, no whitespace.
	thumbprintInput() []byte
}

// jwsKeyOf returns the JWS view of pub, or an error for a key coffer does
// not sign with.
func jwsKeyOf(pub PublicKey) (jwsKey, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve != elliptic.P256() {
			return nil, errors.New("jwt: signing key is an EC key but not P-256")
		}
		b, err := k.Bytes() // 0x04 || X || Y, 32 bytes each
		if err != nil || len(b) != 65 || b[0] != 4 {
			return nil, errors.New("jwt: invalid EC P-256 public key")
		}
		return es256Key{pub: k, x: b[1:33], y: b[33:]}, nil
	case *rsa.PublicKey:
		if k == nil || k.N == nil || k.N.BitLen() < rsaMinBits || k.E < 3 || k.E%2 == 0 {
			return nil, errors.New("jwt: signing key is an RSA key under 2048 bits or with a bad exponent")
		}
		return ps256Key{pub: k}, nil
	}
	return nil, errors.New("jwt: signing key is neither an EC P-256 nor an RSA public key")
}

type es256Key struct {
	pub  *ecdsa.PublicKey
	x, y []byte // fixed 32-byte big-endian coordinates
}

func (es256Key) alg() string { return algES256 }
func (es256Key) sigLen() int { return 64 }
func (k es256Key) jwk() JWK {
	return JWK{Kty: "EC", Crv: "P-256", X: jwtB64.EncodeToString(k.x), Y: jwtB64.EncodeToString(k.y), Use: "sig", Alg: algES256}
}

func (k es256Key) verify(digest, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(k.pub, digest, r, s) // rejects r, s ∉ [1, n-1]
}

func (k es256Key) thumbprintInput() []byte {
	var b bytes.Buffer
	b.WriteString(`{"crv":"P-256","kty":"EC","x":"`)
	b.WriteString(jwtB64.EncodeToString(k.x))
	b.WriteString(`","y":"`)
	b.WriteString(jwtB64.EncodeToString(k.y))
	b.WriteString(`"}`)
	return b.Bytes()
}

type ps256Key struct{ pub *rsa.PublicKey }

// pss is PS256's RSA-PSS: SHA-256, MGF1-SHA-256, salt as long as the hash.
var pss = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}

func (ps256Key) alg() string   { return algPS256 }
func (k ps256Key) sigLen() int { return k.pub.Size() }

func (k ps256Key) verify(digest, sig []byte) bool {
	return len(sig) == k.pub.Size() && rsa.VerifyPSS(k.pub, crypto.SHA256, digest, sig, pss) == nil
}

// n and e are unsigned big-endian without leading zeros (RFC 7518 §6.3.1).
func (k ps256Key) ne() (n, e string) {
	return jwtB64.EncodeToString(k.pub.N.Bytes()), jwtB64.EncodeToString(big.NewInt(int64(k.pub.E)).Bytes())
}

func (k ps256Key) jwk() JWK {
	n, e := k.ne()
	return JWK{Kty: "RSA", N: n, E: e, Use: "sig", Alg: algPS256}
}

func (k ps256Key) thumbprintInput() []byte {
	n, e := k.ne()
	return []byte(`{"e":"` + e + `","kty":"RSA","n":"` + n + `"}`)
}

// jwsAlgOf names the JWS algorithm of pub, or "" for a key coffer does
// not sign with.
func jwsAlgOf(pub PublicKey) string {
	k, err := jwsKeyOf(pub)
	if err != nil {
		return ""
	}
	return k.alg()
}

// jwtKeyID is the RFC 7638 thumbprint (SHA-256, base64url) of pub.
func jwtKeyID(pub PublicKey) (string, error) {
	k, err := jwsKeyOf(pub)
	if err != nil {
		return "", err
	}
	return thumbprint(k), nil
}

func thumbprint(k jwsKey) string {
	sum := sha256.Sum256(k.thumbprintInput())
	return jwtB64.EncodeToString(sum[:])
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
// 7518 §6.2.1.2), an RSA key with n and e (RFC 7518 §6.3.1). Like KeyID
// it panics for a key coffer does not sign with.
func PublicJWK(pub PublicKey) JWK {
	k, err := jwsKeyOf(pub)
	if err != nil {
		panic(err)
	}
	j := k.jwk()
	j.Kid = thumbprint(k)
	return j
}
