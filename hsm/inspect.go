package hsm

import (
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// TokenInfo is what a token says about itself (CK_TOKEN_INFO), trimmed,
// and which PKCS#11 library serves it (CK_INFO).
type TokenInfo struct {
	Label        string `json:"label"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	Library      string `json:"library"` // manufacturer, description and version of the module
}

// failedDecryptSticks reports whether the module is known to leave a
// C_Decrypt that failed active on its session (tpm2-pkcs11 1.9): every
// later call on that session then answers CKR_OPERATION_ACTIVE, so the
// sessions are renewed after such a failure (renewSessions).
func (t TokenInfo) failedDecryptSticks() bool {
	return strings.HasPrefix(t.Library, "tpm2-software.github.io ")
}

// inspect is the seam over inspectToken (the fake-token tests replace it).
var inspect = inspectToken

// inspectToken reads the token's description and mechanism list through a
// raw handle on the module. Open calls it with moduleMu held, right after
// crypto11 has loaded the module and found the token: the module is then
// initialised already, and this handle must not finalise it.
func inspectToken(cfg Config) (ti TokenInfo, mechs []Mechanism, err error) {
	defer func() {
		if r := recover(); r != nil {
			ti, mechs, err = TokenInfo{}, nil, panicError(r)
		}
	}()
	p := pkcs11.New(cfg.ModulePath)
	if p == nil {
		return TokenInfo{}, nil, fmt.Errorf("cannot load PKCS#11 module %s: not a loadable PKCS#11 library", cfg.ModulePath)
	}
	defer p.Destroy()
	switch err := p.Initialize(); {
	case err == nil:
		// Not shared with crypto11 after all: ours to finalise.
		defer func() { _ = p.Finalize() }()
	case hasCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
	default:
		return TokenInfo{}, nil, fmt.Errorf("C_Initialize: %s", ckrName(err))
	}
	lib, err := p.GetInfo()
	if err != nil {
		return TokenInfo{}, nil, fmt.Errorf("C_GetInfo: %s", ckrName(err))
	}
	slot, info, found, err := findSelected(p, cfg)
	if err != nil {
		return TokenInfo{}, nil, fmt.Errorf("list slots: %s", ckrName(err))
	}
	if !found {
		return TokenInfo{}, nil, fmt.Errorf("no slot holds a token labelled %s", cfg.TokenLabel)
	}
	ti = TokenInfo{
		Label:        trimPadded(info.Label),
		Manufacturer: trimPadded(info.ManufacturerID),
		Model:        trimPadded(info.Model),
		Serial:       trimPadded(info.SerialNumber),
		Library: fmt.Sprintf("%s %s %d.%d", trimPadded(lib.ManufacturerID), trimPadded(lib.LibraryDescription),
			lib.LibraryVersion.Major, lib.LibraryVersion.Minor),
	}
	list, err := p.GetMechanismList(slot)
	if err != nil {
		return TokenInfo{}, nil, fmt.Errorf("C_GetMechanismList: %s", ckrName(err))
	}
	for _, m := range list {
		mi, err := p.GetMechanismInfo(slot, []*pkcs11.Mechanism{m})
		if err != nil {
			// A listed mechanism without info is unusable to us; a
			// token that fails here for all of them leaves the list
			// empty and ChooseSchemes names what is missing.
			continue
		}
		mechs = append(mechs, Mechanism{Type: m.Mechanism, MinKeySize: mi.MinKeySize, MaxKeySize: mi.MaxKeySize, Flags: mi.Flags})
	}
	return ti, mechs, nil
}

// trimPadded trims the blank padding of a fixed-width CK_TOKEN_INFO field
// (and the NULs some modules use instead).
func trimPadded(s string) string {
	return strings.TrimRight(s, " \x00")
}

// chooseFor inspects the token of cfg and chooses the schemes for it.
// Called with moduleMu held.
func chooseFor(cfg Config) (TokenInfo, Schemes, error) {
	ti, mechs, err := inspect(cfg)
	if err != nil {
		return TokenInfo{}, Schemes{}, fmt.Errorf("read the mechanisms of HSM token %s (module %s): %w", cfg.TokenLabel, cfg.ModulePath, err)
	}
	s, err := ChooseSchemes(mechs)
	if err != nil {
		return TokenInfo{}, Schemes{}, fmt.Errorf("HSM token %s (module %s, %s %s): %w", cfg.TokenLabel, cfg.ModulePath, ti.Manufacturer, ti.Model, err)
	}
	return ti, s, nil
}
