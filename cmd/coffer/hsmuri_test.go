//go:build !nodaemon

package main

import (
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/hsm"
)

// hsmContext parses args with the daemon's flags, then applies the config
// file text conf (if any) as `coffer daemon` does.
func hsmContext(t *testing.T, conf string, args ...string) *cli.Context {
	t.Helper()
	set := flag.NewFlagSet("daemon", flag.ContinueOnError)
	for _, f := range daemonCommand.Flags {
		if err := f.Apply(set); err != nil {
			t.Fatal(err)
		}
	}
	if err := set.Parse(args); err != nil {
		t.Fatal(err)
	}
	c := cli.NewContext(&cli.App{}, set, nil)
	c.Command = daemonCommand
	if conf != "" {
		f, err := parseDaemonFile("coffer.toml", []byte(conf))
		if err != nil {
			t.Fatal(err)
		}
		if err := f.apply(c, "coffer.toml"); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

func TestHSMSettings(t *testing.T) {
	t.Setenv("CREDENTIALS_DIRECTORY", "")
	for _, k := range []string{"COFFER_HSM", "COFFER_HSM_TOKEN", "COFFER_HSM_MODULE", "COFFER_HSM_PIN_FILE"} {
		os.Unsetenv(k)
	}
	id := func(n uint) *uint { return &n }
	tests := []struct {
		name    string
		conf    string
		args    []string
		want    hsm.Config
		pinFile string
		wantErr string
	}{
		{"shorthands", "", []string{"--hsm-token", "t", "--hsm-pin-file", "/p"},
			hsm.Config{ModulePath: hsm.DefaultModulePath, TokenLabel: "t"}, "/p", ""},
		{"uri", "", []string{"--hsm", "pkcs11:token=t;serial=ab;slot-id=3?module-path=/m.so&pin-source=file:/etc/coffer/hsm-pin"},
			hsm.Config{ModulePath: "/m.so", TokenLabel: "t", TokenSerial: "ab", SlotID: id(3), AnyToken: true}, "/etc/coffer/hsm-pin", ""},
		{"uri with an empty path: any token", "", []string{"--hsm", "pkcs11:?pin-source=file:/p"},
			hsm.Config{ModulePath: hsm.DefaultModulePath, AnyToken: true}, "/p", ""},
		{"uri by serial: the default label does not narrow", "", []string{"--hsm", "pkcs11:serial=ab"},
			hsm.Config{ModulePath: hsm.DefaultModulePath, TokenSerial: "ab", AnyToken: true}, "", ""},
		{"uri and shorthands for other parts", "", []string{"--hsm", "pkcs11:serial=ab;model=m", "--hsm-token", "t", "--hsm-module", "/m.so", "--hsm-pin-file", "/p"},
			hsm.Config{ModulePath: "/m.so", TokenLabel: "t", TokenSerial: "ab", TokenModel: "m", AnyToken: true}, "/p", ""},
		{"config file", "hsm = \"pkcs11:token=c%20d;manufacturer=Acme?pin-source=/run/pin\"\n", nil,
			hsm.Config{ModulePath: hsm.DefaultModulePath, TokenLabel: "c d", TokenManufacturer: "Acme", AnyToken: true}, "/run/pin", ""},
		{"token twice", "", []string{"--hsm", "pkcs11:token=a", "--hsm-token", "b"}, hsm.Config{}, "",
			"--hsm (token=) and --hsm-token both give the token label: give it in one place (COFFER_HSM_TOKEN and hsm_token in the config file count as --hsm-token)"},
		{"token twice, one from the file", "hsm_token = \"b\"\n", []string{"--hsm", "pkcs11:token=a"}, hsm.Config{}, "",
			"--hsm (token=) and --hsm-token both give the token label: give it in one place (COFFER_HSM_TOKEN and hsm_token in the config file count as --hsm-token)"},
		{"module twice", "", []string{"--hsm", "pkcs11:?module-path=/a.so", "--hsm-module", "/b.so"}, hsm.Config{}, "",
			"--hsm (module-path= or module-name=) and --hsm-module both give the PKCS#11 module: give it in one place (COFFER_HSM_MODULE and hsm_module in the config file count as --hsm-module)"},
		{"PIN file twice", "", []string{"--hsm", "pkcs11:?pin-source=file:/a", "--hsm-pin-file", "/b"}, hsm.Config{}, "",
			"--hsm (pin-source=) and --hsm-pin-file both give the PIN file: give it in one place (COFFER_HSM_PIN_FILE and hsm_pin_file in the config file count as --hsm-pin-file)"},
		{"pin-value", "", []string{"--hsm", "pkcs11:token=a?pin-value=LEAKME-1234"}, hsm.Config{}, "",
			"--hsm: coffer refuses pin-value: a PIN in the URI ends up in ps, shell history, sudo's log and the journal; put it in a file other users cannot read and give pin-source=file:/etc/coffer/hsm-pin (or --hsm-pin-file)"},
		{"dev", "", []string{"--dev", "--hsm", "pkcs11:token=a"}, hsm.Config{}, "",
			"--hsm selects a token, and --dev makes its own in the state directory: give one of them"},
		{"malformed", "", []string{"--hsm", "pkcs11:object=k"}, hsm.Config{}, "",
			"--hsm: PKCS#11 URI: unsupported path attribute object (coffer takes token, serial, manufacturer, model, slot-id)"},
		{"unknown module name", "", []string{"--hsm", "pkcs11:?module-name=no-such-module-xyz"}, hsm.Config{}, "",
			"--hsm: module-name no-such-module-xyz: no p11-kit module of that name (no no-such-module-xyz.module in /etc/pkcs11/modules or /usr/share/p11-kit/modules); give the module's file with module-path="},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, pin, err := hsmSettings(hsmContext(t, tt.conf, tt.args...))
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v\nwant %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.String() != tt.want.String() || pin != tt.pinFile {
				t.Fatalf("hsmSettings = %v, %q\nwant %v, %q", got, pin, tt.want, tt.pinFile)
			}
		})
	}
	t.Run("credentials directory", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv("CREDENTIALS_DIRECTORY", dir)
		_, pin, err := hsmSettings(hsmContext(t, "", "--hsm", "pkcs11:token=a"))
		if err != nil || pin != filepath.Join(dir, "hsm-pin") {
			t.Fatalf("pin file %q, %v", pin, err)
		}
	})
}
