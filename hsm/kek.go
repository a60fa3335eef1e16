package hsm

// KEKs of both schemes. A KEK version is either an AES-256 secret key
// (aes-256-gcm: the token wraps and unwraps DEKs with AES-GCM, binding the
// record's additional data too) or an RSA-3072 key pair (rsa-3072-oaep-
// sha256: the DEK is encrypted in software to the public half, which
// needs no HSM call, and only the token's private half, which may only
// decrypt, gets it back). Open creates the scheme ChooseSchemes picked
// for the token; the scheme of an existing version is its key type, so a
// store can move between schemes one rotation at a time, and every
// envelope names the scheme that wrapped its DEK.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// rsaKEKSize is the size in bytes of an RSA-3072 KEK's modulus, and of
// every DEK it wraps.
const rsaKEKSize = rsaBits / 8

// oaepSHA256 is RSA-OAEP with SHA-256 (hash and MGF1) and no label.
var oaepSHA256 = &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256}

// wrapKey is one KEK version as this HSM's crypto11 context sees it.
type wrapKey struct {
	label  string
	scheme KEKScheme
	aes    *crypto11.SecretKey // aes-256-gcm
	dec    crypto.Decrypter    // rsa-3072-oaep-sha256: the private half, in the token
	pub    *rsa.PublicKey      // rsa-3072-oaep-sha256: the public half, in memory
}

// object is the token object whose attributes describe the key.
func (k *wrapKey) object() any {
	if k.aes != nil {
		return k.aes
	}
	return k.dec
}

// deleteKey destroys the key on the token (both halves of a key pair).
func (k *wrapKey) deleteKey() error {
	if k.aes != nil {
		return k.aes.Delete()
	}
	if d, ok := k.dec.(interface{ Delete() error }); ok {
		return d.Delete()
	}
	return errors.New("the key cannot be deleted")
}

// scheme returns the scheme that wrapped s's DEK; records from before
// schemes were named are aes-256-gcm.
func (s *Sealed) scheme() KEKScheme {
	if s.Scheme == "" {
		return KEKAESGCM
	}
	return KEKScheme(s.Scheme)
}

// rsaKEK makes a wrapKey of a key pair found by CKA_ID.
func rsaKEK(label string, s crypto11.Signer) (*wrapKey, error) {
	pub, ok := s.Public().(*rsa.PublicKey)
	dec, isDec := s.(crypto.Decrypter)
	if !ok || !isDec {
		return nil, fmt.Errorf("KEK %s is a key pair but not an RSA key that can decrypt", label)
	}
	return &wrapKey{label: label, scheme: KEKRSAOAEP, dec: dec, pub: pub}, nil
}

// findKEK returns the KEK whose CKA_ID is label, of either scheme (the
// token's chosen one looked up first), or nil if there is none.
func (h *HSM) findKEK(label string) (*wrapKey, error) {
	order := []KEKScheme{KEKAESGCM, KEKRSAOAEP}
	if h.schemes.KEK == KEKRSAOAEP {
		slices.Reverse(order)
	}
	for _, sc := range order {
		a := keyAttrs(label)
		switch sc {
		case KEKAESGCM:
			_ = a.Set(crypto11.CkaKeyType, pkcs11.CKK_AES)
			keys, err := h.ctx.FindKeysWithAttributes(a)
			if err != nil {
				return nil, err
			}
			if len(keys) > 0 {
				return &wrapKey{label: label, scheme: KEKAESGCM, aes: keys[0]}, nil
			}
		case KEKRSAOAEP:
			_ = a.Set(crypto11.CkaKeyType, pkcs11.CKK_RSA)
			pairs, err := h.ctx.FindKeyPairsWithAttributes(a)
			if err != nil {
				return nil, err
			}
			if len(pairs) > 0 {
				return rsaKEK(label, pairs[0])
			}
		}
	}
	return nil, nil
}

type tokenKEK struct {
	label   string
	version int
	key     *wrapKey
}

