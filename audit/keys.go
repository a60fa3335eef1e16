package audit

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
)

// Signer signs checkpoints: the HSM signing key in the daemon.
type Signer interface {
	// Sign signs a SHA-256 digest with ECDSA P-256 and returns the raw
	// r||s signature (64 bytes) and the kid of the key that signed.
	Sign(ctx context.Context, digest []byte) (sig []byte, kid string, err error)
}

// SignerFunc adapts a function to Signer.
type SignerFunc func(ctx context.Context, digest []byte) ([]byte, string, error)

// Sign calls f.
func (f SignerFunc) Sign(ctx context.Context, digest []byte) ([]byte, string, error) {
	return f(ctx, digest)
}

// KeySource finds the public key a checkpoint names by kid. More than one
// key may exist (the signing key can be rotated).
type KeySource interface {
	PublicKey(kid string) (*ecdsa.PublicKey, bool)
}

// Keys is a KeySource from a map of kid to key.
type Keys map[string]*ecdsa.PublicKey

// PublicKey returns the key named kid.
func (k Keys) PublicKey(kid string) (*ecdsa.PublicKey, bool) {
	pub, ok := k[kid]
	return pub, ok
}

// sigLen is the size of a raw P-256 r||s signature.
const sigLen = 64

var b64 = base64.RawURLEncoding

// verifySig checks a raw r||s signature of digest.
func verifySig(pub *ecdsa.PublicKey, digest, sig []byte) bool {
	if pub == nil || pub.Curve != elliptic.P256() || len(sig) != sigLen {
		return false
	}
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, digest, r, s)
}

// ParseJWKS reads an RFC 7517 JWK set (such as the daemon's
// /.well-known/jwks.json) and returns its EC P-256 keys by kid. Keys of
// other types are skipped; a P-256 key without a kid or with bad
// coordinates is an error.
func ParseJWKS(data []byte) (Keys, error) {
	var set struct {
		Keys []struct {
			Kty string `json:"kty"`
			Crv string `json:"crv"`
			X   string `json:"x"`
			Y   string `json:"y"`
			Kid string `json:"kid"`
		} `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	out := Keys{}
	for i, k := range set.Keys {
		if k.Kty != "EC" || k.Crv != "P-256" {
			continue
		}
		if k.Kid == "" {
			return nil, fmt.Errorf("jwks: key %d has no kid", i)
		}
		x, ex := b64.DecodeString(k.X)
		y, ey := b64.DecodeString(k.Y)
		if ex != nil || ey != nil || len(x) != 32 || len(y) != 32 {
			return nil, fmt.Errorf("jwks: key %s: bad coordinates", k.Kid)
		}
		point := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return nil, fmt.Errorf("jwks: key %s: %w", k.Kid, err)
		}
		out[k.Kid] = pub
	}
	if len(out) == 0 {
		return nil, errors.New("jwks: no EC P-256 key")
	}
	return out, nil
}
