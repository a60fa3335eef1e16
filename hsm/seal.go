package hsm

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/asn1"
	"errors"
	"fmt"
	"math/big"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// Sealed is an envelope; callers store it as JSON. The field set may grow
// (key scheme).
type Sealed struct {
	KEK        string `json:"kek"`         // label/CKA_ID of the KEK that wrapped the DEK
	WrapNonce  []byte `json:"wrap_nonce"`  // 12-byte nonce of the HSM AES-GCM wrap of the DEK
	WrappedDEK []byte `json:"wrapped_dek"` // DEK encrypted by the KEK inside the HSM (with aad)
	Nonce      []byte `json:"nonce"`       // 12-byte nonce of the software AES-256-GCM
	Ciphertext []byte `json:"ciphertext"`  // plaintext sealed with the DEK (with aad)
}

// Seal encrypts plaintext under a fresh DEK (AES-256-GCM in Go) and wraps
// the DEK with the KEK in one HSM call. aad is bound to both layers.
func (h *HSM) Seal(ctx context.Context, plaintext, aad []byte) (s *Sealed, err error) {
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)

	kekLabel, kek := h.currentKEK()
	if kek == nil {
		return nil, fmt.Errorf("%w: KEK %s not loaded", ErrUnavailable, kekLabel)
	}

	dek := make([]byte, dekSize)
	defer clear(dek)
	nonce := make([]byte, gcmNonceSize)
	wrapNonce := make([]byte, gcmNonceSize)
	for _, b := range [][]byte{dek, nonce, wrapNonce} {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("seal: read random: %w", err)
		}
	}

	gcm, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	if len(nonce) != gcm.NonceSize() {
		return nil, fmt.Errorf("seal: GCM nonce size %d, want %d", gcm.NonceSize(), gcmNonceSize)
	}
	ct := gcm.Seal(nil, nonce, plaintext, aad)

	wrapped, err := h.wrapDEK(ctx, kekLabel, kek, wrapNonce, dek, aad)
	if err != nil {
		return nil, err
	}
	return &Sealed{KEK: kekLabel, WrapNonce: wrapNonce, WrappedDEK: wrapped, Nonce: nonce, Ciphertext: ct}, nil
}

// wrapDEK encrypts dek with the KEK in one HSM call (AES-GCM, aad bound).
func (h *HSM) wrapDEK(ctx context.Context, kekLabel string, kek *crypto11.SecretKey, wrapNonce, dek, aad []byte) ([]byte, error) {
	hsmGCM, err := kek.NewGCM()
	if err != nil {
		return nil, fmt.Errorf("%w: seal: KEK %s: %s", ErrUnavailable, kekLabel, ckrName(err))
	}
	if len(wrapNonce) != hsmGCM.NonceSize() {
		return nil, fmt.Errorf("%w: seal: KEK %s: GCM nonce size %d, want %d", ErrUnavailable, kekLabel, hsmGCM.NonceSize(), gcmNonceSize)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wrapped, err := hsmSeal(hsmGCM, wrapNonce, dek, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: seal: wrap DEK with KEK %s on token %s: %s", ErrUnavailable, kekLabel, h.cfg.TokenLabel, ckrName(err))
	}
	if len(wrapped) != dekSize+gcmTagSize {
		return nil, fmt.Errorf("%w: seal: wrap DEK with KEK %s: unexpected length %d", ErrUnavailable, kekLabel, len(wrapped))
	}
	return wrapped, nil
}

// hsmSeal calls crypto11's GCM Seal, which panics on any HSM error.
func hsmSeal(g cipher.AEAD, nonce, plaintext, aad []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, panicError(r)
		}
	}()
	return g.Seal(nil, nonce, plaintext, aad), nil
}

// hsmOpen calls crypto11's GCM Open; it does not panic today, but a
// recover keeps a future one from escaping.
func hsmOpen(g cipher.AEAD, nonce, ciphertext, aad []byte) (out []byte, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, panicError(r)
		}
	}()
	return g.Open(nil, nonce, ciphertext, aad)
}

// authFailure reports codes that unambiguously mean "does not authenticate".
func authFailure(err error) bool {
	return hasCKR(err, pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
		pkcs11.CKR_DATA_INVALID, pkcs11.CKR_DATA_LEN_RANGE)
}

// probeKEK checks that kek can wrap and unwrap a throwaway value.
func (h *HSM) probeKEK(kek *crypto11.SecretKey) error {
	g, err := kek.NewGCM()
	if err != nil {
		return err
	}
	nonce := make([]byte, gcmNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	probe := make([]byte, dekSize)
	ct, err := hsmSeal(g, nonce, probe, []byte("coffer-probe"))
	if err != nil {
		return err
	}
	pt, err := hsmOpen(g, nonce, ct, []byte("coffer-probe"))
	if err != nil {
		return err
	}
	if len(pt) != dekSize {
		return errors.New("probe round trip returned the wrong length")
	}
	return nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewGCM(b)
}

// Unseal unwraps the DEK in one HSM call and opens the ciphertext. The
// caller owns (and should zero) the returned plaintext.
func (h *HSM) Unseal(ctx context.Context, s *Sealed, aad []byte) (plaintext []byte, err error) {
	if err := checkEnvelope(s); err != nil {
		return nil, err
	}
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)

	dek, err := h.unwrapDEK(ctx, s, aad)
	defer clear(dek)
	if err != nil {
		return nil, err
	}
	gcm, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	pt, err := gcm.Open(nil, s.Nonce, s.Ciphertext, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrOpen, err)
	}
	if pt == nil {
		pt = []byte{}
	}
	return pt, nil
}

