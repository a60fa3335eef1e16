package hsm

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/miekg/pkcs11"
)

// Slot is an initialised token as its module lists it.
type Slot struct {
	ID           uint
	Label        string
	Manufacturer string
	Model        string
	Serial       string
}

// String names the slot's token for an operator: by slot, label and
// serial (never anything secret: a token says nothing secret about
// itself).
func (s Slot) String() string {
	return fmt.Sprintf("slot %d (token %q, serial %q, %s %s)", s.ID, s.Label, s.Serial, s.Manufacturer, s.Model)
}

// listTokens is the seam over listSlots (the fake-token tests replace it).
var listTokens = listSlots

// listSlots lists the module's initialised tokens through a raw handle.
// Called with moduleMu held; like inspectToken it leaves a module that
// was initialised already (by a live *HSM) initialised.
func listSlots(module string) (out []Slot, err error) {
	defer func() {
		if r := recover(); r != nil {
			out, err = nil, fmt.Errorf("list the tokens of PKCS#11 module %s: %v", module, panicError(r))
		}
	}()
	p := pkcs11.New(module)
	if p == nil {
		return nil, fmt.Errorf("cannot load PKCS#11 module %s: not a loadable PKCS#11 library", module)
	}
	defer p.Destroy()
	switch err := p.Initialize(); {
	case err == nil:
		defer func() { _ = p.Finalize() }()
	case hasCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
	default:
		return nil, fmt.Errorf("cannot initialise PKCS#11 module %s: %s", module, ckrName(err))
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return nil, fmt.Errorf("list the slots of PKCS#11 module %s: %s", module, ckrName(err))
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return nil, fmt.Errorf("read the token in slot %d of PKCS#11 module %s: %s", s, module, ckrName(err))
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		out = append(out, Slot{ID: s, Label: trimPadded(ti.Label), Manufacturer: trimPadded(ti.ManufacturerID),
			Model: trimPadded(ti.Model), Serial: trimPadded(ti.SerialNumber)})
	}
	return out, nil
}

// matches reports whether slot s has every token attribute cfg gives.
func (cfg Config) matches(s Slot) bool {
	return (cfg.TokenLabel == "" || s.Label == cfg.TokenLabel) &&
		(cfg.TokenSerial == "" || s.Serial == cfg.TokenSerial) &&
		(cfg.TokenManufacturer == "" || s.Manufacturer == cfg.TokenManufacturer) &&
		(cfg.TokenModel == "" || s.Model == cfg.TokenModel) &&
		(cfg.SlotID == nil || s.ID == *cfg.SlotID)
}

// selection describes what cfg selects a token by: the label alone as
// it is, several attributes in the form of a pkcs11: URI's path.
func (cfg Config) selection() string {
	if cfg.AnyToken && cfg.TokenLabel == "" && cfg.TokenSerial == "" && cfg.TokenManufacturer == "" && cfg.TokenModel == "" && cfg.SlotID == nil {
		return "(any)"
	}
	if cfg.TokenSerial == "" && cfg.TokenManufacturer == "" && cfg.TokenModel == "" && cfg.SlotID == nil {
		return cfg.TokenLabel
	}
	var parts []string
	for _, a := range []struct{ k, v string }{
		{"token", cfg.TokenLabel}, {"manufacturer", cfg.TokenManufacturer}, {"model", cfg.TokenModel}, {"serial", cfg.TokenSerial},
	} {
		if a.v != "" {
			parts = append(parts, a.k+"="+a.v)
		}
	}
	if cfg.SlotID != nil {
		parts = append(parts, "slot-id="+strconv.FormatUint(uint64(*cfg.SlotID), 10))
	}
	return strings.Join(parts, ";")
}

// selectToken finds the one initialised token of cfg's module that
// matches cfg's token attributes, and returns cfg naming it by its label
// and serial (and how crypto11 is to find it). No match and several
// matches are errors that list the module's tokens.
func selectToken(cfg Config) (Config, error) {
	slots, err := listTokens(cfg.ModulePath)
	if err != nil {
		return cfg, err
	}
	var found []Slot
	for _, s := range slots {
		if cfg.matches(s) {
			found = append(found, s)
		}
	}
	switch len(found) {
	case 0:
		return cfg, fmt.Errorf("HSM token %s not found in module %s: CKR_TOKEN_NOT_PRESENT (%s)", cfg.selection(), cfg.ModulePath, candidates("no initialised token matches", slots))
	case 1:
	default:
		return cfg, fmt.Errorf("HSM token %s is ambiguous in module %s: %d tokens match: %s; select one by serial or slot-id (--hsm 'pkcs11:serial=...')",
			cfg.selection(), cfg.ModulePath, len(found), joinSlots(found))
	}
	s := found[0]
	cfg.TokenLabel, cfg.TokenSerial = s.Label, s.Serial
	// crypto11 finds a token by one attribute only: the first of serial,
	// label and slot that no other token of the module shares.
	cfg.pick = pickSlot
	cfg.slot = s.ID
	switch {
	case s.Serial != "" && count(slots, func(o Slot) bool { return o.Serial == s.Serial }) == 1:
		cfg.pick = pickSerial
	case s.Label != "" && count(slots, func(o Slot) bool { return o.Label == s.Label }) == 1:
		cfg.pick = pickLabel
	}
	return cfg, nil
}

func candidates(what string, slots []Slot) string {
	if len(slots) == 0 {
		return what + "; the module has no initialised token"
	}
	return what + "; the module has " + joinSlots(slots)
}

func joinSlots(slots []Slot) string {
	parts := make([]string, len(slots))
	for i, s := range slots {
		parts[i] = s.String()
	}
	return strings.Join(parts, ", ")
}

func count(slots []Slot, f func(Slot) bool) int {
	n := 0
	for _, s := range slots {
		if f(s) {
			n++
		}
	}
	return n
}

// How crypto11 (and the raw handles of inspect and importraw) find the
// selected token.
const (
	pickLabel  = iota // zero: a Config that selectToken has not seen (tests) goes by label
	pickSerial        // the serial, unique in the module
	pickSlot          // the slot id: label and serial are shared with other tokens
)

// findSelected finds the slot of the token selectToken chose.
func findSelected(p *pkcs11.Ctx, cfg Config) (uint, pkcs11.TokenInfo, bool, error) {
	if cfg.pick == pickLabel {
		return findSlot(p, cfg.TokenLabel)
	}
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, false, err
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return 0, pkcs11.TokenInfo{}, false, err
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			continue
		}
		if (cfg.pick == pickSerial && trimPadded(ti.SerialNumber) == cfg.TokenSerial) ||
			(cfg.pick == pickSlot && s == cfg.slot) {
			return s, ti, true, nil
		}
	}
	return 0, pkcs11.TokenInfo{}, false, nil
}
