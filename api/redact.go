package api

import (
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
)

// redacted stands where a secret would be printed.
const redacted = "[redacted]"

// Types that carry a secret (a token, a client secret, a payload,
// key_values) tag those fields `redact:"true"` and print through
// FormatRedacted and LogValueRedacted, so that fmt's verbs and slog never
// show the secret.

// FormatRedacted writes the struct v for any fmt verb the way %+v would
// (%#v: with the type, as Go syntax), except that a set field tagged
// `redact:"true"` prints as [redacted]. Unexported fields are left out.
// Types implement fmt.Formatter with it:
//
//	func (x T) Format(f fmt.State, verb rune) { api.FormatRedacted(f, verb, x) }
func FormatRedacted(f fmt.State, verb rune, v any) {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Struct {
		_, _ = f.Write([]byte(redacted))
		return
	}
	rt := rv.Type()
	sharp := verb == 'v' && f.Flag('#')
	var b strings.Builder
	if sharp {
		b.WriteString(rt.String())
	}
	b.WriteByte('{')
	n := 0
	for i := range rt.NumField() {
		sf := rt.Field(i)
		if !sf.IsExported() {
			continue
		}
		if n > 0 {
			if sharp {
				b.WriteString(", ")
			} else {
				b.WriteByte(' ')
			}
		}
		n++
		b.WriteString(sf.Name)
		b.WriteByte(':')
		fv := rv.Field(i)
		switch {
		case sf.Tag.Get("redact") == "true" && !fv.IsZero():
			b.WriteString(redacted)
		case sharp:
			fmt.Fprintf(&b, "%#v", fv.Interface())
		default:
			fmt.Fprintf(&b, "%+v", fv.Interface())
		}
	}
	b.WriteByte('}')
	s := b.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// LogValueRedacted returns the struct v as an slog group of its exported
// fields, named as in JSON when they have a json tag; a set field tagged
// `redact:"true"` is [redacted]. Types implement slog.LogValuer with it.
func LogValueRedacted(v any) slog.Value {
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Struct {
		return slog.StringValue(redacted)
	}
	rt := rv.Type()
	attrs := make([]slog.Attr, 0, rt.NumField())
	for i := range rt.NumField() {
		sf := rt.Field(i)
		if !sf.IsExported() {
			continue
		}
		name := sf.Name
		if tag, _, _ := strings.Cut(sf.Tag.Get("json"), ","); tag != "" && tag != "-" {
			name = tag
		}
		fv := rv.Field(i)
		if sf.Tag.Get("redact") == "true" && !fv.IsZero() {
			attrs = append(attrs, slog.String(name, redacted))
			continue
		}
		attrs = append(attrs, slog.Any(name, fv.Interface()))
	}
	return slog.GroupValue(attrs...)
}

// The wire types that carry a secret print it as [redacted] with every fmt
// verb and in slog; JSON, their job, is unaffected. The fields are tagged
// `redact:"true"`.

func (x Credential) Format(f fmt.State, verb rune)          { FormatRedacted(f, verb, x) }
func (x Credential) LogValue() slog.Value                   { return LogValueRedacted(x) }
func (x Session) Format(f fmt.State, verb rune)             { FormatRedacted(f, verb, x) }
func (x Session) LogValue() slog.Value                      { return LogValueRedacted(x) }
func (x TokenResponse) Format(f fmt.State, verb rune)       { FormatRedacted(f, verb, x) }
func (x TokenResponse) LogValue() slog.Value                { return LogValueRedacted(x) }
func (x AuthorizeRequest) Format(f fmt.State, verb rune)    { FormatRedacted(f, verb, x) }
func (x AuthorizeRequest) LogValue() slog.Value             { return LogValueRedacted(x) }
func (x SecretCreateRequest) Format(f fmt.State, verb rune) { FormatRedacted(f, verb, x) }
func (x SecretCreateRequest) LogValue() slog.Value          { return LogValueRedacted(x) }
func (x SecretRotateRequest) Format(f fmt.State, verb rune) { FormatRedacted(f, verb, x) }
func (x SecretRotateRequest) LogValue() slog.Value          { return LogValueRedacted(x) }
