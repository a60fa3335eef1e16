package hsm

// Key rotation. Keys carry versioned labels (CKA_ID = CKA_LABEL =
// "<base>-<N>": coffer-kek-1, coffer-kek-2, ..., coffer-sig-1, ...). The
// current key of each kind is the highest version on the token: Open picks
// it, and a rotation creates version max+1 and makes it current. The token
// is the authority for which key is current because creating the key is
// the one step of a rotation that cannot be in the same transaction as the
// store; a crash right after it leaves the token ahead of the store, and
// the next start simply carries on with the new key.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// ErrKeyNotFound is returned (wrapped) when a key to destroy is not on the
// token or is not one of coffer's versioned keys.
var ErrKeyNotFound = errors.New("no such key on the HSM token")

// ErrKeyCurrent is returned (wrapped) when asked to destroy the current key.
var ErrKeyCurrent = errors.New("the key is current")

// KeyVersion describes one version of a KEK or signing key on the token.
type KeyVersion struct {
	Label   string
	Version int
	Current bool
	Scheme  string    // KEK or signing scheme of the key
	Public  PublicKey // signing keys only
}

// ParseKeyLabel splits a versioned label "<base>-<N>" (N a positive
// decimal without leading zeros).
func ParseKeyLabel(label string) (base string, version int, ok bool) {
	i := strings.LastIndexByte(label, '-')
	if i <= 0 || i == len(label)-1 {
		return "", 0, false
	}
	digits := label[i+1:]
	if digits[0] == '0' || len(digits) > 9 {
		return "", 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil || n < 1 || strconv.Itoa(n) != digits {
		return "", 0, false
	}
	return label[:i], n, true
}

// keyFamily matches the labels of one kind of key: the versions of the
// configured first label, or that label alone when it has no version.
type keyFamily struct{ first string }

// version returns label's version in the family, or 0 when it is not a
// member. An unversioned first label is version 1.
func (f keyFamily) version(label string) int {
	if label == f.first {
		if _, v, ok := ParseKeyLabel(label); ok {
			return v
		}
		return 1
	}
	fb, _, ok := ParseKeyLabel(f.first)
	if !ok {
		return 0
	}
	b, v, ok := ParseKeyLabel(label)
	if !ok || b != fb {
		return 0
	}
	return v
}

// next returns the label of version v+1.
func (f keyFamily) next(v int) (string, error) {
	base, _, ok := ParseKeyLabel(f.first)
	if !ok {
		return "", fmt.Errorf("HSM key label %s has no -N version suffix; rotation needs versioned labels such as %s", f.first, DefaultKEKLabel)
	}
	l := base + "-" + strconv.Itoa(v+1)
	if err := validateKeyLabel(l); err != nil {
		return "", err
	}
	return l, nil
}

func (h *HSM) kekFamily() keyFamily { return keyFamily{h.cfg.KEKLabel} }
func (h *HSM) sigFamily() keyFamily { return keyFamily{h.cfg.SigningKeyLabel} }

// currentKEK returns the KEK new seals use.
func (h *HSM) currentKEK() (string, *wrapKey) {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	return h.kekLabel, h.keks[h.kekLabel]
}

// CurrentKEK returns the label of the KEK new seals use.
func (h *HSM) CurrentKEK() string {
	l, _ := h.currentKEK()
	return l
}

// currentSigner returns the key new signatures are made with.
func (h *HSM) currentSigner() (string, crypto11.Signer, PublicKey) {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	return h.sigLabel, h.signer, h.pub
}

// cka returns a key's CKA_ID.
func (h *HSM) cka(key any) (string, error) {
	attrs, err := h.ctx.GetAttributes(key, []crypto11.AttributeType{crypto11.CkaId})
	if err != nil {
		return "", err
	}
	a := attrs[crypto11.CkaId]
	if a == nil {
		return "", nil
	}
	return string(a.Value), nil
}

// recoverTo turns a panic in crypto11 into an ErrUnavailable error.
func (h *HSM) recoverTo(err *error, what string) {
	if r := recover(); r != nil {
		*err = fmt.Errorf("%w: %s on HSM token %s: %v", ErrUnavailable, what, h.cfg.TokenLabel, panicError(r))
	}
}

// KEKs lists the KEK versions on the token, lowest first.
func (h *HSM) KEKs(ctx context.Context) (out []KeyVersion, err error) {
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "list KEKs")
	keks, err := h.listKEKs()
	if err != nil {
		return nil, h.keyError("list KEKs", h.cfg.KEKLabel, err)
	}
	cur := h.CurrentKEK()
	for _, k := range keks {
		out = append(out, KeyVersion{Label: k.label, Version: k.version, Current: k.label == cur, Scheme: string(k.key.scheme)})
	}
	return out, nil
}

