package hsm

// Kubernetes service-account signing keys: a family of their own
// ("coffer-k8s-sa-1", "coffer-k8s-sa-2", ...), apart from coffer's token
// signing keys, so that a token one of them signed can never verify as the
// other's. kube-apiserver accepts RS256 and ES256/384/512 only (not PS256):
// a key is EC P-256 (ES256) where the token signs P-256 ECDSA, else
// RSA-3072 signing RSASSA-PKCS1-v1_5 with SHA-256 (RS256). As every coffer
// key, the private half is sensitive, not extractable and may only sign.
// The newest version is the one that signs; which old versions are still
// published is the daemon's decision (it records when each was retired).

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
	"sync"

	"github.com/eclipse-keypont/crypto11"
)

// K8sKeyBase is the label (and CKA_ID) base of the Kubernetes
// service-account signing keys; version N is "coffer-k8s-sa-N".
const K8sKeyBase = "coffer-k8s-sa"

// JWS algorithms of Kubernetes service-account signing keys.
const (
	AlgES256 = "ES256"
	AlgRS256 = "RS256"
)

// minK8sRSABits is the smallest RSA key an existing K8s key may be.
const minK8sRSABits = 2048

// K8sKey is one version of the Kubernetes service-account signing key.
type K8sKey struct {
	Label   string
	Version int
	Current bool      // the newest version: the one that signs
	Alg     string    // AlgES256 or AlgRS256
	Public  PublicKey // *ecdsa.PublicKey or *rsa.PublicKey
}

// k8sKeys caches the token objects of the K8s keys, by label. The cache
// belongs to one crypto11 context: a reconnect replaces h.ctx, and the
// next lookup finds the keys again in the new one.
type k8sKeys struct {
	mu   sync.Mutex
	ctx  p11
	byID map[string]crypto11.Signer
}

func k8sFamily() keyFamily { return keyFamily{K8sKeyBase + "-1"} }

// K8sAlgOf returns the JWS algorithm a K8s key's public half signs with,
// or "" for a key kube-apiserver would not accept.
func K8sAlgOf(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return AlgES256
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= minK8sRSABits {
			return AlgRS256
		}
	}
	return ""
}

// k8sAlg is the algorithm of the K8s keys this token creates.
func (h *HSM) k8sAlg() string {
	if h.schemes.Signing == SignES256 {
		return AlgES256
	}
	return AlgRS256
}

// listK8sKeys returns the K8s key versions on the token, lowest first,
// and fills the cache. The caller holds h.mu shared.
func (h *HSM) listK8sKeys() ([]K8sKey, map[string]crypto11.Signer, error) {
	pairs, err := h.ctx.FindKeyPairsWithAttributes(crypto11.NewAttributeSet())
	if err != nil {
		return nil, nil, err
	}
	f := k8sFamily()
	byID := map[string]crypto11.Signer{}
	var out []K8sKey
	for _, p := range pairs {
		id, err := h.cka(p)
		if err != nil {
			return nil, nil, err
		}
		v := f.version(id)
		if v == 0 || byID[id] != nil {
			continue
		}
		pub := p.Public()
		alg := K8sAlgOf(pub)
		if alg == "" {
			return nil, nil, fmt.Errorf("HSM key %s on token %s is neither an EC P-256 key nor an RSA key of at least %d bits", id, h.cfg.TokenLabel, minK8sRSABits)
		}
		byID[id] = p
		out = append(out, K8sKey{Label: id, Version: v, Alg: alg, Public: pub.(PublicKey)})
	}
	slices.SortFunc(out, func(a, b K8sKey) int { return a.Version - b.Version })
	if len(out) > 0 {
		out[len(out)-1].Current = true
	}
	h.k8s.mu.Lock()
	h.k8s.ctx, h.k8s.byID = h.ctx, byID
	h.k8s.mu.Unlock()
	return out, byID, nil
}