// listKEKs returns the KEK versions on the token, of both schemes, lowest
// first. A label held by several objects is listed once (its first
// object, AES keys before key pairs).
func (h *HSM) listKEKs() ([]tokenKEK, error) {
	a := crypto11.NewAttributeSet()
	_ = a.Set(crypto11.CkaKeyType, pkcs11.CKK_AES)
	keys, err := h.ctx.FindKeysWithAttributes(a)
	if err != nil {
		return nil, err
	}
	r := crypto11.NewAttributeSet()
	_ = r.Set(crypto11.CkaKeyType, pkcs11.CKK_RSA)
	pairs, err := h.ctx.FindKeyPairsWithAttributes(r)
	if err != nil {
		return nil, err
	}
	f := h.kekFamily()
	var out []tokenKEK
	seen := map[string]bool{}
	add := func(obj any, mk func(id string) (*wrapKey, error)) error {
		id, err := h.cka(obj)
		if err != nil {
			return err
		}
		if v := f.version(id); v > 0 && !seen[id] {
			k, err := mk(id)
			if err != nil {
				return err
			}
			seen[id] = true
			out = append(out, tokenKEK{id, v, k})
		}
		return nil
	}
	for _, k := range keys {
		if err := add(k, func(id string) (*wrapKey, error) { return &wrapKey{label: id, scheme: KEKAESGCM, aes: k}, nil }); err != nil {
			return nil, err
		}
	}
	for _, p := range pairs {
		if err := add(p, func(id string) (*wrapKey, error) { return rsaKEK(id, p) }); err != nil {
			return nil, err
		}
	}
	slices.SortFunc(out, func(a, b tokenKEK) int { return a.version - b.version })
	return out, nil
}

// findCurrentKEK returns the highest KEK version on the token, or nil.
func (h *HSM) findCurrentKEK() (*wrapKey, error) {
	keks, err := h.listKEKs()
	if err != nil || len(keks) == 0 {
		return nil, err
	}
	return keks[len(keks)-1].key, nil
}

// generateKEK creates KEK label in the scheme chosen for the token: an
// AES-256 key, or an RSA-3072 key pair whose private half may only
// decrypt. Both are sensitive and never extractable.
func (h *HSM) generateKEK(label string) (*wrapKey, error) {
	if h.schemes.KEK == KEKRSAOAEP {
		kp, err := h.generateRSAKeyPair(label, rsaDecryptOnly)
		if err != nil {
			return nil, err
		}
		return rsaKEK(label, kp)
	}
	a := keyAttrs(label)
	setAll(a, attrs{
		{crypto11.CkaLabel, []byte(label)},
		{crypto11.CkaToken, true},
		{crypto11.CkaPrivate, true},
		{crypto11.CkaSensitive, true},
		{crypto11.CkaExtractable, false},
		{crypto11.CkaEncrypt, true},
		{crypto11.CkaDecrypt, true},
		{crypto11.CkaWrap, false},
		{crypto11.CkaUnwrap, false},
	})
	k, err := h.ctx.GenerateSecretKeyWithAttributes(a, dekSize*8, crypto11.CipherAES)
	if err != nil {
		return nil, err
	}
	return &wrapKey{label: label, scheme: KEKAESGCM, aes: k}, nil
}

type attrs []struct {
	t crypto11.AttributeType
	v any
}

func setAll(a crypto11.AttributeSet, as attrs) {
	for _, s := range as {
		_ = a.Set(s.t, s.v)
	}
}

// checkKEK refuses a KEK that is not a sensitive, non-extractable AES-256
// key or RSA-3072 key pair whose private half may decrypt (someone may
// have created an object with our CKA_ID by hand).
func (h *HSM) checkKEK(k *wrapKey) error {
	want := []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable}
	if k.scheme == KEKAESGCM {
		want = append(want, crypto11.CkaValueLen)
	} else {
		want = append(want, crypto11.CkaDecrypt)
	}
	at, err := h.ctx.GetAttributes(k.object(), want)
	if err != nil {
		return h.keyError("read attributes of KEK", k.label, err)
	}
	isTrue := func(t crypto11.AttributeType) bool {
		a := at[t]
		return a != nil && len(a.Value) == 1 && a.Value[0] != 0
	}
	if !isTrue(crypto11.CkaSensitive) || isTrue(crypto11.CkaExtractable) {
		return fmt.Errorf("HSM KEK %s on token %s is not sensitive and non-extractable", k.label, h.cfg.TokenLabel)
	}
	switch k.scheme {
	case KEKAESGCM:
		vl := at[crypto11.CkaValueLen]
		if vl == nil || len(vl.Value) == 0 || bytesToUint(vl.Value) != dekSize {
			return fmt.Errorf("HSM KEK %s on token %s is not an AES-256 key", k.label, h.cfg.TokenLabel)
		}
	case KEKRSAOAEP:
		if k.pub.N.BitLen() != rsaBits || !isTrue(crypto11.CkaDecrypt) {
			return fmt.Errorf("HSM KEK %s on token %s is not an RSA-%d key pair that may decrypt", k.label, h.cfg.TokenLabel, rsaBits)
		}
	}
	return nil
}