// RotateKEK creates the next KEK version in the scheme chosen for the token
// (an AES-256 key or an RSA-3072 key pair; sensitive, not extractable),
// checks it with a wrap/unwrap round trip and makes it
// current: Seal uses it from then on. Envelopes sealed before stay
// openable with their KEK until Rewrap moves them. It returns the new
// label.
func (h *HSM) RotateKEK(ctx context.Context) (label string, err error) {
	if err := h.begin(ctx); err != nil {
		return "", err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "rotate KEK")
	h.rotMu.Lock()
	defer h.rotMu.Unlock()

	keks, err := h.listKEKs()
	if err != nil {
		return "", h.keyError("list KEKs", h.cfg.KEKLabel, err)
	}
	top := h.kekFamily().version(h.CurrentKEK())
	for _, k := range keks {
		top = max(top, k.version)
	}
	next, err := h.kekFamily().next(top)
	if err != nil {
		return "", err
	}
	if err := ctx.Err(); err != nil {
		return "", err
	}
	kek, err := h.generateKEK(next)
	if err != nil {
		return "", h.keyError("create KEK", next, err)
	}
	if err := h.checkKEK(kek); err != nil {
		_ = kek.deleteKey()
		return "", err
	}
	if err := h.probeKEK(kek); err != nil {
		_ = kek.deleteKey()
		return "", h.keyError("test KEK", next, err)
	}
	h.keysMu.Lock()
	h.kekLabel, h.keks[next] = next, kek
	h.keysMu.Unlock()
	return next, nil
}

// Rewrap moves an envelope to the current KEK, in the current KEK's
// scheme: the DEK is unwrapped with the KEK named in s and wrapped with
// the current one (an HSM call each for AES-GCM; for RSA-OAEP the wrap is
// in software), the DEK zeroed after. Nonce and Ciphertext are returned
// unchanged; the payload is decrypted only to check aad when the old
// scheme (RSA-OAEP) does not bind it to the wrapped DEK. An envelope
// already under the current KEK comes back as an equal copy. Errors are
// ErrOpen (s does not authenticate with aad, or its KEK is gone) or
// ErrUnavailable.
func (h *HSM) Rewrap(ctx context.Context, s *Sealed, aad []byte) (out *Sealed, err error) {
	if err := checkEnvelope(s); err != nil {
		return nil, err
	}
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "rewrap DEK")

	label, kek := h.currentKEK()
	if kek == nil {
		return nil, fmt.Errorf("%w: KEK %s not loaded", ErrUnavailable, label)
	}
	cp := &Sealed{
		KEK: s.KEK, Scheme: s.Scheme, WrapNonce: slices.Clone(s.WrapNonce), WrappedDEK: slices.Clone(s.WrappedDEK),
		Nonce: slices.Clone(s.Nonce), Ciphertext: slices.Clone(s.Ciphertext),
	}
	if s.Intermediate != nil {
		cp.Intermediate = &WrappedKey{WrapNonce: slices.Clone(s.Intermediate.WrapNonce), Wrapped: slices.Clone(s.Intermediate.Wrapped)}
	}
	if s.KEK == label && (s.Intermediate != nil) == h.useIK(kek) {
		return cp, nil
	}
	dek, err := h.unwrapDEK(ctx, s, aad)
	defer clear(dek)
	if err != nil {
		return nil, err
	}
	if s.Intermediate == nil && s.scheme() == KEKRSAOAEP {
		pt, err := openPayload(dek, s, aad)
		clear(pt)
		if err != nil {
			return nil, err
		}
	}
	if err := h.wrapNew(ctx, label, kek, dek, aad, cp, h.useIK(kek)); err != nil {
		return nil, err
	}
	cp.KEK, cp.Scheme = label, string(kek.scheme)
	return cp, nil
}

