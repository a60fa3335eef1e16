//go:build !nodaemon

package main

import (
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/hsm/p11uri"
)

// hsmURIFlag names the token, its module and its PIN file in one RFC 7512
// URI, as OpenSSL's pkcs11 provider, p11-kit and smallstep take them;
// --hsm-module, --hsm-token and --hsm-pin-file are shorthands for its
// parts. Part of daemonCommand's flags (so hsm = "pkcs11:..." in the
// config file) and of every command that opens the HSM.
var hsmURIFlag = &cli.StringFlag{
	Name: "hsm",
	Usage: "the token, its module and PIN file as a PKCS#11 `URI` (RFC 7512): " +
		"'pkcs11:token=coffer;serial=...?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/coffer/hsm-pin' " +
		"(path: token, serial, manufacturer, model, slot-id; query: module-path or module-name, pin-source); " +
		"--hsm-module, --hsm-token and --hsm-pin-file are shorthands for its parts",
	EnvVars: []string{"COFFER_HSM"},
}

// hsmSettings returns the token selection (without the PIN) and the PIN
// file that --hsm and its shorthands give. Giving one part both ways
// (token= and --hsm-token, module-path= and --hsm-module, pin-source= and
// --hsm-pin-file) is a usage error, whichever of the command line, the
// environment and the config file each came from.
func hsmSettings(c *cli.Context) (hsm.Config, string, error) {
	cfg := hsm.Config{ModulePath: c.String("hsm-module"), TokenLabel: c.String("hsm-token")}
	pinFile := c.String("hsm-pin-file")
	if raw := c.String("hsm"); c.IsSet("hsm") && raw != "" {
		if c.Bool("dev") {
			return cfg, "", usagef("--hsm selects a token, and --dev makes its own in the state directory: give one of them")
		}
		u, err := p11uri.Parse(raw)
		if err != nil {
			return cfg, "", usagef("--hsm: %v", err)
		}
		switch {
		case u.PINValue != "":
			return cfg, "", usagef("--hsm: coffer refuses pin-value: a PIN in the URI ends up in ps, shell history, sudo's log and the journal; " +
				"put it in a file other users cannot read and give pin-source=file:/etc/coffer/hsm-pin (or --hsm-pin-file)")
		case u.Token != "" && c.IsSet("hsm-token"):
			return cfg, "", usagef("--hsm (token=) and --hsm-token both give the token label: give it in one place (COFFER_HSM_TOKEN and hsm_token in the config file count as --hsm-token)")
		case u.HasModule() && c.IsSet("hsm-module"):
			return cfg, "", usagef("--hsm (module-path= or module-name=) and --hsm-module both give the PKCS#11 module: give it in one place (COFFER_HSM_MODULE and hsm_module in the config file count as --hsm-module)")
		case u.PINSource != "" && c.IsSet("hsm-pin-file"):
			return cfg, "", usagef("--hsm (pin-source=) and --hsm-pin-file both give the PIN file: give it in one place (COFFER_HSM_PIN_FILE and hsm_pin_file in the config file count as --hsm-pin-file)")
		}
		// The URI's path selects the token: the default label (coffer)
		// does not narrow it, an explicit --hsm-token does. An empty
		// path matches every token, as RFC 7512 has it: fine on a module
		// with one token.
		if !c.IsSet("hsm-token") {
			cfg.TokenLabel = u.Token
		}
		cfg.TokenSerial, cfg.TokenManufacturer, cfg.TokenModel, cfg.SlotID = u.Serial, u.Manufacturer, u.Model, u.SlotID
		cfg.AnyToken = true
		switch {
		case u.ModulePath != "":
			cfg.ModulePath = u.ModulePath
		case u.ModuleName != "":
			if cfg.ModulePath, err = p11uri.ResolveModule(u.ModuleName); err != nil {
				return cfg, "", usagef("--hsm: %v", err)
			}
		}
		if u.PINSource != "" {
			pinFile = u.PINSource
		}
	}
	if pinFile == "" && os.Getenv("CREDENTIALS_DIRECTORY") != "" {
		pinFile = filepath.Join(os.Getenv("CREDENTIALS_DIRECTORY"), "hsm-pin")
	}
	return cfg, pinFile, nil
}
