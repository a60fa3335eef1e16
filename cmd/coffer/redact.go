package main

import (
	"fmt"
	"log/slog"
	"strconv"
)

// redact shows whether a token is set, never the token.
func redact(s string) string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

func (c conn) String() string {
	return fmt.Sprintf("{socket:%s token:%s profile:%s}", c.socket, redact(c.token), c.profile)
}

func (g globals) String() string {
	return fmt.Sprintf("{socket:%s socketSet:%t token:%s tokenFile:%s tokenEnv:%s tokenFileEnv:%s profile:%s vsock:%s noToken:%t}",
		g.socket, g.socketSet, redact(g.token), g.tokenFile, redact(g.tokenEnv), g.tokenFileEnv, g.profile, g.vsock, g.noToken)
}

// Format and LogValue print String, so no verb and no log shows a token.
func (c conn) Format(f fmt.State, verb rune)    { formatString(f, verb, c.String()) }
func (c conn) LogValue() slog.Value             { return slog.StringValue(c.String()) }
func (g globals) Format(f fmt.State, verb rune) { formatString(f, verb, g.String()) }
func (g globals) LogValue() slog.Value          { return slog.StringValue(g.String()) }

func formatString(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}
