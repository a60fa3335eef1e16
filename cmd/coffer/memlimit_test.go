//go:build !nodaemon

package main

import (
	"strings"
	"testing"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  bool
	}{
		{"0", 0, false},
		{"4096", 4096, false},
		{"4096B", 4096, false},
		{"512KiB", 512 << 10, false},
		{"128MiB", 128 << 20, false},
		{" 2 GiB ", 2 << 30, false},
		{"", 0, true},
		{"MiB", 0, true},
		{"-1MiB", 0, true},
		{"1.5GiB", 0, true},
		{"128MB", 0, true}, // decimal units are not taken: say what you mean
		{"128mib", 0, true},
		{"9999999999GiB", 0, true},
	}
	for _, tt := range tests {
		got, err := parseByteSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("parseByteSize(%q) = %d, %v; want %d, error %v", tt.in, got, err, tt.want, tt.err)
		}
		if err != nil && !strings.Contains(err.Error(), "MiB") {
			t.Errorf("parseByteSize(%q): error %q does not say how to write a size", tt.in, err)
		}
	}
}
