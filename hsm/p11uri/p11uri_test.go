package p11uri

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/internal/redacttest"
)

func uintp(n uint) *uint { return &n }

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want URI
	}{
		{"pkcs11:", URI{}},
		{"PKCS11:token=coffer", URI{Token: "coffer"}},
		{"pkcs11:token=coffer;serial=1a2b3c4d?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/coffer/hsm-pin",
			URI{Token: "coffer", Serial: "1a2b3c4d", ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PINSource: "/etc/coffer/hsm-pin"}},
		{"pkcs11:token=The%20Software%20PKCS%2311%20softtoken;manufacturer=Snake%20Oil,%20Inc.;model=1.0;slot-id=7",
			URI{Token: "The Software PKCS#11 softtoken", Manufacturer: "Snake Oil, Inc.", Model: "1.0", SlotID: uintp(7)}},
		{"pkcs11:serial=?module-name=softhsm2", URI{ModuleName: "softhsm2"}},
		{"pkcs11:token=a+b%3bc", URI{Token: "a+b;c"}},
		{"pkcs11:?pin-source=file:///run/creds/hsm-pin", URI{PINSource: "/run/creds/hsm-pin"}},
		{"pkcs11:?pin-source=file://localhost/run/pin", URI{PINSource: "/run/pin"}},
		{"pkcs11:?pin-source=/etc/coffer/../coffer/hsm-pin", URI{PINSource: "/etc/coffer/hsm-pin"}},
		{"pkcs11:?pin-value=1234", URI{PINValue: "1234"}},
		{"pkcs11:?", URI{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if !reflect.DeepEqual(*got, tt.want) {
				t.Fatalf("Parse = %+v, want %+v", *got, tt.want)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", `not a PKCS#11 URI: it must start with "pkcs11:"`},
		{"coffer", `not a PKCS#11 URI: it must start with "pkcs11:"`},
		{"pkcs11:token=a#frag", "PKCS#11 URI: a fragment (#) is not allowed; write # in a value as %23"},
		{"pkcs11:token=a;", "PKCS#11 URI: empty path attribute (a stray ;)"},
		{"pkcs11:?module-name=x&", "PKCS#11 URI: empty query attribute (a stray &)"},
		{"pkcs11:token", `PKCS#11 URI: path attribute "token" has no =value`},
		{"pkcs11:Token=a", `PKCS#11 URI: "Token" is not an attribute name`},
		{"pkcs11:object=coffer-kek-1", "PKCS#11 URI: unsupported path attribute object (coffer takes token, serial, manufacturer, model, slot-id)"},
		{"pkcs11:x-vendor=1", "PKCS#11 URI: unsupported path attribute x-vendor (coffer takes token, serial, manufacturer, model, slot-id)"},
		{"pkcs11:?pin-sorce=file:/p", "PKCS#11 URI: unsupported query attribute pin-sorce (coffer takes module-path, module-name, pin-source, pin-value)"},
		{"pkcs11:module-path=/m.so", "PKCS#11 URI: module-path is a query attribute; it belongs after the ?"},
		{"pkcs11:?token=a", "PKCS#11 URI: token is a path attribute; it belongs before the ?"},
		{"pkcs11:token=a;token=b", "PKCS#11 URI: attribute token is given twice"},
		{"pkcs11:token=a%zz", `PKCS#11 URI: token has a malformed percent-encoding: "a%zz"`},
		{"pkcs11:slot-id=", "PKCS#11 URI: slot-id is empty"},
		{"pkcs11:slot-id=-1", `PKCS#11 URI: slot-id must be a decimal number, not "-1"`},
		{"pkcs11:slot-id=+1", `PKCS#11 URI: slot-id must be a decimal number, not "+1"`},
		{"pkcs11:slot-id=0x10", `PKCS#11 URI: slot-id must be a decimal number, not "0x10"`},
		{"pkcs11:?module-path=lib.so", `PKCS#11 URI: module-path must be an absolute path, not "lib.so"`},
		{"pkcs11:?module-name=../x", `PKCS#11 URI: module-name "../x" must be a name, not a path (use module-path)`},
		{"pkcs11:?module-name=a&module-path=/b", "PKCS#11 URI: module-path and module-name exclude each other"},
		{"pkcs11:?pin-source=|/bin/pinentry", `PKCS#11 URI: pin-source "|/bin/pinentry" is not supported: give a file as file:/absolute/path`},
		{"pkcs11:?pin-source=file:pin", `PKCS#11 URI: pin-source "file:pin" must name an absolute path`},
		{"pkcs11:?pin-source=file://host/pin", `PKCS#11 URI: pin-source "file://host/pin" names host "host"; only local files are supported`},
		{"pkcs11:?pin-source=file:/a&pin-value=b", "PKCS#11 URI: malformed; the details are withheld because it holds a pin-value (coffer takes pin-source=file:... instead)"},
		{"pkcs11:?pin-value=12&34", "PKCS#11 URI: malformed; the details are withheld because it holds a pin-value (coffer takes pin-source=file:... instead)"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Fatalf("Parse(%q) err = %v\nwant %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestString(t *testing.T) {
	u := &URI{Token: "my token;1", Serial: "ab", SlotID: uintp(3), ModulePath: "/usr/lib/a b.so", PINSource: "/etc/pin&x", PINValue: "secret"}
	got := u.String()
	want := "pkcs11:token=my%20token%3B1;serial=ab;slot-id=3?module-path=/usr/lib/a%20b.so&pin-source=file:/etc/pin%26x&pin-value=REDACTED"
	if got != want {
		t.Fatalf("String = %s\nwant     %s", got, want)
	}
	if strings.Contains(got, "secret") {
		t.Fatal("String holds the pin-value")
	}
	u.PINValue = ""
	back, err := Parse(got[:strings.Index(got, "&pin-value")])
	if err != nil || !reflect.DeepEqual(*back, *u) {
		t.Fatalf("Parse(String) = %+v, %v; want %+v", back, err, *u)
	}
}

func TestResolveModule(t *testing.T) {
	etc, share, lib := t.TempDir(), t.TempDir(), t.TempDir()
	oldConf, oldDirs := ModuleConfigDirs, ModuleDirs
	ModuleConfigDirs, ModuleDirs = []string{etc, share}, []string{lib}
	t.Cleanup(func() { ModuleConfigDirs, ModuleDirs = oldConf, oldDirs })
	write := func(path, content string) {
		if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(filepath.Join(share, "softhsm2.module"), "# comment\nmodule: /usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so\n")
	write(filepath.Join(share, "tpm2_pkcs11.module"), "module: libtpm2_pkcs11.so\ncritical: no\n")
	write(filepath.Join(lib, "libtpm2_pkcs11.so"), "")
	write(filepath.Join(share, "gone.module"), "module: libgone.so\n")
	write(filepath.Join(share, "broken.module"), "critical: yes\n")
	write(filepath.Join(share, "local.module"), "module: /usr/lib/share.so\n")
	write(filepath.Join(etc, "local.module"), "module: /usr/lib/etc.so\n")
	for _, tt := range []struct{ name, want, wantErr string }{
		{"softhsm2", "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so", ""},
		{"tpm2_pkcs11", filepath.Join(lib, "libtpm2_pkcs11.so"), ""},
		{"local", "/usr/lib/etc.so", ""},
		{"gone", "", "module-name gone: " + filepath.Join(share, "gone.module") + " names module libgone.so, which is in none of " + lib},
		{"broken", "", "module-name broken: " + filepath.Join(share, "broken.module") + `: no "module:" line`},
		{"nope", "", "module-name nope: no p11-kit module of that name (no nope.module in " + etc + " or " + share + "); give the module's file with module-path="},
	} {
		got, err := ResolveModule(tt.name)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ResolveModule(%s) err = %v\nwant %q", tt.name, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ResolveModule(%s) = %q, %v; want %q", tt.name, got, err, tt.want)
		}
	}
}

// A URI holding a pin-value prints it in no form.
func TestPINValueIsRedactedWhenPrinted(t *testing.T) {
	const pin = "LEAK-pin-8675309"
	u := URI{Token: "coffer", PINValue: pin}
	for _, v := range []any{u, &u} {
		outs := redacttest.Printed(v)
		if found := redacttest.Leaks(outs, []string{pin}); len(found) > 0 {
			t.Fatalf("the pin-value is printed: %v", found)
		}
		if !strings.Contains(outs["%v"], "token=coffer") {
			t.Fatalf("%%v = %s, want the URI", outs["%v"])
		}
	}
}
