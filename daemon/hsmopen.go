package daemon

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"github.com/coffer-hsm/coffer/hsm"
)

// openKeys opens the HSM cfg names: in dev mode the state directory's own
// SoftHSM token (made on first use), otherwise cfg.HSM with the PIN from
// cfg.HSM.PIN or cfg.PINFile. With noCreate a missing key is
// hsm.ErrKeyMissing instead of being made.
func openKeys(ctx context.Context, cfg Config, noCreate bool) (*hsm.HSM, error) {
	hcfg := cfg.HSM
	if cfg.Dev {
		module := hcfg.ModulePath
		if module == "" {
			module = hsm.DefaultModulePath
		}
		dev, err := hsm.PrepareDevToken(ctx, filepath.Join(cfg.StateDir, "hsm"), module, DevTokenLabel)
		if err != nil {
			return nil, fmt.Errorf("prepare dev HSM token: %w", err)
		}
		hcfg.ModulePath, hcfg.TokenLabel, hcfg.PIN = dev.ModulePath, dev.TokenLabel, dev.PIN
	} else if hcfg.PIN == "" {
		if cfg.PINFile == "" {
			return nil, errors.New("no HSM PIN: set --hsm-pin-file (or run under systemd with the hsm-pin credential)")
		}
		pin, err := hsm.ReadPIN(cfg.PINFile)
		if err != nil {
			return nil, err
		}
		hcfg.PIN = pin
	}
	hcfg.NoCreate = hcfg.NoCreate || noCreate
	hcfg.Logger = cfg.Logger
	return hsm.Open(ctx, hcfg)
}
