package hsm

import (
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/pkcs11"
)

// KEKScheme is how DEKs are wrapped by the token.
type KEKScheme string

const (
	// KEKAESGCM: an AES-256 key in the token encrypts the DEK with
	// AES-GCM (wrap and unwrap both in the token; the GCM tag binds the
	// record's additional data to the wrapped DEK too).
	KEKAESGCM KEKScheme = "aes-256-gcm"
	// KEKRSAOAEP: the DEK is encrypted in software to the public half of
	// an RSA-3072 key whose private half, non-extractable, unwraps it in
	// the token (RSA-OAEP with SHA-256). The record's additional data is
	// bound by the payload's own AES-GCM layer.
	KEKRSAOAEP KEKScheme = "rsa-3072-oaep-sha256"
)

// SigningScheme is how access tokens (and audit checkpoints) are signed.
type SigningScheme string

const (
	// SignES256: ECDSA P-256 with SHA-256 (JWS "ES256").
	SignES256 SigningScheme = "ES256"
	// SignPS256: RSA-PSS with SHA-256 and an RSA-3072 key (JWS "PS256").
	SignPS256 SigningScheme = "PS256"
)

// Mechanism is one entry of a token's mechanism list (C_GetMechanismList
// with C_GetMechanismInfo).
type Mechanism struct {
	Type       uint // CKM_*
	MinKeySize uint // bits for RSA and EC, bytes for AES (as PKCS#11 reports them)
	MaxKeySize uint
	Flags      uint // CKF_*
}

// Schemes are the schemes chosen for a token, with the reasons.
type Schemes struct {
	KEK        KEKScheme     `json:"kek_scheme"`
	KEKWhy     string        `json:"kek_reason"`
	Signing    SigningScheme `json:"signing_scheme"`
	SigningWhy string        `json:"signing_reason"`
}

const (
	rsaBits = 3072
	ecBits  = 256
	aesLen  = 32 // bytes
)

// ChooseSchemes picks the strongest scheme coffer implements that the
// token supports: AES-256-GCM for the KEK where the token has it (SoftHSM,
// most HSMs), else RSA-3072-OAEP (TPM 2.0 through tpm2-pkcs11); ECDSA
// P-256 for signing, else RSA-PSS. It fails, naming what is missing, when
// the token supports neither.
func ChooseSchemes(mechs []Mechanism) (Schemes, error) {
	has := func(typ, flags, size uint) bool {
		i := slices.IndexFunc(mechs, func(m Mechanism) bool { return m.Type == typ })
		if i < 0 {
			return false
		}
		m := mechs[i]
		if m.Flags&flags != flags {
			return false
		}
		// A zero range means the token did not say; do not hold it
		// against it.
		return size == 0 || (m.MinKeySize == 0 && m.MaxKeySize == 0) || (m.MinKeySize <= size && size <= m.MaxKeySize)
	}
	var s Schemes
	var missing []string
	switch {
	case has(pkcs11.CKM_AES_GCM, pkcs11.CKF_ENCRYPT|pkcs11.CKF_DECRYPT, aesLen) && has(pkcs11.CKM_AES_KEY_GEN, pkcs11.CKF_GENERATE, aesLen):
		s.KEK, s.KEKWhy = KEKAESGCM, "the token has CKM_AES_GCM and generates AES-256 keys"
	case has(pkcs11.CKM_RSA_PKCS_OAEP, pkcs11.CKF_DECRYPT, rsaBits) && has(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKF_GENERATE_KEY_PAIR, rsaBits):
		s.KEK, s.KEKWhy = KEKRSAOAEP, "the token has no CKM_AES_GCM; it decrypts CKM_RSA_PKCS_OAEP with RSA-3072 keys"
	default:
		missing = append(missing, "a KEK mechanism (CKM_AES_GCM with AES-256 key generation, or CKM_RSA_PKCS_OAEP with RSA-3072 key pairs)")
	}
	switch {
	case has(pkcs11.CKM_ECDSA, pkcs11.CKF_SIGN, ecBits) && has(pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKF_GENERATE_KEY_PAIR, ecBits):
		s.Signing, s.SigningWhy = SignES256, "the token signs CKM_ECDSA with P-256 keys"
	case has(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.CKF_SIGN, rsaBits) && has(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKF_GENERATE_KEY_PAIR, rsaBits):
		s.Signing, s.SigningWhy = SignPS256, "the token has no P-256 ECDSA; it signs CKM_RSA_PKCS_PSS with RSA-3072 keys"
	default:
		missing = append(missing, "a signing mechanism (CKM_ECDSA on P-256, or CKM_RSA_PKCS_PSS with RSA-3072)")
	}
	if len(missing) > 0 {
		return Schemes{}, fmt.Errorf("the token supports none of coffer's schemes: it lacks %s", strings.Join(missing, " and "))
	}
	return s, nil
}
