package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestOneDurationSyntax: a duration flag takes the syntax of every expiry
// and window (days and weeks too), and what it cannot take is a usage
// error naming the flag.
func TestOneDurationSyntax(t *testing.T) {
	for _, tt := range []struct {
		timeout string
		want    string // in the printed config; "" = a usage error
	}{
		{"5s", "timeout: 5s"},
		{"2minutes", "timeout: 2m0s"},
		{"1d", "timeout: 24h0m0s"},
		{"1month", ""},
		{"3 days", ""},
		{"-5s", ""},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), []string{"coffer", "k8s", "encryption-config", "--timeout", tt.timeout}, strings.NewReader(""), &stdout, &stderr)
		switch {
		case tt.want == "" && (code != exitUsage || !strings.Contains(stderr.String(), "--timeout")):
			t.Errorf("--timeout %s: exit %d, stderr %q; want a usage error naming --timeout", tt.timeout, code, stderr.String())
		case tt.want != "" && (code != 0 || !strings.Contains(stdout.String(), tt.want)):
			t.Errorf("--timeout %s: exit %d, stdout %q; want %q", tt.timeout, code, stdout.String(), tt.want)
		}
	}
}

func TestFormatDuration(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "0", 7 * 24 * time.Hour: "7d", 5 * time.Minute: "5m", time.Hour: "1h",
		90 * time.Minute: "1h30m", time.Second: "1s", 1500 * time.Millisecond: "1.5s",
	} {
		if got := formatDuration(d); got != want {
			t.Errorf("formatDuration(%v) = %q, want %q", d, got, want)
		}
	}
}
