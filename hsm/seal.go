package hsm

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Sealed is an envelope; callers store it as JSON.
type Sealed struct {
	KEK string `json:"kek"` // label/CKA_ID of the KEK that wrapped the DEK (its version)
	// Scheme is how the DEK is wrapped: "aes-256-gcm" (also when empty,
	// as in records made before schemes were named) or
	// "rsa-3072-oaep-sha256".
	Scheme     string `json:"scheme,omitempty"`
	WrapNonce  []byte `json:"wrap_nonce"`  // aes-256-gcm or an intermediate key: the 12-byte nonce of the AES-GCM wrap; rsa: empty
	WrappedDEK []byte `json:"wrapped_dek"` // DEK encrypted by the KEK (aes-256-gcm: with aad), or by Intermediate (AES-256-GCM with aad)
	// Intermediate, when set, is the intermediate key that wraps the DEK,
	// itself wrapped by KEK in Scheme (intermediate.go).
	Intermediate *WrappedKey `json:"intermediate,omitempty"`
	Nonce        []byte      `json:"nonce"`      // 12-byte nonce of the software AES-256-GCM
	Ciphertext   []byte      `json:"ciphertext"` // plaintext sealed with the DEK (with aad)
}

// SealDirect is Seal with the DEK wrapped by the KEK itself, whatever the
// intermediate key mode: for envelopes kept outside coffer in a format of
// their own (the Kubernetes KMS ciphertext has no field for an
// intermediate key).
func (h *HSM) SealDirect(ctx context.Context, plaintext, aad []byte) (*Sealed, error) {
	return h.seal(ctx, plaintext, aad, false)
}

// Seal encrypts plaintext under a fresh DEK (AES-256-GCM in Go) and wraps
// the DEK with the current KEK: in one HSM call for an AES-GCM KEK, in
// software with the public half for an RSA-OAEP KEK. aad is bound to the
// payload (and, with AES-GCM, to the wrapped DEK too).
func (h *HSM) Seal(ctx context.Context, plaintext, aad []byte) (*Sealed, error) {
	return h.seal(ctx, plaintext, aad, true)
}

// seal is Seal; with mayIK false the DEK is wrapped by the KEK itself.
func (h *HSM) seal(ctx context.Context, plaintext, aad []byte, mayIK bool) (s *Sealed, err error) {
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
	for _, b := range [][]byte{dek, nonce} {
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

	out := &Sealed{KEK: kekLabel, Scheme: string(kek.scheme), Nonce: nonce, Ciphertext: ct}
	if err := h.wrapNew(ctx, kekLabel, kek, dek, aad, out, mayIK && h.useIK(kek)); err != nil {
		return nil, err
	}
	return out, nil
}

// wrapNew wraps dek for a new envelope under KEK k (label) into out:
// through the KEK's intermediate key when ik, else by the KEK itself.
func (h *HSM) wrapNew(ctx context.Context, label string, k *wrapKey, dek, aad []byte, out *Sealed, ik bool) error {
	if !ik {
		wrapNonce, wrapped, err := h.wrapDEK(ctx, k, dek, aad)
		if err != nil {
			return err
		}
		out.WrapNonce, out.WrappedDEK, out.Intermediate = wrapNonce, wrapped, nil
		return nil
	}
	cur, err := h.currentIK(ctx, label, k)
	if err != nil {
		return err
	}
	return h.withIK(ctx, label, k, cur.WrappedKey, true, func(ik []byte) error {
		nonce, wrapped, err := wrapUnderIK(ik, dek, aad)
		if err != nil {
			return fmt.Errorf("seal: wrap DEK with the intermediate key of KEK %s: %w", label, err)
		}
		w := cur.WrappedKey
		out.WrapNonce, out.WrappedDEK, out.Intermediate = nonce, wrapped, &w
		return nil
	})
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

func newGCM(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("aes: %w", err)
	}
	return cipher.NewGCM(b)
}

// Unseal unwraps the DEK in one HSM call, with the KEK and scheme the
// envelope names, and opens the ciphertext. The caller owns (and should
// zero) the returned plaintext.
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
	return openPayload(dek, s, aad)
}

// openPayload opens s's ciphertext with its DEK.
func openPayload(dek []byte, s *Sealed, aad []byte) ([]byte, error) {
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
