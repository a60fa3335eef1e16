package audit

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"
)

// Signer signs checkpoints: the HSM signing key in the daemon.
type Signer interface {
	// Sign signs a SHA-256 digest and returns the signature in its JWS
	// form and the kid of the key that signed: ES256 (ECDSA P-256, raw
	// r||s, 64 bytes) or PS256 (RSA-PSS with SHA-256 and a 32-byte salt,
	// the modulus size), as the key is.
	Sign(ctx context.Context, digest []byte) (sig []byte, kid string, err error)
}

// PublicKey is a checkpoint signing key's public half: *ecdsa.PublicKey
// (P-256) or *rsa.PublicKey.
type PublicKey = interface{ Equal(crypto.PublicKey) bool }

// SignerFunc adapts a function to Signer.
type SignerFunc func(ctx context.Context, digest []byte) ([]byte, string, error)

// Sign calls f.
func (f SignerFunc) Sign(ctx context.Context, digest []byte) ([]byte, string, error) {
	return f(ctx, digest)
}

// KeySource finds the public key a checkpoint names by kid. More than one
// key may exist (the signing key can be rotated).
type KeySource interface {
	PublicKey(kid string) (PublicKey, bool)
}

// Keys is a KeySource from a map of kid to key.
type Keys map[string]PublicKey

// PublicKey returns the key named kid.
func (k Keys) PublicKey(kid string) (PublicKey, bool) {
	pub, ok := k[kid]
	return pub, ok
}

// maxSigLen bounds a checkpoint signature (RSA-8192).
const maxSigLen = 1024

// rsaMinBits is the smallest RSA key a checkpoint may be signed with.
const rsaMinBits = 2048

// b64 is base64url without padding, strict: a signature has one encoding.
var b64 = base64.RawURLEncoding.Strict()

// pss is PS256's RSA-PSS: SHA-256, MGF1-SHA-256, salt as long as the hash.
var pss = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}

// p256HalfOrder is ⌊n/2⌋, n the order of P-256.
var p256HalfOrder = new(big.Int).Rsh(elliptic.P256().Params().N, 1)

// verifySig checks a signature of digest in the form Signer returns.
//
// The daemon's signer (SignAudit) writes ECDSA signatures low-S (s ≤ n/2),
// but verification accepts the high-S twin (r, n−s) too, unlike JWT
// verification: a twin signs the same digest, so it proves exactly what
// the signature does and lets nobody change a line's content, while
// refusing it would fail every checkpoint of half the logs written before
// signatures were normalised. (Only the exact 64-byte r||s form is read.)
func verifySig(pub PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k == nil || k.Curve != elliptic.P256() || len(sig) != 64 {
			return false
		}
		r := new(big.Int).SetBytes(sig[:32])
		s := new(big.Int).SetBytes(sig[32:])
		return ecdsa.Verify(k, digest, r, s)
	case *rsa.PublicKey:
		return k != nil && k.N.BitLen() >= rsaMinBits && len(sig) == k.Size() &&
			rsa.VerifyPSS(k, crypto.SHA256, digest, sig, pss) == nil
	}
	return false
}

// ParseJWKS reads an RFC 7517 JWK set (such as the daemon's
// /.well-known/jwks.json) and returns its signing keys by kid: EC P-256
// keys and RSA keys for PS256. Keys of other types and algorithms are
// skipped; such a key without a kid or with bad coordinates, modulus or
// exponent is an error.
//
// go-jose reads each key. Its JSONWebKeySet is not used as a whole: it
// fails on the first key it cannot read, where RFC 7517 §5 says to skip
// keys of unknown types (and an RSA key not meant for PS256 is not ours to
// judge). Which keys to read, and the RSA size and exponent, are decided
// here.
func ParseJWKS(data []byte) (Keys, error) {
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	out := Keys{}
	for i, raw := range set.Keys {
		var k struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			Alg string `json:"alg"`
			Kid string `json:"kid"`
			D   any    `json:"d"`
		}
		if err := json.Unmarshal(raw, &k); err != nil {
			return nil, fmt.Errorf("jwks: key %d: %w", i, err)
		}
		isEC := k.Kty == "EC" && k.Crv == "P-256"
		isRSA := k.Kty == "RSA" && k.Alg == "PS256"
		if !isEC && !isRSA {
			continue
		}
		if k.Kid == "" {
			return nil, fmt.Errorf("jwks: key %d has no kid", i)
		}
		if k.D != nil {
			// go-jose would read it as a private key, with the work (and
			// trust) that takes: a JWK set holds public keys only.
			return nil, fmt.Errorf("jwks: key %s holds a private key", k.Kid)
		}
		var jk jose.JSONWebKey
		if err := jk.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("jwks: key %s: %w", k.Kid, err)
		}
		switch pub := jk.Key.(type) {
		case *ecdsa.PublicKey:
			if !isEC || pub.Curve != elliptic.P256() {
				return nil, fmt.Errorf("jwks: key %s is not what its kty and crv say", k.Kid)
			}
			out[k.Kid] = pub
		case *rsa.PublicKey:
			if !isRSA {
				return nil, fmt.Errorf("jwks: key %s is not what its kty says", k.Kid)
			}
			if pub.N.BitLen() < rsaMinBits || pub.E < 3 || pub.E%2 == 0 {
				return nil, fmt.Errorf("jwks: key %s: RSA-%d with exponent %d is not a PS256 key", k.Kid, pub.N.BitLen(), pub.E)
			}
			out[k.Kid] = pub
		default:
			return nil, fmt.Errorf("jwks: key %s is a %T", k.Kid, jk.Key)
		}
	}
	if len(out) == 0 {
		return nil, errors.New("jwks: no EC P-256 or PS256 RSA key")
	}
	return out, nil
}
