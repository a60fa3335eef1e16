// Command coffer is the coffer daemon (coffer daemon) and its client.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/unixapi"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes (DESIGN §5).
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitUnreachable = 3
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run runs the CLI and returns its exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	err := app.RunContext(ctx, interspersed(app, args))
	return exitCode(stderr, err)
}

// usageError is a mistake in how coffer was called.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitCode prints err as one line and picks the exit code.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var unreachable *unixapi.UnreachableError
	var apiErr *unixapi.APIError
	var exit cli.ExitCoder
	switch {
	case errors.As(err, &ue):
		fmt.Fprintf(stderr, "coffer: %s (see 'coffer --help')\n", ue.msg)
		return exitUsage
	case errors.As(err, &unreachable):
		fmt.Fprintf(stderr, "coffer: %s\n", unreachable)
		return exitUnreachable
	case errors.As(err, &apiErr):
		fmt.Fprintf(stderr, "coffer: %s (%s)\n", apiErr.Message, apiErr.Code)
		return exitError
	case errors.As(err, &exit):
		fmt.Fprintf(stderr, "coffer: %s\n", err)
		return exit.ExitCode()
	}
	fmt.Fprintf(stderr, "coffer: %s\n", err)
	return exitError
}

func newApp(stdin io.Reader, stdout, stderr io.Writer) *cli.App {
	app := &cli.App{
		Name:                      "coffer",
		Usage:                     "a local credential daemon with keys in an HSM",
		Version:                   version,
		Reader:                    stdin,
		Writer:                    stdout,
		ErrWriter:                 stderr,
		EnableBashCompletion:      true,
		DisableSliceFlagSeparator: true,
		HideHelpCommand:           true,
		Flags: []cli.Flag{
			&cli.StringFlag{
				Name:    "socket",
				Usage:   "the daemon's Unix socket",
				EnvVars: []string{"COFFER_SOCKET"},
				Value:   defaultSocket,
			},
			&cli.StringFlag{
				Name:    "output",
				Aliases: []string{"o"},
				Usage:   "output format: table, json or yaml",
				Value:   "table",
			},
		},
		Before: func(c *cli.Context) error {
			switch c.String("output") {
			case "table", "json", "yaml":
				return nil
			}
			return usagef("unknown output format %q: use table, json or yaml", c.String("output"))
		},
		Commands: []*cli.Command{
			daemonCommand,
			projectCommand,
			secretCommand,
			statusCommand,
		},
	}
	onUsage := func(c *cli.Context, err error, _ bool) error { return &usageError{msg: err.Error()} }
	notFound := func(c *cli.Context, name string) {
		fmt.Fprintf(stderr, "coffer: unknown command %q (see 'coffer --help')\n", name)
		cli.OsExiter(exitUsage)
	}
	app.OnUsageError = onUsage
	app.CommandNotFound = notFound
	var walk func([]*cli.Command)
	walk = func(cmds []*cli.Command) {
		for _, c := range cmds {
			c.OnUsageError = onUsage
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	return app
}

const defaultSocket = "/run/coffer/coffer.sock"
