package client

import (
	"fmt"
	"log/slog"
	"strconv"

	"github.com/coffer-hsm/coffer/api"
)

// The requests that carry a secret print it as [redacted] with every fmt
// verb and in slog, as the wire types do (api.FormatRedacted).

func (x SecretCreate) Format(f fmt.State, verb rune) { api.FormatRedacted(f, verb, x) }
func (x SecretCreate) LogValue() slog.Value          { return api.LogValueRedacted(x) }
func (x SecretRotate) Format(f fmt.State, verb rune) { api.FormatRedacted(f, verb, x) }
func (x SecretRotate) LogValue() slog.Value          { return api.LogValueRedacted(x) }

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