// k8sSigner returns the token object of K8s key label. The caller holds
// h.mu shared.
func (h *HSM) k8sSigner(label string) (crypto11.Signer, error) {
	h.k8s.mu.Lock()
	s, fresh := h.k8s.byID[label], h.k8s.ctx == h.ctx
	h.k8s.mu.Unlock()
	if fresh && s != nil {
		return s, nil
	}
	_, byID, err := h.listK8sKeys()
	if err != nil {
		return nil, h.keyError("find Kubernetes signing key", label, err)
	}
	if s = byID[label]; s == nil {
		return nil, fmt.Errorf("%w: Kubernetes signing key %s", ErrKeyNotFound, label)
	}
	return s, nil
}

// K8sKeys lists the Kubernetes service-account signing key versions on
// the token, lowest first; the last is current. None is not an error.
func (h *HSM) K8sKeys(ctx context.Context) (out []K8sKey, err error) {
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "list Kubernetes signing keys")
	out, _, err = h.listK8sKeys()
	if err != nil {
		return nil, h.keyError("list Kubernetes signing keys", K8sKeyBase, err)
	}
	return out, nil
}

// CreateK8sKey creates the next Kubernetes service-account signing key
// version (version 1 on a token that has none), checks that its
// signatures verify, and returns it: being the newest, it is current.
func (h *HSM) CreateK8sKey(ctx context.Context) (out K8sKey, err error) {
	if err := h.begin(ctx); err != nil {
		return K8sKey{}, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "create Kubernetes signing key")
	h.rotMu.Lock()
	defer h.rotMu.Unlock()

	keys, _, err := h.listK8sKeys()
	if err != nil {
		return K8sKey{}, h.keyError("list Kubernetes signing keys", K8sKeyBase, err)
	}
	top := 0
	for _, k := range keys {
		top = max(top, k.Version)
	}
	next, err := k8sFamily().next(top)
	if err != nil {
		return K8sKey{}, err
	}
	if err := ctx.Err(); err != nil {
		return K8sKey{}, err
	}
	return h.generateK8sKey(next, top+1, h.k8sAlg())
}

// generateK8sKey creates K8s key label in alg and tests it. The caller
// holds h.mu shared and h.rotMu.
func (h *HSM) generateK8sKey(label string, version int, alg string) (K8sKey, error) {
	var signer crypto11.Signer
	var err error
	switch alg {
	case AlgES256:
		pub := keyAttrs(label)
		_ = pub.Set(crypto11.CkaLabel, []byte(label))
		priv := pub.Copy()
		setAll(priv, attrs{
			{crypto11.CkaPrivate, true},
			{crypto11.CkaSensitive, true},
			{crypto11.CkaExtractable, false},
		})
		signer, err = h.ctx.GenerateECDSAKeyPairWithAttributes(pub, priv, elliptic.P256())
	case AlgRS256:
		signer, err = h.generateRSAKeyPair(label, rsaSignOnly)
	default:
		return K8sKey{}, fmt.Errorf("the Kubernetes signing key algorithm %q is not ES256 or RS256", alg)
	}
	if err != nil {
		return K8sKey{}, h.keyError("create Kubernetes signing key", label, err)
	}
	pub := signer.Public()
	if got := K8sAlgOf(pub); got != alg {
		_ = signer.Delete()
		return K8sKey{}, fmt.Errorf("%w: new Kubernetes signing key %s is not an %s key", ErrUnavailable, label, alg)
	}
	if err := testK8sSigner(signer, pub); err != nil {
		_ = signer.Delete()
		return K8sKey{}, fmt.Errorf("%w: new Kubernetes signing key %s: %v", ErrUnavailable, label, err)
	}
	h.k8s.mu.Lock()
	if h.k8s.ctx == h.ctx && h.k8s.byID != nil {
		h.k8s.byID[label] = signer
	}
	h.k8s.mu.Unlock()
	return K8sKey{Label: label, Version: version, Current: true, Alg: alg, Public: pub.(PublicKey)}, nil
}

