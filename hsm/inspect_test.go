package hsm

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestInspectSoftHSM reads a real SoftHSM token's description and
// mechanisms at Open: it has AES-GCM and P-256 ECDSA.
func TestInspectSoftHSM(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	info := h.Info()
	tok := info.Token
	if tok.Label != testToken || tok.Manufacturer != "SoftHSM project" || !strings.HasPrefix(tok.Model, "SoftHSM") || tok.Serial == "" ||
		!strings.HasPrefix(tok.Library, "SoftHSM Implementation of PKCS11 2.") || tok.failedDecryptSticks() {
		t.Errorf("token = %+v, want label %s, SoftHSM project, SoftHSM model, a serial", tok, testToken)
	}
	s := info.Schemes
	if s.KEK != KEKAESGCM || s.Signing != SignES256 || !strings.Contains(s.KEKWhy, "CKM_AES_GCM") || !strings.Contains(s.SigningWhy, "CKM_ECDSA") {
		t.Errorf("schemes = %+v, want aes-256-gcm and ES256 with reasons", s)
	}
}

// TestInspectKeepsSharedModule: inspecting a second token while the
// module is loaded for a first must not finalise it under the first.
func TestInspectKeepsSharedModule(t *testing.T) {
	ctx := context.Background()
	a := openTest(t, tokenCfg(t, testToken))
	sealed, err := a.Seal(ctx, []byte("before"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	b := openTest(t, tokenCfg(t, "coffer-inspect-2"))
	if b.Info().Token.Label != "coffer-inspect-2" {
		t.Errorf("second token inspected as %+v", b.Info().Token)
	}
	pt, err := a.Unseal(ctx, sealed, []byte("aad"))
	if err != nil || string(pt) != "before" {
		t.Fatalf("first HSM after the second Open: %q, %v", pt, err)
	}
	if _, err := a.Seal(ctx, []byte("after"), nil); err != nil {
		t.Fatalf("first HSM after the second Open: Seal: %v", err)
	}
}

// TestOpenRefusesUnsupportedToken: a token offering none of coffer's
// schemes is refused at Open, naming what it lacks, and leaves nothing
// open.
func TestOpenRefusesUnsupportedToken(t *testing.T) {
	cfg := tokenCfg(t, "coffer-no-schemes")
	orig := inspect
	inspect = func(c Config) (TokenInfo, []Mechanism, error) {
		ti, _, err := orig(c)
		return ti, nil, err
	}
	t.Cleanup(func() { inspect = orig })
	_, err := Open(context.Background(), cfg)
	if err == nil || !strings.Contains(err.Error(), "supports none of coffer's schemes") || !strings.Contains(err.Error(), "coffer-no-schemes") {
		t.Fatalf("Open = %v, want the unsupported-token error naming the token", err)
	}
	moduleMu.Lock()
	var ref *tokenRef
	for k, r := range openTokens {
		if k.module == cfg.ModulePath && k.token == cfg.TokenLabel {
			ref = r
		}
	}
	moduleMu.Unlock()
	if ref != nil {
		t.Errorf("a refused token is still counted open: %+v", ref)
	}

	inspect = func(Config) (TokenInfo, []Mechanism, error) {
		return TokenInfo{}, nil, errors.New("C_GetMechanismList: CKR_DEVICE_ERROR")
	}
	if _, err := Open(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "read the mechanisms of HSM token coffer-no-schemes") {
		t.Fatalf("Open with a failing inspection = %v", err)
	}
	inspect = orig
	openTest(t, cfg) // and the token is fine afterwards
}
