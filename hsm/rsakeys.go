package hsm

import "github.com/eclipse-keypont/crypto11"

// rsaUsage is what the private half of an RSA key pair may do: decrypt
// only (KEKs) or sign only (PS256 signing keys).
type rsaUsage bool

const (
	rsaDecryptOnly rsaUsage = false
	rsaSignOnly    rsaUsage = true
)

// generateRSAKeyPair creates an RSA-3072 key pair labelled label whose
// private half is sensitive, not extractable, and may only sign or only
// decrypt.
//
// The public half's usage attributes say the same (CKA_VERIFY for a
// signing key, CKA_ENCRYPT for a decryption key). tpm2-pkcs11 (1.9)
// derives them the other way round from the TPM object (CKA_ENCRYPT from
// its sign attribute, CKA_VERIFY from decrypt) and refuses a template that
// disagrees with CKR_GENERAL_ERROR; the module is then asked again with
// the two swapped, and the HSM starts with that template next time. Only
// the public half's flags differ: coffer never uses
// the public key object in the token, and the private half's attributes
// are the same in both attempts (and checked after).
func (h *HSM) generateRSAKeyPair(label string, sign rsaUsage) (crypto11.SignerDecrypter, error) {
	template := func(swapped bool) (pub, priv crypto11.AttributeSet) {
		pub = keyAttrs(label)
		_ = pub.Set(crypto11.CkaLabel, []byte(label))
		priv = pub.Copy()
		verify, encrypt := bool(sign), !bool(sign)
		if swapped {
			verify, encrypt = encrypt, verify
		}
		setAll(pub, attrs{
			{crypto11.CkaVerify, verify},
			{crypto11.CkaEncrypt, encrypt},
			{crypto11.CkaWrap, false},
		})
		setAll(priv, attrs{
			{crypto11.CkaPrivate, true},
			{crypto11.CkaSensitive, true},
			{crypto11.CkaExtractable, false},
			{crypto11.CkaSign, bool(sign)},
			{crypto11.CkaDecrypt, !bool(sign)},
			{crypto11.CkaUnwrap, false},
		})
		return pub, priv
	}
	// Start with the template that worked last time.
	swapped := h.rsaSwapped.Load()
	pub, priv := template(swapped)
	kp, err := h.ctx.GenerateRSAKeyPairWithAttributes(pub, priv, rsaBits)
	if err == nil {
		return kp, nil
	}
	pub, priv = template(!swapped)
	if kp, err2 := h.ctx.GenerateRSAKeyPairWithAttributes(pub, priv, rsaBits); err2 == nil {
		h.rsaSwapped.Store(!swapped)
		h.log().Debug("HSM token took the other RSA public key template", "token", h.cfg.TokenLabel, "key", label,
			"swapped", !swapped, "first_err", ckrName(err))
		return kp, nil
	}
	return nil, err
}