// K8sSign signs a SHA-256 digest with Kubernetes signing key label and
// returns the signature in its JWS form: r||s (64 bytes) for ES256, the
// RSASSA-PKCS1-v1_5 signature for RS256.
func (h *HSM) K8sSign(ctx context.Context, label string, digest []byte) (sig []byte, err error) {
	if len(digest) != sha256.Size {
		return nil, fmt.Errorf("sign: digest is %d bytes, want 32 (SHA-256)", len(digest))
	}
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "sign with "+label)
	signer, err := h.k8sSigner(label)
	if err != nil {
		return nil, err
	}
	sig, err = k8sSignWith(signer, signer.Public(), digest)
	if err != nil {
		return nil, fmt.Errorf("%w: sign with %s on token %s: %s", ErrUnavailable, label, h.cfg.TokenLabel, ckrName(err))
	}
	return sig, nil
}

// DestroyK8sKey destroys an old Kubernetes signing key version (both
// halves). The current (newest) version is refused (ErrKeyCurrent); a
// label that is not a K8s key version on the token is ErrKeyNotFound.
func (h *HSM) DestroyK8sKey(ctx context.Context, label string) (err error) {
	if err := h.begin(ctx); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "destroy Kubernetes signing key")
	h.rotMu.Lock()
	defer h.rotMu.Unlock()

	if validateKeyLabel(label) != nil || k8sFamily().version(label) == 0 {
		return fmt.Errorf("%w: %q is not a Kubernetes signing key label", ErrKeyNotFound, label)
	}
	keys, byID, err := h.listK8sKeys()
	if err != nil {
		return h.keyError("list Kubernetes signing keys", K8sKeyBase, err)
	}
	if byID[label] == nil {
		return fmt.Errorf("%w: Kubernetes signing key %s", ErrKeyNotFound, label)
	}
	if keys[len(keys)-1].Label == label {
		return fmt.Errorf("%w: Kubernetes signing key %s is the current one", ErrKeyCurrent, label)
	}
	pairs, err := h.ctx.FindKeyPairsWithAttributes(keyAttrs(label))
	if err != nil {
		return h.keyError("find Kubernetes signing key", label, err)
	}
	h.k8s.mu.Lock()
	delete(h.k8s.byID, label)
	h.k8s.mu.Unlock()
	for _, p := range pairs {
		if err := p.Delete(); err != nil {
			return h.keyError("destroy Kubernetes signing key", label, err)
		}
	}
	return nil
}

// k8sSignWith signs digest with signer in the algorithm of pub.
func k8sSignWith(signer crypto.Signer, pub crypto.PublicKey, digest []byte) ([]byte, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		der, err := signer.Sign(rand.Reader, digest, crypto.SHA256)
		if err != nil {
			return nil, err
		}
		return derToRaw(der, 32)
	case *rsa.PublicKey:
		sig, err := signer.Sign(rand.Reader, digest, crypto.SHA256) // PKCS #1 v1.5
		if err != nil {
			return nil, err
		}
		if len(sig) != k.Size() {
			return nil, fmt.Errorf("sign: RSA signature from HSM is %d bytes, want %d", len(sig), k.Size())
		}
		return sig, nil
	}
	return nil, errors.New("sign: unsupported Kubernetes signing key")
}

// VerifyK8s checks a signature in the JWS form K8sSign returns.
func VerifyK8s(pub crypto.PublicKey, digest, sig []byte) bool {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		return Verify(k, digest, sig)
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(k, crypto.SHA256, digest, sig) == nil
	}
	return false
}

func testK8sSigner(signer crypto11.Signer, pub crypto.PublicKey) error {
	return testSignVerify(
		func(d []byte) ([]byte, error) { return k8sSignWith(signer, pub, d) },
		func(d, sig []byte) bool { return VerifyK8s(pub, d, sig) })
}
