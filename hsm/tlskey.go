package hsm

// TLS serving keys: a key pair in the token that a TLS server signs its
// handshakes with (crypto/tls takes any crypto.Signer), for the Kubernetes
// webhooks' HTTPS listener. Its private half is generated in the token,
// sensitive and never extractable (an RSA one may only sign); the
// handshake signature is made by the token, so the key never exists in
// coffer's memory.
//
// The key is an EC P-256 key pair, or an RSA-3072 key pair (RSA-PSS) on a
// token that lacks ECDSA (the scheme ChooseSchemes picked for signing
// keys). It is found by its CKA_ID (its label) and is not a version of any
// rotated family: rotating the KEK or the signing key leaves it alone.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/eclipse-keypont/crypto11"
)

// DefaultTLSKeyLabel is the label (and CKA_ID) of the webhooks' serving key.
const DefaultTLSKeyLabel = "coffer-k8s-tls"

// TLSKey returns the serving key labelled label as a crypto.Signer for
// crypto/tls and crypto/x509, creating it in the token on first use.
// Signing goes to the token each time; after a reconnect (reconnect.go)
// the key is found again in the new context, and refused if it is not the
// same key.
func (h *HSM) TLSKey(ctx context.Context, label string) (_ crypto.Signer, err error) {
	if err := validateKeyLabel(label); err != nil {
		return nil, err
	}
	if h.reservedLabel(label) {
		return nil, fmt.Errorf("HSM key label %s is a KEK, signing or import key label: a TLS key needs its own", label)
	}
	if base, what := reservedBase(label); base == K8sKeyBase {
		return nil, fmt.Errorf("HSM key label %s is reserved: %s and its versions name %s", label, base, what)
	}
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "TLS key "+label)
	h.rotMu.Lock() // key creation, like rotations: one at a time
	defer h.rotMu.Unlock()
	s, err := h.findSigner(label)
	if err != nil {
		return nil, h.keyError("find TLS key", label, err)
	}
	if s == nil {
		if s, err = h.generateTLSKey(label); err != nil {
			return nil, h.keyError("create TLS key", label, err)
		}
		h.log().Info("HSM TLS key created", "token", h.cfg.TokenLabel, "key", label)
	}
	pub, err := h.checkTLSKey(label, s)
	if err != nil {
		return nil, err
	}
	return &tlsSigner{h: h, label: label, pub: pub, ctx: h.ctx, signer: s}, nil
}

// reservedLabel reports whether label names (a version of) the KEK, the
// signing key or the import key.
func (h *HSM) reservedLabel(label string) bool {
	return label == ImportKeyLabel || h.kekFamily().version(label) > 0 || h.sigFamily().version(label) > 0 ||
		sameFamily(label, h.cfg.KEKLabel) || sameFamily(label, h.cfg.SigningKeyLabel)
}

// generateTLSKey creates serving key label: EC P-256 where the token signs
// ES256, else RSA-3072 (sign only); the private half sensitive and not
// extractable.
func (h *HSM) generateTLSKey(label string) (crypto11.Signer, error) {
	if h.schemes.Signing == SignPS256 {
		return h.generateRSAKeyPair(label, rsaSignOnly)
	}
	pub := keyAttrs(label)
	_ = pub.Set(crypto11.CkaLabel, []byte(label))
	priv := pub.Copy()
	// The signing key's template (signer.go), which tpm2-pkcs11 also
	// takes: it refuses usage flags that disagree with the TPM object's.
	setAll(priv, attrs{
		{crypto11.CkaPrivate, true},
		{crypto11.CkaSensitive, true},
		{crypto11.CkaExtractable, false},
	})
	return h.ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
}

