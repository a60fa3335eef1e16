package hsm

// The import key: an RSA-3072 key pair whose private half never leaves the
// token. Anyone holding the public half can seal a secret to this host
// offline (package hostseal: RSA-OAEP with SHA-256 wraps a DEK); only this
// token can unwrap it. The private half may only decrypt: no signing, no
// key unwrapping, never extractable.
//
// The token decrypts with CKM_RSA_PKCS_OAEP (SHA-256, MGF1-SHA-256) when it
// supports those parameters. SoftHSM 2.6 supports OAEP with SHA-1 only
// (CKR_ARGUMENTS_BAD otherwise); with such a token the RSA private-key
// operation runs in the token as CKM_RSA_X_509 and coffer removes the OAEP
// encoding itself, in constant time (importraw.go). Which one a token gets
// is decided once, at provisioning, by a probe.

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// ImportKeyLabel is the label (and CKA_ID) of the import key pair.
const ImportKeyLabel = "coffer-import-1"

// ImportKeyBits is the size of the import key's modulus.
const ImportKeyBits = 3072

// importOAEP is RSA-OAEP with SHA-256 (hash and MGF1) and an empty label.
var importOAEP = &rsa.OAEPOptions{Hash: crypto.SHA256, MGFHash: crypto.SHA256}

// importKey is the import key's private half as one crypto11 context
// sees it, and how to decrypt with it. Guarded by h.mu like the signer.
type importKey struct {
	dec crypto.Decrypter
	raw bool // the token lacks OAEP with SHA-256: CKM_RSA_X_509 + decoding in Go
}

// provisionImportKey finds the import key by CKA_ID and creates it when it
// is missing. Unlike the KEK and the signing key it is created even under
// Config.NoCreate: nothing in a store depends on it (a new one only makes
// files sealed to the old one unopenable, and there is none on a token
// that never had it). A reconnect sets h.importPub to the key in use
// beforehand; then a missing key is an error and another key is refused.
func (h *HSM) provisionImportKey(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	want := h.importPub
	signer, err := h.findSigner(ImportKeyLabel)
	if err != nil {
		return h.keyError("find import key", ImportKeyLabel, err)
	}
	if signer == nil && want != nil {
		return h.missingKey("import key", ImportKeyLabel)
	}
	if signer == nil {
		if signer, err = h.generateImportKey(); err != nil {
			return h.keyError("create import key", ImportKeyLabel, err)
		}
		h.log().Info("HSM import key created", "token", h.cfg.TokenLabel, "key", ImportKeyLabel)
	}
	dec, pub, err := h.checkImportKey(signer)
	if err != nil {
		return err
	}
	if want != nil && !pub.Equal(want) {
		return fmt.Errorf("HSM import key %s on token %s (module %s) is not the key in use before the token was lost; not using it",
			ImportKeyLabel, h.cfg.TokenLabel, h.cfg.ModulePath)
	}
	raw, err := h.importMode(dec, pub)
	if err != nil {
		return err
	}
	h.imp = importKey{dec: dec, raw: raw}
	if want == nil {
		h.importPub = pub
	}
	return nil
}

// importMode probes how the token decrypts with the import key: raw is
// true when it refuses OAEP with SHA-256 but does raw RSA.
func (h *HSM) importMode(dec crypto.Decrypter, pub *rsa.PublicKey) (raw bool, err error) {
	defer func() {
		if r := recover(); r != nil {
			raw, err = false, fmt.Errorf("%w: probe import key %s: %v", ErrUnavailable, ImportKeyLabel, panicError(r))
		}
	}()
	native := probeImport(pub, func(ct []byte) ([]byte, error) { return dec.Decrypt(rand.Reader, ct, importOAEP) })
	if native == nil {
		return false, nil
	}
	if !hasCKR(native, pkcs11.CKR_ARGUMENTS_BAD, pkcs11.CKR_MECHANISM_PARAM_INVALID, pkcs11.CKR_MECHANISM_INVALID) {
		return false, h.keyError("decrypt with import key", ImportKeyLabel, native)
	}
	if err := probeImport(pub, func(ct []byte) ([]byte, error) { return h.rawUnwrap(pub, ct) }); err != nil {
		return false, fmt.Errorf("%w: HSM token %s (module %s) decrypts neither RSA-OAEP with SHA-256 (%s) nor raw RSA (%s) with import key %s",
			ErrUnavailable, h.cfg.TokenLabel, h.cfg.ModulePath, ckrName(native), ckrName(err), ImportKeyLabel)
	}
	h.log().Debug("HSM token lacks RSA-OAEP with SHA-256: the import key decrypts with CKM_RSA_X_509 and coffer decodes OAEP",
		"token", h.cfg.TokenLabel, "cause", ckrName(native))
	return true, nil
}

