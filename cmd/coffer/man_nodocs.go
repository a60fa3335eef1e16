//go:build urfave_cli_no_docs

package main

import (
	_ "embed"

	"github.com/urfave/cli/v2"
)

// coffer.8 is what man_docs.go renders, kept current by
// TestManPageFileIsCurrent (go test ./cmd/coffer -run TestManPage -update-man).
//
//go:embed coffer.8
var manPageFile string

// manPage is the man page as rendered when coffer.8 was last updated.
func manPage(*cli.App) (string, error) { return manPageFile, nil }
