package hsm

import (
	"errors"
	"strings"
	"testing"
)

func TestSelectToken(t *testing.T) {
	slots := []Slot{
		{ID: 10, Label: "coffer", Manufacturer: "SoftHSM project", Model: "SoftHSM v2", Serial: "aaaa"},
		{ID: 11, Label: "dup", Manufacturer: "SoftHSM project", Model: "SoftHSM v2", Serial: "bbbb"},
		{ID: 12, Label: "dup", Manufacturer: "SoftHSM project", Model: "SoftHSM v2", Serial: "cccc"},
		{ID: 13, Label: "twin", Manufacturer: "Acme", Model: "X", Serial: "same"},
		{ID: 14, Label: "twin", Manufacturer: "Acme", Model: "Y", Serial: "same"},
	}
	orig := listTokens
	listTokens = func(string) ([]Slot, error) { return slots, nil }
	t.Cleanup(func() { listTokens = orig })
	id := func(n uint) *uint { return &n }
	const all = `slot 10 (token "coffer", serial "aaaa", SoftHSM project SoftHSM v2), slot 11 (token "dup", serial "bbbb", SoftHSM project SoftHSM v2), ` +
		`slot 12 (token "dup", serial "cccc", SoftHSM project SoftHSM v2), slot 13 (token "twin", serial "same", Acme X), slot 14 (token "twin", serial "same", Acme Y)`
	tests := []struct {
		name          string
		cfg           Config
		label, serial string
		pick          int
		wantErr       string
	}{
		{"label", Config{TokenLabel: "coffer"}, "coffer", "aaaa", pickSerial, ""},
		{"serial", Config{TokenSerial: "cccc"}, "dup", "cccc", pickSerial, ""},
		{"label and serial", Config{TokenLabel: "dup", TokenSerial: "bbbb"}, "dup", "bbbb", pickSerial, ""},
		{"slot", Config{SlotID: id(12)}, "dup", "cccc", pickSerial, ""},
		{"shared serial and label", Config{TokenModel: "Y"}, "twin", "same", pickSlot, ""},
		{"manufacturer", Config{TokenManufacturer: "Acme", TokenModel: "X"}, "twin", "same", pickSlot, ""},
		{"no match", Config{ModulePath: "/m.so", TokenLabel: "nope"}, "", "", 0,
			"HSM token nope not found in module /m.so: CKR_TOKEN_NOT_PRESENT (no initialised token matches; the module has " + all + ")"},
		{"no match by attributes", Config{ModulePath: "/m.so", TokenLabel: "coffer", TokenSerial: "bbbb"}, "", "", 0,
			"HSM token token=coffer;serial=bbbb not found in module /m.so: CKR_TOKEN_NOT_PRESENT (no initialised token matches; the module has " + all + ")"},
		{"several", Config{ModulePath: "/m.so", TokenLabel: "dup"}, "", "", 0,
			`HSM token dup is ambiguous in module /m.so: 2 tokens match: slot 11 (token "dup", serial "bbbb", SoftHSM project SoftHSM v2), slot 12 (token "dup", serial "cccc", SoftHSM project SoftHSM v2); select one by serial or slot-id (--hsm 'pkcs11:serial=...')`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := selectToken(tt.cfg)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("selectToken err = %v\nwant %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got.TokenLabel != tt.label || got.TokenSerial != tt.serial || got.pick != tt.pick {
				t.Fatalf("selectToken = %q %q pick %d, %v; want %q %q pick %d", got.TokenLabel, got.TokenSerial, got.pick, err, tt.label, tt.serial, tt.pick)
			}
			c := crypto11Config(got)
			n := 0
			if c.TokenLabel != "" {
				n++
			}
			if c.TokenSerial != "" {
				n++
			}
			if c.SlotNumber != nil {
				n++
			}
			if n != 1 {
				t.Fatalf("crypto11 config selects by %d attributes, want 1: %+v", n, c)
			}
		})
	}
	if _, err := selectToken(Config{ModulePath: "/m.so", AnyToken: true}); err == nil || !strings.HasPrefix(err.Error(),
		"HSM token (any) is ambiguous in module /m.so: 5 tokens match: ") {
		t.Fatalf("any token of five: %v", err)
	}
	listTokens = func(string) ([]Slot, error) { return slots[:1], nil }
	if got, err := selectToken(Config{ModulePath: "/m.so", AnyToken: true}); err != nil || got.TokenLabel != "coffer" || got.TokenSerial != "aaaa" {
		t.Fatalf("the one token: %+v, %v", got, err)
	}
	if err := validateConfig(Config{AnyToken: true, PIN: "1234", KEKLabel: DefaultKEKLabel, SigningKeyLabel: DefaultSigningKeyLabel, MaxSessions: 2}); err != nil {
		t.Fatalf("validateConfig(AnyToken): %v", err)
	}
	listTokens = func(string) ([]Slot, error) { return nil, nil }
	if _, err := selectToken(Config{ModulePath: "/m.so", TokenLabel: "x"}); err == nil || err.Error() !=
		"HSM token x not found in module /m.so: CKR_TOKEN_NOT_PRESENT (no initialised token matches; the module has no initialised token)" {
		t.Fatalf("empty module: %v", err)
	}
	listTokens = func(string) ([]Slot, error) { return nil, errors.New("boom") }
	if _, err := selectToken(Config{TokenLabel: "x"}); err == nil || err.Error() != "boom" {
		t.Fatalf("list error: %v", err)
	}
}
