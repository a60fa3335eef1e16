package hsm

// Raw RSA with the import key, for tokens that refuse RSA-OAEP with
// SHA-256 (SoftHSM 2.6 accepts only SHA-1 parameters). crypto11 offers no
// raw RSA, so this opens a session of its own through miekg/pkcs11 on the
// module crypto11 has loaded: the library is the same instance (dlopen
// counts references), already initialised and logged in by crypto11 —
// PKCS#11 login is per application and token — so the session can use the
// private key. It never initialises or finalises the module: callers hold
// h.mu shared (or run inside Open), so a live crypto11 context keeps the
// module initialised for as long as the call runs.

import (
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"

	"github.com/miekg/pkcs11"
)

// errOAEPDecode is the one error of a failed OAEP decoding: which check
// failed is not told (Manger's attack).
var errOAEPDecode = errors.New("OAEP decoding failed")

// rawUnwrap decrypts an RSA-OAEP (SHA-256, empty label) ciphertext with
// the import key: the private-key operation in the token (CKM_RSA_X_509),
// the OAEP decoding here.
func (h *HSM) rawUnwrap(pub *rsa.PublicKey, wrapped []byte) ([]byte, error) {
	k := pub.Size()
	if len(wrapped) != k || new(big.Int).SetBytes(wrapped).Cmp(pub.N) >= 0 {
		return nil, fmt.Errorf("%w: unwrap with import key %s: not a ciphertext for this key", ErrOpen, ImportKeyLabel)
	}
	em, err := h.rawDecrypt(pub, wrapped)
	if err != nil {
		return nil, err
	}
	defer clear(em)
	if len(em) > k {
		return nil, fmt.Errorf("%w: raw RSA with import key %s returned %d bytes for a %d-byte modulus", ErrUnavailable, ImportKeyLabel, len(em), k)
	}
	if len(em) < k { // a token may drop leading zero bytes
		padded := make([]byte, k)
		copy(padded[k-len(em):], em)
		clear(em)
		em = padded
	}
	dek, err := oaepDecodeSHA256(em)
	if err != nil {
		return nil, fmt.Errorf("%w: unwrap with import key %s: %v", ErrOpen, ImportKeyLabel, err)
	}
	return dek, nil
}

// rawDecrypt runs CKM_RSA_X_509 with the import key's private half in a
// session of its own and returns the result.
func (h *HSM) rawDecrypt(pub *rsa.PublicKey, in []byte) ([]byte, error) {
	fail := func(what string, err error) error {
		return fmt.Errorf("%w: raw RSA with import key %s on token %s: %s: %w", ErrUnavailable, ImportKeyLabel, h.cfg.TokenLabel, what, err)
	}
	p := pkcs11.New(h.cfg.ModulePath)
	if p == nil {
		return nil, fail("load module", errors.New("not a loadable PKCS#11 library"))
	}
	defer p.Destroy() // drops this reference; crypto11 keeps the module loaded
	switch err := p.Initialize(); {
	case hasCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
	case err == nil:
		// Nobody held the module: not ours to keep initialised.
		_ = p.Finalize()
		return nil, fail("C_Initialize", pkcs11.Error(pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED))
	default:
		return nil, fail("C_Initialize", err)
	}
	slot, _, found, err := findSelected(p, h.cfg)
	if err != nil {
		return nil, fail("list slots", err)
	}
	if !found {
		return nil, fail("find token", pkcs11.Error(pkcs11.CKR_TOKEN_NOT_PRESENT))
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return nil, fail("C_OpenSession", err)
	}
	defer func() { _ = p.CloseSession(s) }()
	key, err := findRawImportKey(p, s, pub)
	if err != nil {
		return nil, fail("find import key", err)
	}
	if key == nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, h.missingKey("import key", ImportKeyLabel))
	}
	if err := p.DecryptInit(s, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_X_509, nil)}, *key); err != nil {
		return nil, fail("C_DecryptInit", err)
	}
	out, err := p.Decrypt(s, in)
	if err != nil {
		return nil, fail("C_Decrypt", err)
	}
	return out, nil
}

// findRawImportKey finds the private half of the import key whose modulus
// is pub's, or nil.
func findRawImportKey(p *pkcs11.Ctx, s pkcs11.SessionHandle, pub *rsa.PublicKey) (*pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(ImportKeyLabel)),
	}
	if err := p.FindObjectsInit(s, tmpl); err != nil {
		return nil, err
	}
	objs, _, err := p.FindObjects(s, 8)
	if ferr := p.FindObjectsFinal(s); err == nil {
		err = ferr
	}
	if err != nil {
		return nil, err
	}
	for _, o := range objs {
		attrs, err := p.GetAttributeValue(s, o, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_MODULUS, nil)})
		if err != nil {
			return nil, err
		}
		if len(attrs) == 1 && new(big.Int).SetBytes(attrs[0].Value).Cmp(pub.N) == 0 {
			return &o, nil
		}
	}
	return nil, nil
}

// oaepDecodeSHA256 removes the EME-OAEP encoding (RFC 8017 §7.1.2, steps
// 3a-3g) with SHA-256, MGF1-SHA-256 and an empty label from em, an encoded
// message as long as the modulus. Every check runs whatever the outcome
// of the others, and all failures are one error.
func oaepDecodeSHA256(em []byte) ([]byte, error) {
	const hLen = sha256.Size
	k := len(em)
	if k < 2*hLen+2 {
		return nil, errOAEPDecode
	}
	seed := make([]byte, hLen)
	db := make([]byte, k-hLen-1)
	defer clear(seed)
	defer clear(db)
	copy(seed, em[1:1+hLen])
	copy(db, em[1+hLen:])
	mgf1XOR(seed, db) // seed = maskedSeed ⊕ MGF1(maskedDB)
	mgf1XOR(db, seed) // DB = maskedDB ⊕ MGF1(seed)

	lHash := sha256.Sum256(nil)
	ok := subtle.ConstantTimeByteEq(em[0], 0) & subtle.ConstantTimeCompare(db[:hLen], lHash[:])
	// DB = lHash || PS (zero bytes) || 0x01 || M: find the 0x01 without
	// branching on the bytes.
	rest := db[hLen:]
	searching, sep, bad := 1, 0, 0
	for i, b := range rest {
		zero, one := subtle.ConstantTimeByteEq(b, 0), subtle.ConstantTimeByteEq(b, 1)
		sep = subtle.ConstantTimeSelect(searching&one, i, sep)
		bad |= searching &^ zero &^ one // a byte other than 0 or 1 before the separator
		searching &^= one
	}
	if ok&^searching&^bad != 1 {
		return nil, errOAEPDecode
	}
	return append([]byte(nil), rest[sep+1:]...), nil
}

// mgf1XOR XORs MGF1-SHA-256(seed) into out.
func mgf1XOR(out, seed []byte) {
	var ctr [4]byte
	buf := make([]byte, 0, len(seed)+4)
	for done, i := 0, uint32(0); done < len(out); i++ {
		binary.BigEndian.PutUint32(ctr[:], i)
		buf = append(append(buf[:0], seed...), ctr[:]...)
		sum := sha256.Sum256(buf)
		done += subtle.XORBytes(out[done:], out[done:], sum[:])
	}
	clear(buf)
}
