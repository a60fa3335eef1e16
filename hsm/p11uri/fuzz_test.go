package p11uri

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParse: Parse never panics; what it accepts formats (String) to a URI
// that parses back to the same value; an error never quotes a pin-value.
// The seeds are in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Add("pkcs11:token=coffer?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/coffer/hsm-pin")
	f.Fuzz(func(t *testing.T, s string) {
		u, err := Parse(s)
		if err != nil {
			if i := strings.Index(s, "pin-value="); i >= 0 {
				v := s[i+len("pin-value="):]
				if j := strings.IndexAny(v, "&;?#"); j >= 0 {
					v = v[:j]
				}
				if len(v) >= 4 && strings.Contains(err.Error(), v) {
					t.Fatalf("error %q quotes the pin-value %q", err, v)
				}
			}
			return
		}
		if u.PINValue != "" {
			if strings.Contains(u.String(), "pin-value="+u.PINValue) && u.PINValue != "REDACTED" {
				t.Fatalf("String %q holds the pin-value", u.String())
			}
			u.PINValue = ""
		}
		back, err := Parse(u.String())
		if err != nil {
			t.Fatalf("Parse(%q) ok, but Parse of its String %q: %v", s, u.String(), err)
		}
		if !reflect.DeepEqual(*back, *u) {
			t.Fatalf("round trip of %q: %+v, want %+v", s, *back, *u)
		}
	})
}
