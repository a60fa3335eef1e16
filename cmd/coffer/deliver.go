package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/internal/atomicfile"
)

var deliverCommand = &cli.Command{
	Name:      "deliver",
	Usage:     "fetch a payload bound to you (by uid, vsock CID, VM or token) under NAME",
	ArgsUsage: "NAME",
	Description: `Writes the raw payload to standard output, or to FILE with --out (created
0600, replaced atomically). Anything not bound to you is "not found", whether or
not it exists.

With --watch it keeps going: each new version (a rotation) replaces FILE
atomically and runs --exec CMD (with sh -c; COFFER_VERSION, COFFER_SECRET_ID
and COFFER_FILE in its environment; without --out the payload is on its
standard input). It waits on the daemon (GET /v1/deliver/NAME?wait=), so a
rotation reaches it at once; it reconnects with backoff (1s doubling to 30s)
when the daemon is unreachable or busy, and exits 1 when the name is no
longer bound to it (not found), 0 on SIGINT or SIGTERM.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "out", Usage: "write the payload to `FILE` (mode 0600)"},
		// -o is the output format everywhere; deliver's -o FILE (and
		// --output-file) of old get a pointer to --out, not a surprise.
		&cli.StringFlag{Name: "o", Aliases: []string{"output-file"}, Hidden: true},
		&cli.StringFlag{Name: "key", Usage: "fetch the secret's key_values entry `KEY` instead of its payload"},
		&cli.StringFlag{Name: "project", Usage: "the `PROJECT` whose binding to use, when NAME is bound to you in several"},
		&cli.BoolFlag{Name: "watch", Usage: "keep FILE current: wait for new versions and write each (needs --out or --exec)"},
		&cli.StringFlag{Name: "exec", Usage: "with --watch: run `CMD` (sh -c) after each new version"},
		durationFlag(cli.StringFlag{Name: "wait", Usage: "with --watch: how long each request waits for a new version (at most 5m)"}, 5*time.Minute),
	},
	Action: withArg("NAME", func(c *cli.Context, cl *client.Client, name string) error {
		if c.IsSet("o") {
			return usagef("deliver writes a file with --out FILE (-o is the output format of other commands)")
		}
		path := c.String("out")
		if c.Bool("watch") {
			if (path == "" || path == "-") && c.String("exec") == "" {
				return usagef("--watch needs --out FILE or --exec CMD")
			}
			if w, err := flagDuration(c, "wait"); err != nil {
				return err
			} else if w < time.Second || w > 5*time.Minute {
				return usagef("--wait must be from 1s to 5m, not %s", formatDuration(w))
			}
			return watchDelivery(c, cl, name)
		}
		if c.IsSet("exec") {
			return usagef("--exec goes with --watch")
		}
		payload, err := cl.DeliverFrom(c.Context, name, c.String("key"), c.String("project"))
		if err != nil {
			return err
		}
		defer clear(payload)
		if path == "" || path == "-" {
			_, err := c.App.Writer.Write(payload)
			return err
		}
		return writeFile0600(path, payload)
	}),
}

// watch backoff bounds.
const (
	watchBackoffMin = time.Second
	watchBackoffMax = 30 * time.Second
)

// watchDelivery is deliver --watch: one waiting request after another,
// each asking for a version newer than the last one written.
func watchDelivery(c *cli.Context, cl *client.Client, name string) error {
	ctx := c.Context
	path, cmd := c.String("out"), c.String("exec")
	wait, _ := flagDuration(c, "wait") // checked by the action
	if path == "-" {
		path = ""
	}
	after, backoff := 0, watchBackoffMin
	for {
		w, err := cl.WatchDelivery(ctx, name, c.String("key"), c.String("project"), after, wait)
		if ctx.Err() != nil {
			return nil // SIGINT, SIGTERM
		}
		if err != nil {
			if permanentWatchError(err) {
				return err
			}
			d := backoff/2 + rand.N(backoff/2+1)
			fmt.Fprintf(c.App.ErrWriter, "coffer deliver --watch: %v; retrying in %s\n", err, d.Round(100*time.Millisecond))
			backoff = min(backoff*2, watchBackoffMax)
			select {
			case <-time.After(d):
			case <-ctx.Done():
				return nil
			}
			continue
		}
		backoff = watchBackoffMin
		if w.NotModified {
			continue
		}
		err = applyVersion(ctx, c, path, cmd, w)
		clear(w.Payload)
		if err != nil {
			return err
		}
		after = w.Version
	}
}

// permanentWatchError: errors that waiting will not mend (the name no
// longer bound to the caller, a bad argument, a refused token).
func permanentWatchError(err error) bool {
	return errors.Is(err, api.ErrNotFound) || errors.Is(err, api.ErrInvalidArgument) ||
		errors.Is(err, api.ErrForbidden) || errors.Is(err, api.ErrUnauthenticated)
}

// applyVersion writes a new version to path (if any) and runs cmd (if
// any). A command that fails is reported, not fatal: the next version
// runs it again.
func applyVersion(ctx context.Context, c *cli.Context, path, cmd string, w client.Watched) error {
	if path != "" {
		if err := writeFile0600(path, w.Payload); err != nil {
			return err
		}
	}
	fmt.Fprintf(c.App.ErrWriter, "coffer deliver --watch: version %d\n", w.Version)
	if cmd == "" {
		return nil
	}
	x := exec.CommandContext(ctx, "/bin/sh", "-c", cmd)
	x.Env = append(os.Environ(), "COFFER_VERSION="+strconv.Itoa(w.Version), "COFFER_SECRET_ID="+w.SecretID, "COFFER_FILE="+path)
	x.Stdout, x.Stderr = c.App.Writer, c.App.ErrWriter
	if path == "" {
		x.Stdin = bytes.NewReader(w.Payload)
	}
	if err := x.Run(); err != nil && ctx.Err() == nil {
		fmt.Fprintf(c.App.ErrWriter, "coffer deliver --watch: --exec command: %v\n", err)
	}
	return nil
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
