package hsm

import (
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

const (
	encDec = pkcs11.CKF_ENCRYPT | pkcs11.CKF_DECRYPT
	sigVer = pkcs11.CKF_SIGN | pkcs11.CKF_VERIFY
)

// softHSMLike is part of SoftHSM2's list (AES sizes in bytes).
var softHSMLike = []Mechanism{
	{pkcs11.CKM_AES_KEY_GEN, 16, 32, pkcs11.CKF_GENERATE},
	{pkcs11.CKM_AES_GCM, 16, 32, encDec},
	{pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, 512, 16384, pkcs11.CKF_GENERATE_KEY_PAIR},
	{pkcs11.CKM_RSA_PKCS_OAEP, 512, 16384, encDec},
	{pkcs11.CKM_EC_KEY_PAIR_GEN, 256, 521, pkcs11.CKF_GENERATE_KEY_PAIR},
	{pkcs11.CKM_ECDSA, 256, 521, sigVer},
}

// tpmLike is what tpm2-pkcs11 1.9 over a TPM 2.0 reports: no AES-GCM.
var tpmLike = []Mechanism{
	{pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, 1024, 3072, pkcs11.CKF_GENERATE_KEY_PAIR},
	{pkcs11.CKM_RSA_PKCS_OAEP, 1024, 3072, encDec},
	{pkcs11.CKM_RSA_PKCS_PSS, 1024, 3072, sigVer},
	{pkcs11.CKM_EC_KEY_PAIR_GEN, 192, 638, pkcs11.CKF_GENERATE_KEY_PAIR},
	{pkcs11.CKM_ECDSA, 192, 638, sigVer},
	{pkcs11.CKM_AES_KEY_GEN, 16, 32, pkcs11.CKF_GENERATE},
	{pkcs11.CKM_AES_CBC, 16, 32, encDec},
	{pkcs11.CKM_AES_CTR, 16, 32, encDec},
}

func without(ms []Mechanism, typ uint) []Mechanism {
	var out []Mechanism
	for _, m := range ms {
		if m.Type != typ {
			out = append(out, m)
		}
	}
	return out
}

func with(ms []Mechanism, m Mechanism) []Mechanism { return append(append([]Mechanism(nil), ms...), m) }

func TestChooseSchemes(t *testing.T) {
	tests := []struct {
		name    string
		mechs   []Mechanism
		kek     KEKScheme
		signing SigningScheme
		err     []string // substrings of the error
	}{
		{"SoftHSM", softHSMLike, KEKAESGCM, SignES256, nil},
		{"TPM 2.0", tpmLike, KEKRSAOAEP, SignES256, nil},
		{"RSA-only token", without(without(tpmLike, pkcs11.CKM_ECDSA), pkcs11.CKM_EC_KEY_PAIR_GEN), KEKRSAOAEP, SignPS256, nil},
		{"GCM without AES-256 keys", with(tpmLike, Mechanism{pkcs11.CKM_AES_GCM, 16, 16, encDec}), KEKRSAOAEP, SignES256, nil},
		{"GCM encrypt only", with(tpmLike, Mechanism{pkcs11.CKM_AES_GCM, 16, 32, pkcs11.CKF_ENCRYPT}), KEKRSAOAEP, SignES256, nil},
		{"RSA capped at 2048", []Mechanism{
			{pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, 1024, 2048, pkcs11.CKF_GENERATE_KEY_PAIR},
			{pkcs11.CKM_RSA_PKCS_OAEP, 1024, 2048, encDec},
			{pkcs11.CKM_EC_KEY_PAIR_GEN, 256, 256, pkcs11.CKF_GENERATE_KEY_PAIR},
			{pkcs11.CKM_ECDSA, 256, 256, sigVer},
		}, "", "", []string{"KEK mechanism"}},
		{"EC without P-256 size", with(without(without(softHSMLike, pkcs11.CKM_ECDSA), pkcs11.CKM_EC_KEY_PAIR_GEN),
			Mechanism{pkcs11.CKM_ECDSA, 384, 521, sigVer}), KEKAESGCM, "", []string{"signing mechanism"}},
		{"sizes not reported", []Mechanism{
			{pkcs11.CKM_AES_KEY_GEN, 0, 0, pkcs11.CKF_GENERATE},
			{pkcs11.CKM_AES_GCM, 0, 0, encDec},
			{pkcs11.CKM_EC_KEY_PAIR_GEN, 0, 0, pkcs11.CKF_GENERATE_KEY_PAIR},
			{pkcs11.CKM_ECDSA, 0, 0, sigVer},
		}, KEKAESGCM, SignES256, nil},
		{"nothing", nil, "", "", []string{"KEK mechanism", "signing mechanism"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := ChooseSchemes(tt.mechs)
			if tt.err != nil {
				if err == nil {
					t.Fatalf("chose %+v, want an error", s)
				}
				for _, want := range tt.err {
					if !strings.Contains(err.Error(), want) {
						t.Fatalf("error %q does not mention %q", err, want)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.KEK != tt.kek || s.Signing != tt.signing {
				t.Fatalf("chose %s/%s, want %s/%s", s.KEK, s.Signing, tt.kek, tt.signing)
			}
			if s.KEKWhy == "" || s.SigningWhy == "" {
				t.Fatal("a choice without its reason")
			}
		})
	}
}
