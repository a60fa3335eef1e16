package hsm

import (
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
)

// redacted is printed in place of a PIN.
const redacted = "[redacted]"

// Config prints and logs without its PINs: every field whose name
// contains "PIN" shows as [redacted] when set (found by reflection, so a
// field added later is covered too).

// String is Config as %+v would print it, PINs redacted.
func (c Config) String() string { return c.format(false) }

// GoString is Config as %#v would print it, PINs redacted.
func (c Config) GoString() string { return c.format(true) }

// Format makes every fmt verb print String (%#v: GoString).
func (c Config) Format(f fmt.State, verb rune) {
	var s string
	switch {
	case verb == 'v' && f.Flag('#'):
		s = c.GoString()
	case verb == 'q':
		s = strconv.Quote(c.String())
	default:
		s = c.String()
	}
	_, _ = f.Write([]byte(s))
}

// LogValue logs Config as a group, PINs redacted.
func (c Config) LogValue() slog.Value {
	var attrs []slog.Attr
	c.fields(func(name string, v any, secret bool) {
		if secret {
			v = redacted
		}
		attrs = append(attrs, slog.Any(name, v))
	})
	return slog.GroupValue(attrs...)
}

func (c Config) format(goSyntax bool) string {
	var b strings.Builder
	if goSyntax {
		b.WriteString("hsm.Config")
	}
	b.WriteByte('{')
	first := true
	c.fields(func(name string, v any, secret bool) {
		if !first {
			if goSyntax {
				b.WriteString(", ")
			} else {
				b.WriteByte(' ')
			}
		}
		first = false
		b.WriteString(name + ":")
		switch {
		case secret:
			b.WriteString(redacted)
		case goSyntax:
			fmt.Fprintf(&b, "%#v", v)
		default:
			fmt.Fprintf(&b, "%v", v)
		}
	})
	b.WriteByte('}')
	return b.String()
}

// fields calls fn for each exported field; secret is true for a set PIN.
func (c Config) fields(fn func(name string, v any, secret bool)) {
	rv := reflect.ValueOf(c)
	for i := range rv.NumField() {
		sf := rv.Type().Field(i)
		if !sf.IsExported() {
			continue
		}
		fv := rv.Field(i)
		if fv.Kind() == reflect.Pointer && !fv.IsNil() && fv.Elem().Kind() == reflect.Uint {
			fv = fv.Elem() // SlotID: the number, not its address
		}
		fn(sf.Name, fv.Interface(), strings.Contains(sf.Name, "PIN") && !fv.IsZero())
	}
}

// String names the token; an *HSM printed with %+v would otherwise show
// the Config it keeps, PIN included (fmt prints unexported fields but
// cannot call their methods).
func (h *HSM) String() string {
	if h == nil {
		return "<no HSM>"
	}
	return "HSM token " + h.cfg.TokenLabel + " (module " + h.cfg.ModulePath + ")"
}

// Format makes every fmt verb print String.
func (h *HSM) Format(f fmt.State, verb rune) {
	s := h.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// LogValue logs String.
func (h *HSM) LogValue() slog.Value { return slog.StringValue(h.String()) }
