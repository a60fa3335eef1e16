// Package redacttest renders values every way a secret could reach text, so
// tests can check that types holding secrets print them redacted.
package redacttest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
)

// Verbs are the ways a value reaches text through fmt.
var Verbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%20v"}

// Printed renders v with every verb of Verbs, Sprint and Sprintln, and
// through slog's text and JSON handlers (as an attribute, as a bare
// argument, inside a group and With), and returns each output by how it
// was made.
func Printed(v any) map[string]string {
	out := map[string]string{}
	for _, verb := range Verbs {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	} {
		var b bytes.Buffer
		log := slog.New(h.new(&b))
		log.Info("attr", "v", v)
		log.Info("bare", v)
		log.Info("group", slog.Group("g", "v", v))
		log.With("w", v).Info("with")
		out["slog "+h.name] = b.String()
	}
	return out
}

// Leaks says where any of secrets appears in outs: raw, as hex (either
// case), base64 or the start of its decimal byte list.
func Leaks(outs map[string]string, secrets []string) []string {
	var found []string
	for how, s := range outs {
		for _, secret := range secrets {
			for _, form := range []string{secret, hex.EncodeToString([]byte(secret)), strings.ToUpper(hex.EncodeToString([]byte(secret))),
				base64.StdEncoding.EncodeToString([]byte(secret)), fmt.Sprint([]byte(secret))[1:20]} {
				if strings.Contains(s, form) {
					found = append(found, fmt.Sprintf("%s shows %.12q...: %.200s", how, secret, s))
				}
			}
		}
	}
	return found
}