// DestroyKEK destroys an old KEK version on the token. Every envelope still
// wrapped by it becomes unopenable: the caller must have moved them all
// (Rewrap). The current KEK is refused (ErrKeyCurrent); a label that is not
// a KEK version on the token is ErrKeyNotFound.
func (h *HSM) DestroyKEK(ctx context.Context, label string) (err error) {
	if err := h.begin(ctx); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "destroy KEK")
	h.rotMu.Lock()
	defer h.rotMu.Unlock()

	if label == h.CurrentKEK() {
		return fmt.Errorf("%w: KEK %s is the current KEK", ErrKeyCurrent, label)
	}
	if validateKeyLabel(label) != nil || h.kekFamily().version(label) == 0 {
		return fmt.Errorf("%w: %q is not a KEK label", ErrKeyNotFound, label)
	}
	a := keyAttrs(label)
	_ = a.Set(crypto11.CkaKeyType, pkcs11.CKK_AES)
	keys, err := h.ctx.FindKeysWithAttributes(a)
	if err != nil {
		return h.keyError("find KEK", label, err)
	}
	r := keyAttrs(label)
	_ = r.Set(crypto11.CkaKeyType, pkcs11.CKK_RSA)
	pairs, err := h.ctx.FindKeyPairsWithAttributes(r)
	if err != nil {
		return h.keyError("find KEK", label, err)
	}
	if len(keys) == 0 && len(pairs) == 0 {
		return fmt.Errorf("%w: KEK %s", ErrKeyNotFound, label)
	}
	h.keysMu.Lock()
	delete(h.keks, label)
	h.keysMu.Unlock()
	// Its intermediate keys open nothing any more: wipe them.
	h.ik.dropKEK(label, false)
	for _, k := range keys {
		if err := k.Delete(); err != nil {
			return h.keyError("destroy KEK", label, err)
		}
	}
	for _, p := range pairs {
		if err := p.Delete(); err != nil {
			return h.keyError("destroy KEK", label, err)
		}
	}
	return nil
}

// SigningKeys lists the signing key versions on the token with their
// public keys, lowest first.
func (h *HSM) SigningKeys(ctx context.Context) (out []KeyVersion, err error) {
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "list signing keys")
	ss, err := h.listSigners()
	if err != nil {
		return nil, h.keyError("list signing keys", h.cfg.SigningKeyLabel, err)
	}
	cur, _, _ := h.currentSigner()
	for _, s := range ss {
		pub, err := h.checkSigner(s.label, s.signer)
		if err != nil {
			return nil, err
		}
		out = append(out, KeyVersion{Label: s.label, Version: s.version, Current: s.label == cur, Scheme: string(SigningSchemeOf(pub)), Public: pub})
	}
	return out, nil
}

// RotateSigningKey creates the next signing key version in the scheme
// chosen for the token (EC P-256 or RSA-3072; the private half sensitive
// and not extractable), checks that its signatures verify and makes it
// current: Sign and SigningPublicKey use it from then on.
func (h *HSM) RotateSigningKey(ctx context.Context) (out KeyVersion, err error) {
	if err := h.begin(ctx); err != nil {
		return KeyVersion{}, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "rotate signing key")
	h.rotMu.Lock()
	defer h.rotMu.Unlock()

	ss, err := h.listSigners()
	if err != nil {
		return KeyVersion{}, h.keyError("list signing keys", h.cfg.SigningKeyLabel, err)
	}
	cur, _, _ := h.currentSigner()
	top := h.sigFamily().version(cur)
	for _, s := range ss {
		top = max(top, s.version)
	}
	next, err := h.sigFamily().next(top)
	if err != nil {
		return KeyVersion{}, err
	}
	if err := ctx.Err(); err != nil {
		return KeyVersion{}, err
	}
	signer, err := h.generateSigner(next)
	if err != nil {
		return KeyVersion{}, h.keyError("create signing key", next, err)
	}
	pub, err := h.checkSigner(next, signer)
	if err == nil {
		err = testSigner(signer, pub)
	}
	if err != nil {
		_ = signer.Delete()
		return KeyVersion{}, fmt.Errorf("%w: new signing key %s: %v", ErrUnavailable, next, err)
	}
	h.keysMu.Lock()
	h.sigLabel, h.signer, h.pub = next, signer, pub
	h.keysMu.Unlock()
	return KeyVersion{Label: next, Version: top + 1, Current: true, Scheme: string(SigningSchemeOf(pub)), Public: pub}, nil
}

// DestroySigningKey destroys an old signing key version (both halves) on
// the token. The current key is refused (ErrKeyCurrent); a label that is
// not a signing key version on the token is ErrKeyNotFound.
func (h *HSM) DestroySigningKey(ctx context.Context, label string) (err error) {
	if err := h.begin(ctx); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "destroy signing key")
	h.rotMu.Lock()
	defer h.rotMu.Unlock()

	if cur, _, _ := h.currentSigner(); label == cur {
		return fmt.Errorf("%w: signing key %s is the current signing key", ErrKeyCurrent, label)
	}
	if validateKeyLabel(label) != nil || h.sigFamily().version(label) == 0 {
		return fmt.Errorf("%w: %q is not a signing key label", ErrKeyNotFound, label)
	}
	signers, err := h.ctx.FindKeyPairsWithAttributes(keyAttrs(label))
	if err != nil {
		return h.keyError("find signing key", label, err)
	}
	if len(signers) == 0 {
		return fmt.Errorf("%w: signing key %s", ErrKeyNotFound, label)
	}
	for _, s := range signers {
		if err := s.Delete(); err != nil {
			return h.keyError("destroy signing key", label, err)
		}
	}
	return nil
}
