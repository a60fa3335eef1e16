// Command coffer is the coffer daemon (coffer daemon) and its client.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"reflect"
	"syscall"

	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// Exit codes (DESIGN §5).
const (
	exitOK          = 0
	exitError       = 1
	exitUsage       = 2
	exitUnreachable = 3
	exitUnhealthy   = 4 // coffer status: the daemon answered, a part of it does not
)

func main() {
	// No stop(): os.Exit follows at once, and undoing the signal handling
	// costs two hand-offs to the runtime's signal thread and the wake-up
	// of a goroutine (~0.1 ms of every command).
	ctx, _ := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	os.Exit(run(ctx, os.Args, os.Stdin, os.Stdout, os.Stderr))
}

// run runs the CLI and returns its exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	app := newApp(stdin, stdout, stderr)
	app.Metadata = map[string]any{argsKey: args} // for completion (completion.go)
	if len(args) == 0 || args[len(args)-1] != completionFlag {
		// Shell completion needs its flag last, where the shell put it.
		args = interspersed(app, args)
	}
	err := app.RunContext(ctx, args)
	return exitCode(stderr, err)
}

// usageError is a mistake in how coffer was called.
// usageError is a mistake in how coffer was called. cmd is the command
// whose help says how (set as the error leaves it; "coffer" for the app).
type usageError struct{ msg, cmd string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error {
	return &usageError{msg: fmt.Sprintf(format, args...)}
}

// exitStatus ends coffer with code and no message: the output already said
// why (authorize --exit-code on a denial). It is not a cli.ExitCoder, which
// would make urfave/cli exit the process itself.
type exitStatus struct{ code int }

func (e *exitStatus) Error() string { return fmt.Sprintf("exit status %d", e.code) }

const completionFlag = "--generate-bash-completion"

// exitCode prints err as one line and picks the exit code.
func exitCode(stderr io.Writer, err error) int {
	if err == nil {
		return exitOK
	}
	var ue *usageError
	var unreachable *client.UnreachableError
	var apiErr *client.APIError
	var exit cli.ExitCoder
	var status *exitStatus
	switch {
	case errors.As(err, &status):
		return status.code
	case errors.As(err, &ue):
		cmd := ue.cmd
		if cmd == "" {
			cmd = "coffer"
		}
		fmt.Fprintf(stderr, "coffer: %s (see '%s --help')\n", ue.msg, cmd)
		return exitUsage
	case errors.As(err, &unreachable):
		fmt.Fprintf(stderr, "coffer: %s\n", unreachable)
		return exitUnreachable
	case errors.As(err, &apiErr):
		if apiErr.Message == "" { // OAuth2 errors may come without a description
			fmt.Fprintf(stderr, "coffer: %s (HTTP %d)\n", apiErr.Code, apiErr.Status)
			return exitError
		}
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
				Name:    "vsock",
				Usage:   "talk to the daemon over vsock at `CID:PORT` (from inside a VM: 2:PORT is the host)",
				EnvVars: []string{"COFFER_VSOCK"},
			},
			&cli.StringFlag{
				Name:  "token",
				Usage: "authenticate every request with the bearer `TOKEN` (also $COFFER_TOKEN; prefer --token-file: a flag shows in ps)",
			},
			&cli.StringFlag{
				Name:  "token-file",
				Usage: "read the bearer token from `FILE`, - for standard input (also $COFFER_TOKEN_FILE)",
			},
			&cli.StringFlag{
				Name:    "profile",
				Usage:   "use the saved settings `NAME` (see 'coffer profile')",
				EnvVars: []string{"COFFER_PROFILE"},
			},
			&cli.StringFlag{
				Name:    "output",
				Aliases: []string{"o"},
				Usage:   "output format: table, json or yaml",
				Value:   "table",
			},
		},
		Before: func(c *cli.Context) error {
			captureGlobals(c)
			switch c.String("output") {
			case "table", "json", "yaml":
				return nil
			}
			return usagef("unknown output format %q: use table, json or yaml", c.String("output"))
		},
		Commands: cloneCommands([]*cli.Command{
			daemonCommand,
			statusCommand,
			whoamiCommand,
			deliverCommand,
			projectCommand,
			secretCommand,
			sealCommand,
			userCommand,
			roleCommand,
			credCommand,
			accessRuleCommand,
			policyCommand,
			loginCommand,
			sessionCommand,
			tokenCommand,
			introspectCommand,
			authorizeCommand,
			auditCommand,
			hsmCommand,
			k8sCommand, // k8s.go
			profileCommand,
			backupCommand,
			restoreCommand,
			storeCommand,
			completionCommand,
			manCommand,
		}),
	}
	onUsage := func(c *cli.Context, err error, _ bool) error {
		return &usageError{msg: err.Error(), cmd: helpName(c)}
	}
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
			if act := c.Action; act != nil {
				// A usage error of the action points to this command's
				// help, not the app's.
				c.Action = func(ctx *cli.Context) error {
					err := act(ctx)
					var ue *usageError
					if errors.As(err, &ue) && ue.cmd == "" {
						ue.cmd = helpName(ctx)
					}
					return err
				}
			}
			walk(c.Subcommands)
		}
	}
	walk(app.Commands)
	installCompletion(app)
	return app
}

// helpName is the command line that shows c's command's help: "coffer
// secret create" (the app's name when c runs no command).
func helpName(c *cli.Context) string {
	if c == nil || c.Command == nil || c.Command.HelpName == "" {
		return "coffer"
	}
	return c.Command.HelpName
}

const defaultSocket = "/run/coffer/coffer.sock"

// defaultConfigFile is read by `coffer daemon` (not --dev) when it exists
// (named in the man pages of both builds).
const defaultConfigFile = "/etc/coffer/coffer.toml"

// cloneCommands deep-copies the command tree: urfave/cli records state in
// commands and flags while it runs (help names, help flags and commands,
// which flags were set), so each app gets its own copy of the package-level
// definitions and several apps can run in one process (tests).
func cloneCommands(cmds []*cli.Command) []*cli.Command {
	if cmds == nil {
		return nil
	}
	out := make([]*cli.Command, len(cmds))
	for i, c := range cmds {
		cp := *c
		cp.Flags = make([]cli.Flag, len(c.Flags))
		for j, f := range c.Flags {
			cp.Flags[j] = cloneFlag(f)
		}
		cp.Subcommands = cloneCommands(c.Subcommands)
		out[i] = &cp
	}
	return out
}

// cloneFlag copies the struct behind a flag pointer (*cli.StringFlag, ...).
func cloneFlag(f cli.Flag) cli.Flag {
	v := reflect.ValueOf(f)
	if v.Kind() != reflect.Pointer || v.Elem().Kind() != reflect.Struct {
		return f
	}
	cp := reflect.New(v.Elem().Type())
	cp.Elem().Set(v.Elem())
	return cp.Interface().(cli.Flag)
}
