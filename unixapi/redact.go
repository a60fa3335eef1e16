package unixapi

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/coffer-hsm/coffer/daemon"
)

// The wire types that carry a secret print it as [redacted] with every fmt
// verb and in slog; JSON, their job, is unaffected. The fields are tagged
// `redact:"true"` (see daemon.FormatRedacted).

func (x Credential) Format(f fmt.State, verb rune)          { daemon.FormatRedacted(f, verb, x) }
func (x Credential) LogValue() slog.Value                   { return daemon.LogValueRedacted(x) }
func (x Session) Format(f fmt.State, verb rune)             { daemon.FormatRedacted(f, verb, x) }
func (x Session) LogValue() slog.Value                      { return daemon.LogValueRedacted(x) }
func (x TokenResponse) Format(f fmt.State, verb rune)       { daemon.FormatRedacted(f, verb, x) }
func (x TokenResponse) LogValue() slog.Value                { return daemon.LogValueRedacted(x) }
func (x AuthorizeRequest) Format(f fmt.State, verb rune)    { daemon.FormatRedacted(f, verb, x) }
func (x AuthorizeRequest) LogValue() slog.Value             { return daemon.LogValueRedacted(x) }
func (x SecretCreateRequest) Format(f fmt.State, verb rune) { daemon.FormatRedacted(f, verb, x) }
func (x SecretCreateRequest) LogValue() slog.Value          { return daemon.LogValueRedacted(x) }
func (x SecretRotateRequest) Format(f fmt.State, verb rune) { daemon.FormatRedacted(f, verb, x) }
func (x SecretRotateRequest) LogValue() slog.Value          { return daemon.LogValueRedacted(x) }
func (x SecretCreate) Format(f fmt.State, verb rune)        { daemon.FormatRedacted(f, verb, x) }
func (x SecretCreate) LogValue() slog.Value                 { return daemon.LogValueRedacted(x) }
func (x SecretRotate) Format(f fmt.State, verb rune)        { daemon.FormatRedacted(f, verb, x) }
func (x SecretRotate) LogValue() slog.Value                 { return daemon.LogValueRedacted(x) }

// String names the daemon a client talks to, never its token.
func (c Client) String() string {
	s := "coffer client for " + c.addr
	if c.token != "" {
		s += " with token [redacted]"
	}
	return s
}

// Format prints String for every verb (%#v too: the token is in an
// unexported field, which fmt would otherwise print).
func (c Client) Format(f fmt.State, verb rune) {
	s := c.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// LogValue logs String.
func (c Client) LogValue() slog.Value { return slog.StringValue(c.String()) }
