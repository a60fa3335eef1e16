package hsm

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// printedEverywhere renders v with fmt's verbs and through slog's text and
// JSON handlers.
func printedEverywhere(v any) map[string]string {
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d", "%20v"} {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		log := slog.New(h(&b))
		log.Info("attr", "v", v)
		log.Info("bare", v)
		log.Info("group", slog.Group("g", "v", v))
		out["slog "+name] = b.String()
	}
	return out
}

func TestPINIsRedactedWhenPrinted(t *testing.T) {
	const pin = "LEAK-pin-8675309"
	cfg := Config{ModulePath: "/usr/lib/softhsm/libsofthsm2.so", TokenLabel: "coffer", PIN: pin, KEKLabel: "coffer-kek-1", MaxSessions: 4}
	real := openTest(t, tokenCfg(t, testToken))
	for _, tt := range []struct {
		name  string
		v     any
		pin   string
		shown []string
	}{
		{"Config", cfg, pin, []string{"coffer-kek-1", "[redacted]"}},
		{"*Config", &cfg, pin, []string{"coffer-kek-1"}},
		{"*HSM", &HSM{cfg: cfg}, pin, []string{"coffer"}},
		{"open *HSM", real, testCfg.PIN, []string{testToken}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for how, s := range printedEverywhere(tt.v) {
				if strings.Contains(s, tt.pin) || strings.Contains(s, fmt.Sprintf("%x", tt.pin)) {
					t.Errorf("%s shows the PIN: %s", how, s)
				}
				for _, want := range tt.shown {
					if how != "%x" && how != "%q" && !strings.Contains(s, want) {
						t.Errorf("%s lost %q: %s", how, want, s)
					}
				}
			}
		})
	}
	// An unset PIN shows as unset, not as [redacted].
	if got := fmt.Sprintf("%+v", Config{TokenLabel: "t"}); !strings.HasPrefix(got, "{ModulePath: TokenLabel:t PIN: KEKLabel: ") || strings.Contains(got, "[redacted]") {
		t.Errorf("a Config without a PIN prints as %s", got)
	}
}
