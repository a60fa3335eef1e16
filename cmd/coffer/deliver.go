package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
	"github.com/coffer-hsm/coffer/unixapi"
)

var deliverCommand = &cli.Command{
	Name:      "deliver",
	Usage:     "fetch a payload bound to you (by uid, vsock CID, VM or token) under NAME",
	ArgsUsage: "NAME",
	Description: `Writes the raw payload to standard output, or to FILE with -o (created 0600,
replaced atomically). Anything not bound to you is "not found", whether or
not it exists.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "output-file", Aliases: []string{"o"}, Usage: "write the payload to `FILE` (mode 0600)"},
		&cli.StringFlag{Name: "key", Usage: "fetch the secret's key_values entry `KEY` instead of its payload"},
		&cli.StringFlag{Name: "project", Usage: "the `PROJECT` whose binding to use, when NAME is bound to you in several"},
	},
	Action: withArg("NAME", func(c *cli.Context, cl *unixapi.Client, name string) error {
		payload, err := cl.DeliverFrom(c.Context, name, c.String("key"), c.String("project"))
		if err != nil {
			return err
		}
		defer clear(payload)
		path := c.String("output-file")
		if path == "" || path == "-" {
			_, err := c.App.Writer.Write(payload)
			return err
		}
		return writeFile0600(path, payload)
	}),
}

// writeFile0600 writes data to path crash-safely: a temporary file created
// 0600 in the same directory, fsynced, renamed into place, and the
// directory fsynced.
func writeFile0600(path string, data []byte) error {
	if err := atomicfile.Write(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