// checkEnvelope rejects an envelope of the wrong shape before any HSM call.
func checkEnvelope(s *Sealed) error {
	if s == nil {
		return fmt.Errorf("%w: no envelope", ErrOpen)
	}
	switch {
	case validateKeyLabel(s.KEK) != nil:
		return fmt.Errorf("%w: invalid KEK label", ErrOpen)
	case len(s.WrapNonce) != gcmNonceSize:
		return fmt.Errorf("%w: wrap nonce is %d bytes, want %d", ErrOpen, len(s.WrapNonce), gcmNonceSize)
	case len(s.Nonce) != gcmNonceSize:
		return fmt.Errorf("%w: nonce is %d bytes, want %d", ErrOpen, len(s.Nonce), gcmNonceSize)
	case len(s.WrappedDEK) != dekSize+gcmTagSize:
		return fmt.Errorf("%w: wrapped DEK is %d bytes, want %d", ErrOpen, len(s.WrappedDEK), dekSize+gcmTagSize)
	case len(s.Ciphertext) < gcmTagSize:
		return fmt.Errorf("%w: ciphertext is shorter than a GCM tag", ErrOpen)
	}
	return nil
}

// unwrapDEK decrypts s's DEK with the KEK that wrapped it, in one HSM call.
// Called with h.mu held shared; the caller clears the DEK.
func (h *HSM) unwrapDEK(ctx context.Context, s *Sealed, aad []byte) ([]byte, error) {
	kek, err := h.kek(s.KEK)
	if err != nil {
		return nil, err
	}
	hsmGCM, err := kek.NewGCM()
	if err != nil {
		return nil, fmt.Errorf("%w: unseal: KEK %s: %s", ErrUnavailable, s.KEK, ckrName(err))
	}
	if hsmGCM.NonceSize() != gcmNonceSize {
		return nil, fmt.Errorf("%w: unseal: KEK %s: GCM nonce size %d, want %d", ErrUnavailable, s.KEK, hsmGCM.NonceSize(), gcmNonceSize)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dek, err := hsmOpen(hsmGCM, s.WrapNonce, s.WrappedDEK, aad)
	if err != nil {
		clear(dek)
		if authFailure(err) {
			return nil, fmt.Errorf("%w: unwrap DEK with KEK %s: %s", ErrOpen, s.KEK, ckrName(err))
		}
		// SoftHSM 2.6 reports a bad GCM tag as CKR_GENERAL_ERROR, the same
		// code as a real fault. Tell them apart with a round trip through
		// the same key: if that works, the token is fine and the envelope
		// is not. This costs HSM calls only on the failure path.
		if hasCKR(err, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED) && h.probeKEK(kek) == nil {
			return nil, fmt.Errorf("%w: unwrap DEK with KEK %s: authentication failed", ErrOpen, s.KEK)
		}
		return nil, fmt.Errorf("%w: unseal: unwrap DEK with KEK %s on token %s: %s", ErrUnavailable, s.KEK, h.cfg.TokenLabel, ckrName(err))
	}
	if len(dek) != dekSize {
		clear(dek)
		return nil, fmt.Errorf("%w: unwrapped DEK has the wrong length", ErrOpen)
	}
	return dek, nil
}

func (h *HSM) cachedKEK(label string) *crypto11.SecretKey {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	return h.keks[label]
}

// kek returns the KEK with CKA_ID label, looking it up on the token (and
// caching it) when it is not the current one. Called with h.mu held shared.
func (h *HSM) kek(label string) (k *crypto11.SecretKey, err error) {
	if k := h.cachedKEK(label); k != nil {
		return k, nil
	}
	defer func() {
		if r := recover(); r != nil {
			k, err = nil, fmt.Errorf("%w: find KEK %s: %v", ErrUnavailable, label, panicError(r))
		}
	}()
	k, err = h.findKEK(label)
	if err != nil {
		return nil, h.keyError("find KEK", label, err)
	}
	if k == nil {
		return nil, fmt.Errorf("%w: unknown KEK %s", ErrOpen, label)
	}
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	if prev := h.keks[label]; prev != nil {
		return prev, nil
	}
	h.keks[label] = k
	return k, nil
}

// Sign signs a SHA-256 digest with the current signing key and returns r||s
// (64 bytes, the JWS ES256 form).
func (h *HSM) Sign(ctx context.Context, digest []byte) (sig []byte, err error) {
	if len(digest) != 32 {
		return nil, fmt.Errorf("sign: digest is %d bytes, want 32 (SHA-256)", len(digest))
	}
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	label, signer, _ := h.currentSigner()
	defer func() {
		if r := recover(); r != nil {
			sig, err = nil, fmt.Errorf("%w: sign with %s: %v", ErrUnavailable, label, panicError(r))
		}
	}()
	der, err := signer.Sign(rand.Reader, digest, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: sign with %s on token %s: %s", ErrUnavailable, label, h.cfg.TokenLabel, ckrName(err))
	}
	return derToRaw(der, 32)
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