// probeKEK checks that k can wrap and unwrap a throwaway value.
func (h *HSM) probeKEK(k *wrapKey) error {
	probe := make([]byte, dekSize)
	if _, err := rand.Read(probe); err != nil {
		return err
	}
	aad := []byte("coffer-probe")
	nonce, wrapped, err := h.wrapWith(k, probe, aad)
	if err != nil {
		return err
	}
	pt, err := h.unwrapWith(k, nonce, wrapped, aad)
	defer clear(pt)
	if err != nil {
		return err
	}
	if string(pt) != string(probe) {
		return errors.New("probe round trip returned other bytes")
	}
	return nil
}

// wrapWith encrypts dek with k: for AES-GCM in one HSM call under a fresh
// nonce with aad bound, for RSA-OAEP in software with the public half
// (no nonce; aad is bound by the payload's own AES-GCM layer). Errors are
// raw (crypto11 or crypto/rsa); the caller names them.
func (h *HSM) wrapWith(k *wrapKey, dek, aad []byte) (nonce, wrapped []byte, err error) {
	if k.scheme == KEKRSAOAEP {
		wrapped, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, k.pub, dek, nil)
		return nil, wrapped, err
	}
	nonce = make([]byte, gcmNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, err
	}
	g, err := k.aes.NewGCM()
	if err != nil {
		return nil, nil, err
	}
	if g.NonceSize() != gcmNonceSize {
		return nil, nil, fmt.Errorf("GCM nonce size %d, want %d", g.NonceSize(), gcmNonceSize)
	}
	wrapped, err = hsmSeal(g, nonce, dek, aad)
	return nonce, wrapped, err
}

// unwrapWith decrypts a wrapped DEK with k in one HSM call. Errors are raw.
func (h *HSM) unwrapWith(k *wrapKey, nonce, wrapped, aad []byte) (dek []byte, err error) {
	if k.scheme == KEKRSAOAEP {
		defer func() {
			if r := recover(); r != nil {
				dek, err = nil, panicError(r)
			}
		}()
		return k.dec.Decrypt(rand.Reader, wrapped, oaepSHA256)
	}
	g, err := k.aes.NewGCM()
	if err != nil {
		return nil, err
	}
	if g.NonceSize() != gcmNonceSize {
		return nil, fmt.Errorf("GCM nonce size %d, want %d", g.NonceSize(), gcmNonceSize)
	}
	return hsmOpen(g, nonce, wrapped, aad)
}

// wrapDEK wraps dek with the KEK k for a new envelope.
func (h *HSM) wrapDEK(ctx context.Context, k *wrapKey, dek, aad []byte) (nonce, wrapped []byte, err error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	nonce, wrapped, err = h.wrapWith(k, dek, aad)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: seal: wrap DEK with KEK %s on token %s: %s", ErrUnavailable, k.label, h.cfg.TokenLabel, ckrName(err))
	}
	if want := wrappedLen(k.scheme); len(wrapped) != want {
		return nil, nil, fmt.Errorf("%w: seal: wrap DEK with KEK %s: %d bytes, want %d", ErrUnavailable, k.label, len(wrapped), want)
	}
	return nonce, wrapped, nil
}

// wrappedLen is the size of a wrapped DEK in scheme.
func wrappedLen(s KEKScheme) int {
	if s == KEKRSAOAEP {
		return rsaKEKSize
	}
	return dekSize + gcmTagSize
}

// checkEnvelope rejects an envelope of the wrong shape before any HSM call.
func checkEnvelope(s *Sealed) error {
	if s == nil {
		return fmt.Errorf("%w: no envelope", ErrOpen)
	}
	sc := s.scheme()
	switch {
	case sc != KEKAESGCM && sc != KEKRSAOAEP:
		return fmt.Errorf("%w: unknown KEK scheme %q", ErrOpen, s.Scheme)
	case validateKeyLabel(s.KEK) != nil:
		return fmt.Errorf("%w: invalid KEK label", ErrOpen)
	case s.Intermediate != nil:
		// The DEK is wrapped under the intermediate key (AES-256-GCM),
		// which the KEK wraps in its scheme.
		if err := checkWrapped(sc, *s.Intermediate); err != nil {
			return fmt.Errorf("intermediate key: %w", err)
		}
		switch {
		case len(s.WrapNonce) != gcmNonceSize:
			return fmt.Errorf("%w: wrap nonce is %d bytes, want %d", ErrOpen, len(s.WrapNonce), gcmNonceSize)
		case len(s.WrappedDEK) != ikWrappedLen:
			return fmt.Errorf("%w: wrapped DEK is %d bytes, want %d", ErrOpen, len(s.WrappedDEK), ikWrappedLen)
		}
	case sc == KEKAESGCM && len(s.WrapNonce) != gcmNonceSize:
		return fmt.Errorf("%w: wrap nonce is %d bytes, want %d", ErrOpen, len(s.WrapNonce), gcmNonceSize)
	case sc == KEKRSAOAEP && len(s.WrapNonce) != 0:
		return fmt.Errorf("%w: an %s envelope has no wrap nonce", ErrOpen, sc)
	case len(s.Nonce) != gcmNonceSize:
		return fmt.Errorf("%w: nonce is %d bytes, want %d", ErrOpen, len(s.Nonce), gcmNonceSize)
	case len(s.WrappedDEK) != wrappedLen(sc):
		return fmt.Errorf("%w: wrapped DEK is %d bytes, want %d", ErrOpen, len(s.WrappedDEK), wrappedLen(sc))
	}
	switch {
	case len(s.Nonce) != gcmNonceSize:
		return fmt.Errorf("%w: nonce is %d bytes, want %d", ErrOpen, len(s.Nonce), gcmNonceSize)
	case len(s.Ciphertext) < gcmTagSize:
		return fmt.Errorf("%w: ciphertext is shorter than a GCM tag", ErrOpen)
	}
	return nil
}

