package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestInterspersed(t *testing.T) {
	app := newApp(strings.NewReader(""), &bytes.Buffer{}, &bytes.Buffer{})
	tests := []struct{ in, want string }{
		{"coffer secret rotate ID --payload-file f --cas 1", "coffer secret rotate --payload-file f --cas 1 ID"},
		{"coffer -o json secret rotate ID --payload-file - --clear-key-values", "coffer -o json secret rotate --payload-file - --clear-key-values ID"},
		{"coffer --socket /s secret get ID", "coffer --socket /s secret get ID"},
		{"coffer secret get ID -o json", "coffer -o json secret get ID"},
		{"coffer secret list --project p -o=yaml --limit 2", "coffer -o=yaml secret list --project p --limit 2"},
		{"coffer secret create --display-name a --payload-file=f", "coffer secret create --display-name a --payload-file=f"},
		{"coffer secret get -- --odd-id", "coffer secret get -- --odd-id"},
		{"coffer bogus x --y", "coffer bogus x --y"},
		{"coffer", "coffer"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got := strings.Join(interspersed(app, strings.Fields(tt.in)), " ")
			if got != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}
