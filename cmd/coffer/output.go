package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"

	"gopkg.in/yaml.v3"
)

// group is a command that only holds subcommands; anything else after it is
// a usage error.
func group(name, usage string, subs ...*cli.Command) *cli.Command {
	return &cli.Command{
		Name:        name,
		Usage:       usage,
		Subcommands: subs,
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("unknown command %q for 'coffer %s'", c.Args().First(), name)
			}
			return cli.ShowSubcommandHelp(c)
		},
	}
}

// field is one row of a key/value table.
type field struct {
	name  string
	value string
}

// render writes v in the chosen output format: json and yaml write the wire
// value; table writes the rows (one record) or the list table.
// doneResult is what a command that deletes, removes or revokes prints:
// what it did, to what (as the caller named it).
type doneResult struct {
	Kind   string `json:"kind"`
	Ref    string `json:"ref"`
	Result string `json:"result"`
}

// done says that kind ref is now result ("secret 01a2… deleted"); in
// JSON or YAML, as an object.
func done(c *cli.Context, kind, ref, result string) error {
	return render(c, doneResult{Kind: kind, Ref: ref, Result: result}, func(w io.Writer) {
		fmt.Fprintf(w, "%s %s %s\n", kind, ref, result)
	})
}

func render(c *cli.Context, v any, table func(w io.Writer)) error {
	w := c.App.Writer
	switch c.String("output") {
	case "json":
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(v)
	case "yaml":
		// Go through JSON so keys are the same snake_case as the API.
		b, err := json.Marshal(v)
		if err != nil {
			return err
		}
		var generic any
		if err := yaml.Unmarshal(b, &generic); err != nil {
			return err
		}
		enc := yaml.NewEncoder(w)
		enc.SetIndent(2)
		if err := enc.Encode(generic); err != nil {
			return err
		}
		return enc.Close()
	}
	table(w)
	return nil
}

// writeFields and writeRows write tables through a bufio.Writer:
// tabwriter holds everything until Flush anyway, then writes each cell
// and padding separately (a write(2) each on a terminal or pipe).
func writeFields(w io.Writer, fields []field) {
	bw := bufio.NewWriter(w)
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	for _, f := range fields {
		if f.value == "" {
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\n", strings.ToUpper(f.name), f.value)
	}
	tw.Flush()
	bw.Flush()
}

func writeRows(w io.Writer, header []string, rows [][]string) {
	bw := bufio.NewWriter(w)
	tw := tabwriter.NewWriter(bw, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	bw.Flush()
}

func ts(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

func tsp(t *time.Time) string {
	if t == nil {
		return ""
	}
	return ts(*t)
}

// withArg is the Action of a command that takes one positional argument
// (named what in usage errors) and talks to the daemon.
func withArg(what string, call func(c *cli.Context, cl *client.Client, arg string) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		arg, err := oneArg(c, what)
		if err != nil {
			return err
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		return call(c, cl, arg)
	}
}
