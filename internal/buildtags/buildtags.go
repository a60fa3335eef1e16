// Package buildtags names the build tags coffer ships with, for the Go
// programs that build the binary themselves (the bench, the e2e tests);
// the Makefile's TAGS must say the same.
package buildtags

// Release are the tags of a shipped coffer binary. urfave_cli_no_docs
// leaves out urfave/cli's Markdown and man-page generators (and their
// package initialization, about 0.4 ms of every CLI call); `coffer man`
// writes its pages with its own roff writer (cmd/coffer/man.go) in every
// build.
const Release = "urfave_cli_no_docs"
