//go:build !urfave_cli_no_docs

package main

import "github.com/urfave/cli/v2"

// manPage renders the man page from the command tree with urfave/cli's
// markdown and md2man. Builds tagged urfave_cli_no_docs leave those
// packages out (their init costs every command ~0.3 ms) and print the
// same page from coffer.8 (man_nodocs.go); TestManPageFileIsCurrent keeps
// the two equal.
func manPage(app *cli.App) (string, error) { return app.ToMan() }
