package daemon

import (
	"fmt"
	"log/slog"

	"github.com/coffer-hsm/coffer/api"
)

// The domain's types that carry a secret print through api.FormatRedacted
// and api.LogValueRedacted, as the wire types do.

func (x Issued) Format(f fmt.State, verb rune)      { api.FormatRedacted(f, verb, x) }
func (x Issued) LogValue() slog.Value               { return api.LogValueRedacted(x) }
func (x AccessToken) Format(f fmt.State, verb rune) { api.FormatRedacted(f, verb, x) }
func (x AccessToken) LogValue() slog.Value          { return api.LogValueRedacted(x) }
func (x SecretInput) Format(f fmt.State, verb rune) { api.FormatRedacted(f, verb, x) }
func (x SecretInput) LogValue() slog.Value          { return api.LogValueRedacted(x) }
func (x RotateInput) Format(f fmt.State, verb rune) { api.FormatRedacted(f, verb, x) }
func (x RotateInput) LogValue() slog.Value          { return api.LogValueRedacted(x) }
func (x Delivery) Format(f fmt.State, verb rune)    { api.FormatRedacted(f, verb, x) }
func (x Delivery) LogValue() slog.Value             { return api.LogValueRedacted(x) }
