package main

import (
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/internal/redacttest"
)

func TestConnectionSettingsDoNotPrintTokens(t *testing.T) {
	const tok, envTok = "cfs_LEAKflagtoken0123456789", "cfs_LEAKenvtoken0123456789"
	for _, v := range []any{
		conn{socket: "/s.sock", token: tok, profile: "dev"},
		&conn{socket: "/s.sock", token: tok},
		globals{socket: "/s.sock", token: tok, tokenEnv: envTok, profile: "dev"},
		[]globals{{token: tok}},
	} {
		outs := redacttest.Printed(v)
		for _, l := range redacttest.Leaks(outs, []string{tok, envTok}) {
			t.Errorf("%T: %s", v, l)
		}
		if s := outs["%v"]; !strings.Contains(s, "[redacted]") {
			t.Errorf("%T %%v = %s, want the token shown as set", v, s)
		}
	}
}