// unwrapDEK decrypts s's DEK with the KEK that wrapped it: in one HSM
// call, or through the envelope's intermediate key (intermediate.go), in
// software once that key is unwrapped. For aes-256-gcm and intermediate
// keys this also authenticates aad; for a direct rsa-3072-oaep-sha256
// wrap only opening the payload does. Called with h.mu held shared; the
// caller clears the DEK.
func (h *HSM) unwrapDEK(ctx context.Context, s *Sealed, aad []byte) ([]byte, error) {
	k, err := h.kek(s.KEK)
	if err != nil {
		return nil, err
	}
	if k.scheme != s.scheme() {
		return nil, fmt.Errorf("%w: envelope says %s but KEK %s is %s", ErrOpen, s.scheme(), s.KEK, k.scheme)
	}
	if s.Intermediate != nil {
		var dek []byte
		err := h.withIK(ctx, s.KEK, k, *s.Intermediate, h.useIK(k), func(ik []byte) error {
			var err error
			dek, err = unwrapUnderIK(ik, s.WrapNonce, s.WrappedDEK, aad)
			return err
		})
		return dek, err
	}
	return h.unwrapKey(ctx, k, s.KEK, s.WrapNonce, s.WrappedDEK, aad, "DEK")
}

// unwrapKey decrypts a 256-bit key (what: a DEK or an intermediate key)
// wrapped by KEK k (label) in one HSM call, telling an envelope that does
// not open (ErrOpen) from a token that fails (ErrUnavailable). Called with
// h.mu held shared; the caller clears the key.
func (h *HSM) unwrapKey(ctx context.Context, k *wrapKey, label string, nonce, wrapped, aad []byte, what string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	dek, err := h.unwrapWith(k, nonce, wrapped, aad)
	if err != nil {
		clear(dek)
		if k.scheme == KEKRSAOAEP && !lost(err) && h.token.failedDecryptSticks() {
			defer h.renewSessions("an RSA decryption failed and left its session busy")
		}
		if authFailure(err) {
			return nil, fmt.Errorf("%w: unwrap %s with KEK %s: %s", ErrOpen, what, label, ckrName(err))
		}
		// SoftHSM 2.6 reports a bad GCM tag as CKR_GENERAL_ERROR, and
		// tpm2-pkcs11 bad OAEP padding likewise: the same code as a real
		// fault. Tell them apart with a round trip through the same key:
		// if that works, the token is fine and the envelope is not. A
		// round trip that meets the session the failed decryption left
		// busy (CKR_OPERATION_ACTIVE) shows the token answered too. This
		// costs HSM calls only on the failure path.
		if hasCKR(err, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED) {
			if perr := h.probeKEK(k); perr == nil || (k.scheme == KEKRSAOAEP && hasCKR(perr, pkcs11.CKR_OPERATION_ACTIVE)) {
				return nil, fmt.Errorf("%w: unwrap %s with KEK %s: authentication failed", ErrOpen, what, label)
			}
		}
		return nil, fmt.Errorf("%w: unseal: unwrap %s with KEK %s on token %s: %s", ErrUnavailable, what, label, h.cfg.TokenLabel, ckrName(err))
	}
	if len(dek) != dekSize {
		clear(dek)
		return nil, fmt.Errorf("%w: unwrapped %s has the wrong length", ErrOpen, what)
	}
	return dek, nil
}

func (h *HSM) cachedKEK(label string) *wrapKey {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	return h.keks[label]
}

// kek returns the KEK with CKA_ID label, looking it up on the token (and
// caching it) when it is not the current one. Called with h.mu held shared.
func (h *HSM) kek(label string) (k *wrapKey, err error) {
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
