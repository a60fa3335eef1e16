package main

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestConnectionSettingsDoNotPrintTokens(t *testing.T) {
	const tok, envTok = "cfs_LEAKflagtoken0123456789", "cfs_LEAKenvtoken0123456789"
	for _, v := range []any{
		conn{socket: "/s.sock", token: tok, profile: "dev"},
		&conn{socket: "/s.sock", token: tok},
		globals{socket: "/s.sock", token: tok, tokenEnv: envTok, profile: "dev"},
		[]globals{{token: tok}},
	} {
		outs := map[string]string{}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			outs[verb] = fmt.Sprintf(verb, v)
		}
		for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
			"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
			"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		} {
			var b bytes.Buffer
			slog.New(h(&b)).Info("m", "v", v)
			outs["slog "+name] = b.String()
		}
		for how, s := range outs {
			for _, secret := range []string{tok, envTok, fmt.Sprintf("%x", tok)} {
				if strings.Contains(s, secret) {
					t.Errorf("%T %s shows a token: %s", v, how, s)
				}
			}
		}
		if s := outs["%v"]; !strings.Contains(s, "[redacted]") {
			t.Errorf("%T %%v = %s, want the token shown as set", v, s)
		}
	}
}