// checkTLSKey refuses a serving key that is not a P-256 or RSA (3072+)
// key pair whose private half is sensitive and not extractable (an object
// made by hand with our CKA_ID), and returns its public half.
func (h *HSM) checkTLSKey(label string, s crypto11.Signer) (crypto.PublicKey, error) {
	bad := func(why string) error {
		return fmt.Errorf("HSM TLS key %s on token %s is not usable: %s", label, h.cfg.TokenLabel, why)
	}
	pub := s.Public()
	if SigningSchemeOf(pub) == "" {
		return nil, bad("neither an EC P-256 key nor an RSA key of at least 3072 bits")
	}
	a, err := h.ctx.GetAttributes(s, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable})
	if err != nil {
		return nil, h.keyError("read attributes of TLS key", label, err)
	}
	flag := func(t crypto11.AttributeType) (bool, bool) {
		v := a[t]
		if v == nil || len(v.Value) != 1 {
			return false, false
		}
		return v.Value[0] != 0, true
	}
	if v, ok := flag(crypto11.CkaSensitive); !ok || !v {
		return nil, bad("its private half is not CKA_SENSITIVE")
	}
	if v, ok := flag(crypto11.CkaExtractable); !ok || v {
		return nil, bad("its private half is CKA_EXTRACTABLE")
	}
	return pub, nil
}

// tlsSigner signs with a serving key in the token. Safe for concurrent use.
type tlsSigner struct {
	h     *HSM
	label string
	pub   crypto.PublicKey

	mu     sync.Mutex
	ctx    p11             // the context signer belongs to
	signer crypto11.Signer // nil after a reconnect until found again
}

// Public returns the public half.
func (t *tlsSigner) Public() crypto.PublicKey { return t.pub }

// Sign signs digest in the token: ASN.1 DER for ECDSA, PKCS #1 v1.5 or PSS
// (as opts says) for RSA, as crypto.Signer specifies.
func (t *tlsSigner) Sign(r io.Reader, digest []byte, opts crypto.SignerOpts) (sig []byte, err error) {
	h := t.h
	if err := h.begin(context.Background()); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "sign with TLS key "+t.label)
	s, err := t.current()
	if err != nil {
		return nil, err
	}
	sig, err = s.Sign(r, digest, opts)
	if err != nil {
		return nil, fmt.Errorf("%w: sign with TLS key %s on token %s: %s", ErrUnavailable, t.label, h.cfg.TokenLabel, ckrName(err))
	}
	return sig, nil
}

// current returns the key in the HSM's current context, finding it again
// after a reconnect. Called with h.mu held shared.
func (t *tlsSigner) current() (crypto11.Signer, error) {
	h := t.h
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.signer != nil && t.ctx == h.ctx {
		return t.signer, nil
	}
	s, err := h.findSigner(t.label)
	if err != nil {
		return nil, h.keyError("find TLS key", t.label, err)
	}
	if s == nil {
		return nil, h.missingKey("TLS key", t.label)
	}
	if !samePublic(s.Public(), t.pub) {
		return nil, fmt.Errorf("%w: HSM TLS key %s on token %s (module %s) is not the key in use before; not using it",
			ErrUnavailable, t.label, h.cfg.TokenLabel, h.cfg.ModulePath)
	}
	t.ctx, t.signer = h.ctx, s
	return s, nil
}

// samePublic reports whether two public keys are equal.
func samePublic(a, b crypto.PublicKey) bool {
	switch k := a.(type) {
	case *ecdsa.PublicKey:
		return k.Equal(b)
	case *rsa.PublicKey:
		return k.Equal(b)
	}
	return false
}

// errNotTLSSigner is returned by TLSKeyAttributes for a signer TLSKey did
// not make.
var errNotTLSSigner = errors.New("not a TLS key of this HSM")

// TLSKeyAttributes reads the private half's CKA_SENSITIVE and
// CKA_EXTRACTABLE from the token (for tests and status).
func (h *HSM) TLSKeyAttributes(ctx context.Context, key crypto.Signer) (sensitive, extractable bool, err error) {
	t, ok := key.(*tlsSigner)
	if !ok || t.h != h {
		return false, false, errNotTLSSigner
	}
	if err := h.begin(ctx); err != nil {
		return false, false, err
	}
	defer h.mu.RUnlock()
	s, err := t.current()
	if err != nil {
		return false, false, err
	}
	a, err := h.ctx.GetAttributes(s, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable})
	if err != nil {
		return false, false, h.keyError("read attributes of TLS key", t.label, err)
	}
	get := func(t crypto11.AttributeType) bool {
		v := a[t]
		return v != nil && len(v.Value) == 1 && v.Value[0] != 0
	}
	return get(crypto11.CkaSensitive), get(crypto11.CkaExtractable), nil
}
