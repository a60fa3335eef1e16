//go:build !urfave_cli_no_docs

package main

import (
	"bytes"
	"context"
	"flag"
	"os"
	"strings"
	"testing"
)

var updateMan = flag.Bool("update-man", false, "rewrite coffer.8 from the command tree")

// TestManPageFileIsCurrent: builds tagged urfave_cli_no_docs print coffer.8
// for 'coffer man'; it must be what the command tree renders now.
func TestManPageFileIsCurrent(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"coffer", "man"}, strings.NewReader(""), &stdout, &stderr); code != exitOK {
		t.Fatalf("coffer man: exit %d: %s", code, stderr.String())
	}
	if *updateMan {
		if err := os.WriteFile("coffer.8", stdout.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	file, err := os.ReadFile("coffer.8")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(file, stdout.Bytes()) {
		t.Fatalf("coffer.8 is not the man page the commands render now: run go test ./cmd/coffer -run TestManPage -update-man")
	}
}