// probeImport checks that decrypt opens what pub sealed with RSA-OAEP.
func probeImport(pub *rsa.PublicKey, decrypt func(ct []byte) ([]byte, error)) error {
	probe := make([]byte, dekSize)
	if _, err := rand.Read(probe); err != nil {
		return err
	}
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, probe, nil)
	if err != nil {
		return err
	}
	pt, err := decrypt(ct)
	if err != nil {
		return err
	}
	if string(pt) != string(probe) {
		return errors.New("import key probe round trip returned other bytes")
	}
	return nil
}

func (h *HSM) generateImportKey() (crypto11.Signer, error) {
	// Decrypt only; the same template as an RSA KEK's (rsakeys.go), which
	// tpm2-pkcs11 also takes.
	return h.generateRSAKeyPair(ImportKeyLabel, rsaDecryptOnly)
}

// checkImportKey refuses an import key that is not a sensitive,
// non-extractable RSA key of at least ImportKeyBits that may decrypt
// (someone may have created an object with our CKA_ID by hand).
func (h *HSM) checkImportKey(s crypto11.Signer) (crypto.Decrypter, *rsa.PublicKey, error) {
	bad := func(why string) error {
		return fmt.Errorf("HSM import key %s on token %s is not usable: %s", ImportKeyLabel, h.cfg.TokenLabel, why)
	}
	pub, ok := s.Public().(*rsa.PublicKey)
	if !ok {
		return nil, nil, bad("not an RSA key")
	}
	if pub.N.BitLen() < ImportKeyBits {
		return nil, nil, bad(fmt.Sprintf("RSA-%d is below %d bits", pub.N.BitLen(), ImportKeyBits))
	}
	dec, ok := s.(crypto.Decrypter)
	if !ok {
		return nil, nil, bad("the private key cannot decrypt")
	}
	attrs, err := h.ctx.GetAttributes(s, []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaDecrypt})
	if err != nil {
		return nil, nil, h.keyError("read attributes of import key", ImportKeyLabel, err)
	}
	isTrue := func(t crypto11.AttributeType) bool {
		a := attrs[t]
		return a != nil && len(a.Value) == 1 && a.Value[0] != 0
	}
	if !isTrue(crypto11.CkaSensitive) || isTrue(crypto11.CkaExtractable) || !isTrue(crypto11.CkaDecrypt) {
		return nil, nil, bad("the private key must be sensitive, not extractable, and allowed to decrypt")
	}
	return dec, pub, nil
}

// ImportPublicKey returns the public half of the import key.
func (h *HSM) ImportPublicKey() *rsa.PublicKey { return h.importPub }

// UnwrapImport decrypts a DEK that was encrypted to the import key with
// RSA-OAEP (SHA-256, empty label), inside the token. A ciphertext that
// does not decrypt (another key, tampered) is ErrOpen; a token that cannot
// serve is ErrUnavailable. The caller owns (and should zero) the result.
func (h *HSM) UnwrapImport(ctx context.Context, wrapped []byte) (dek []byte, err error) {
	if n := h.importPub.Size(); len(wrapped) != n {
		return nil, fmt.Errorf("%w: wrapped key is %d bytes, want %d for import key %s", ErrOpen, len(wrapped), n, ImportKeyLabel)
	}
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer func() {
		if r := recover(); r != nil {
			dek, err = nil, fmt.Errorf("%w: unwrap with import key %s: %v", ErrUnavailable, ImportKeyLabel, panicError(r))
		}
	}()
	if h.imp.raw {
		return h.rawUnwrap(h.importPub, wrapped)
	}
	dek, err = h.imp.dec.Decrypt(rand.Reader, wrapped, importOAEP)
	if err == nil {
		return dek, nil
	}
	clear(dek)
	if !lost(err) && h.token.failedDecryptSticks() {
		defer h.renewSessions("an RSA decryption with the import key failed and left its session busy")
	}
	if authFailure(err) {
		return nil, fmt.Errorf("%w: unwrap with import key %s: %s", ErrOpen, ImportKeyLabel, ckrName(err))
	}
	// A token may report a failed OAEP decoding as a general error, like
	// a real fault. A round trip through the same key tells them apart:
	// if it works, the token is fine and the ciphertext is not; if it
	// meets the session the failure left busy, the token answered too.
	if hasCKR(err, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_FUNCTION_FAILED) {
		perr := probeImport(h.importPub, func(ct []byte) ([]byte, error) { return h.imp.dec.Decrypt(rand.Reader, ct, importOAEP) })
		if perr == nil || hasCKR(perr, pkcs11.CKR_OPERATION_ACTIVE) {
			return nil, fmt.Errorf("%w: unwrap with import key %s: decryption failed", ErrOpen, ImportKeyLabel)
		}
	}
	return nil, fmt.Errorf("%w: unwrap with import key %s on token %s: %s", ErrUnavailable, ImportKeyLabel, h.cfg.TokenLabel, ckrName(err))
}

func (noContext) GenerateRSAKeyPairWithAttributes(crypto11.AttributeSet, crypto11.AttributeSet, int) (crypto11.SignerDecrypter, error) {
	return nil, errNoContext
}
