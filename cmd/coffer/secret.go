package main

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

var (
	payloadFileFlag = &cli.StringFlag{Name: "payload-file", Usage: "read the payload from `FILE` (- for standard input); it is never printed"}
	keyValueFlag    = &cli.StringSliceFlag{Name: "key-value", Usage: "a `KEY=VALUE` stored sealed with the payload (repeatable; it shows in ps and shell history: prefer --key-values-file for secret values)"}
	keyValuesFile   = &cli.StringFlag{Name: "key-values-file", Usage: "read KEY=VALUE lines from `FILE` (- for standard input, when the payload is not read from it)"}
	expiresAtFlag   = &cli.TimestampFlag{Name: "expires-at", Usage: "expiry as an RFC 3339 `TIME` (e.g. 2030-01-02T15:04:05Z)", Layout: time.RFC3339}
)

var secretCommand = group("secret", "broker secrets sealed by the HSM",
	&cli.Command{
		Name:  "create",
		Usage: "create a secret from a payload (printed back as metadata only)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "owning `PROJECT`", Value: "default"},
			&cli.StringFlag{Name: "display-name", Usage: "human `NAME` of the secret"},
			payloadFileFlag, keyValueFlag, keyValuesFile, expiresAtFlag,
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("secret create takes no arguments; pass the payload with --payload-file")
			}
			if !c.IsSet("display-name") {
				return usagef("secret create needs --display-name")
			}
			payload, err := readPayload(c)
			if err != nil {
				return err
			}
			defer clear(payload)
			kvs, err := keyValues(c)
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			s, err := cl.CreateSecret(c.Context, c.String("project"), client.SecretCreate{
				DisplayName: c.String("display-name"), Payload: payload, KeyValues: kvs, ExpiresAt: c.Timestamp("expires-at"),
			})
			if err != nil {
				return err
			}
			return renderSecret(c, s)
		},
	},
	&cli.Command{
		Name:      "get",
		Usage:     "show a secret's metadata",
		ArgsUsage: "ID",
		Action: withArg("ID", func(c *cli.Context, cl *client.Client, id string) error {
			s, err := cl.GetSecret(c.Context, id)
			if err != nil {
				return err
			}
			if c.String("output") != "table" {
				return renderSecret(c, s)
			}
			// The table also shows who receives the payload.
			bs, err := cl.ListBindings(c.Context, id)
			if err != nil {
				return err
			}
			if err := renderSecret(c, s); err != nil {
				return err
			}
			writeBindings(c.App.Writer, bs.Items)
			return nil
		}),
	},
	&cli.Command{
		Name:  "list",
		Usage: "list a project's secrets",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "`PROJECT` to list", Value: "default"},
			&cli.IntFlag{Name: "limit", Usage: "show at most `N` (one page); default all"},
			&cli.StringFlag{Name: "after", Usage: "start after secret `ID` (from a previous page)"},
			&cli.StringFlag{Name: "expiring-within", Usage: "only active ones expiring within `DURATION` (7d, 2weeks, 12h)"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("secret list takes no arguments")
			}
			if c.Int("limit") < 0 {
				return usagef("--limit must be positive")
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			page := client.PageQuery{Limit: c.Int("limit"), After: c.String("after")}
			within := ""
			if c.IsSet("expiring-within") {
				if within, err = window(c, "expiring-within"); err != nil {
					return err
				}
			}
			var out api.List[api.Secret]
			for {
				l, err := cl.ListSecretsExpiring(c.Context, c.String("project"), within, page)
				if err != nil {
					return err
				}
				out.Items = append(out.Items, l.Items...)
				out.Next = l.Next
				if l.Next == "" || page.Limit > 0 {
					break
				}
				page.After = l.Next
			}
			return render(c, out, func(w io.Writer) {
				rows := make([][]string, 0, len(out.Items))
				for _, s := range out.Items {
					rows = append(rows, []string{s.ID, s.DisplayName, fmt.Sprint(s.Version), s.Status, ts(s.UpdatedAt), tsp(s.ExpiresAt)})
				}
				writeRows(w, []string{"ID", "DISPLAY NAME", "VERSION", "STATUS", "UPDATED", "EXPIRES"}, rows)
				if out.Next != "" {
					fmt.Fprintf(w, "more: --after %s\n", out.Next)
				}
			})
		},
	},
	&cli.Command{
		Name:      "rotate",
		Usage:     "replace a secret's payload with a new version",
		ArgsUsage: "ID",
		Flags: []cli.Flag{
			payloadFileFlag, keyValueFlag, keyValuesFile, expiresAtFlag,
			&cli.BoolFlag{Name: "clear-key-values", Usage: "drop the key_values (default: keep them unless --key-value is given)"},
			&cli.IntFlag{Name: "cas", Usage: "fail unless the current version is `N`"},
		},
		Action: func(c *cli.Context) error {
			id, err := oneArg(c, "ID")
			if err != nil {
				return err
			}
			payload, err := readPayload(c)
			if err != nil {
				return err
			}
			defer clear(payload)
			kvs, err := keyValues(c)
			if err != nil {
				return err
			}
			if c.Bool("clear-key-values") {
				if kvs != nil {
					return usagef("--clear-key-values and --key-value do not go together")
				}
				kvs = map[string]string{}
			}
			in := client.SecretRotate{Payload: payload, KeyValues: kvs, ExpiresAt: c.Timestamp("expires-at")}
			if c.IsSet("cas") {
				v := c.Int("cas")
				in.CAS = &v
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			s, err := cl.RotateSecret(c.Context, id, in)
			if err != nil {
				return err
			}
			if err := renderSecret(c, s); err != nil {
				return err
			}
			if c.String("output") == "table" {
				// The rotation stands whatever the units did: a failed
				// action is reported, not an error (exit 0).
				for _, a := range s.UnitActions {
					if a.Error != "" {
						fmt.Fprintf(c.App.Writer, "unit %s: %s: %s\n", a.Unit, a.Result, a.Error)
					} else {
						fmt.Fprintf(c.App.Writer, "unit %s: %s\n", a.Unit, a.Result)
					}
				}
			}
			return nil
		},
	},
	&cli.Command{
		Name:      "revoke",
		Usage:     "revoke a secret and destroy its ciphertext (metadata stays)",
		ArgsUsage: "ID",
		Action: withArg("ID", func(c *cli.Context, cl *client.Client, id string) error {
			s, err := cl.RevokeSecret(c.Context, id)
			if err != nil {
				return err
			}
			return renderSecret(c, s)
		}),
	},
	&cli.Command{
		Name:      "delete",
		Usage:     "delete a secret and its ciphertext",
		ArgsUsage: "ID",
		Action: withArg("ID", func(c *cli.Context, cl *client.Client, id string) error {
			if err := cl.DeleteSecret(c.Context, id); err != nil {
				return err
			}
			return done(c, "secret", id, "deleted")
		}),
	},
	bindCommand,
	unbindCommand,
	secretImportCommand,
)

func renderSecret(c *cli.Context, s api.Secret) error {
	return render(c, s, func(w io.Writer) {
		writeFields(w, []field{
			{"id", s.ID},
			{"project", s.Project},
			{"display name", s.DisplayName},
			{"version", fmt.Sprint(s.Version)},
			{"status", s.Status},
			{"created", ts(s.CreatedAt)},
			{"updated", ts(s.UpdatedAt)},
			{"rotated", tsp(s.RotatedAt)},
			{"revoked", tsp(s.RevokedAt)},
			{"expires", tsp(s.ExpiresAt)},
		})
	})
}

// maxPayloadRead bounds what is read from --payload-file; the daemon's own
// limit is lower and gives the precise error.
const maxPayloadRead = 1 << 20

func readPayload(c *cli.Context) ([]byte, error) {
	path := c.String("payload-file")
	if path == "" {
		return nil, usagef("'%s' needs --payload-file FILE (or - for standard input)", c.Command.HelpName)
	}
	var r io.Reader
	size := int64(-1)
	if path == "-" {
		r = c.App.Reader
	} else {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read payload: %w", err)
		}
		defer f.Close()
		if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && fi.Size() <= maxPayloadRead {
			size = fi.Size()
		}
		r = f
	}
	// ReadSecret leaves no copies behind as its buffer grows.
	b, err := api.ReadSecret(io.LimitReader(r, maxPayloadRead+1), size)
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("read payload from %s: %w", path, err)
	}
	if len(b) > maxPayloadRead {
		clear(b)
		return nil, fmt.Errorf("payload from %s is larger than %d bytes", path, maxPayloadRead)
	}
	return b, nil
}

func keyValues(c *cli.Context) (map[string]string, error) {
	pairs := c.StringSlice("key-value")
	if path := c.String("key-values-file"); path != "" {
		if path == "-" && c.String("payload-file") == "-" {
			return nil, usagef("--payload-file and --key-values-file cannot both read standard input")
		}
		lines, err := readKeyValuesFile(c, path)
		if err != nil {
			return nil, err
		}
		pairs = append(pairs, lines...)
	}
	if len(pairs) == 0 {
		return nil, nil
	}
	m := make(map[string]string, len(pairs))
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, usagef("key values take KEY=VALUE; got an entry without '=' or key")
		}
		if _, dup := m[k]; dup {
			return nil, usagef("key %s given twice", k)
		}
		m[k] = v
	}
	return m, nil
}

// readKeyValuesFile reads KEY=VALUE lines; blank lines and lines starting
// with # are skipped. Values are taken as they are (no quoting).
func readKeyValuesFile(c *cli.Context, path string) ([]string, error) {
	var r io.Reader = c.App.Reader
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read key values: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := api.ReadSecret(io.LimitReader(r, maxPayloadRead), -1)
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("read key values from %s: %w", path, err)
	}
	defer clear(b)
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSuffix(line, "\r")
		if t := strings.TrimSpace(line); t == "" || strings.HasPrefix(t, "#") {
			continue
		}
		out = append(out, line)
	}
	return out, nil
}

func writeBindings(w io.Writer, bs []api.Binding) {
	if len(bs) == 0 {
		return
	}
	fmt.Fprintln(w)
	rows := make([][]string, 0, len(bs))
	for _, b := range bs {
		to, as := b.Unit, b.Credential
		if b.Kind == "user" {
			to, as = "user "+b.User, b.Name
		}
		onRotate := b.OnRotate
		if onRotate == "" {
			onRotate = "-" // a user's consumer watches (coffer deliver --watch)
		}
		rows = append(rows, []string{b.ID, to, as, onRotate})
	}
	writeRows(w, []string{"BINDING", "DELIVERED TO", "AS", "ON ROTATE"}, rows)
}

var bindCommand = &cli.Command{
	Name:      "bind",
	Usage:     "let a systemd unit (LoadCredential=) or a user receive the secret's payload",
	ArgsUsage: "ID",
	Description: `coffer secret bind ID --unit nginx.service --as tls-key
    the unit gets the payload with LoadCredential=tls-key:/run/coffer/creds.sock
coffer secret bind ID --user vm-web --as dbpass
    the user (by uid, vsock CID, VM or token) gets it with 'coffer deliver dbpass'

--on-rotate (units only) says what systemd does to the unit once a rotation
of the secret commits: try-restart (the default: restart it if it runs, a
stopped unit stays stopped), restart (start it either way), reload (its
ExecReload=) or none. 'coffer secret rotate' prints what each came to.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "unit", Usage: "systemd `UNIT` that loads it as a credential"},
		&cli.StringFlag{Name: "on-rotate", Usage: "what to do to the unit when the secret is rotated: `ACTION` try-restart (default), restart, reload or none"},
		&cli.StringFlag{Name: "user", Usage: "`USER` that receives it"},
		&cli.StringFlag{Name: "as", Usage: "the credential or delivery `NAME` it is received under"},
	},
	Action: func(c *cli.Context) error {
		id, err := oneArg(c, "ID")
		if err != nil {
			return err
		}
		unit, user, as := c.String("unit"), c.String("user"), c.String("as")
		if (unit == "") == (user == "") {
			return usagef("give one of --unit or --user")
		}
		if as == "" {
			return usagef("give the name it is received under with --as")
		}
		req := api.BindingCreateRequest{User: user, Name: as}
		if unit != "" {
			req = api.BindingCreateRequest{Unit: unit, Credential: as, OnRotate: c.String("on-rotate")}
		} else if c.IsSet("on-rotate") {
			return usagef("--on-rotate is for --unit bindings; a user's consumer follows rotations with 'coffer deliver --watch'")
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		b, err := cl.CreateBinding(c.Context, id, req)
		if err != nil {
			return err
		}
		return render(c, b, func(w io.Writer) { writeBindings(w, []api.Binding{b}) })
	},
}

var unbindCommand = &cli.Command{
	Name:      "unbind",
	Usage:     "remove a binding (see 'coffer secret get ID')",
	ArgsUsage: "ID BINDING",
	Action: func(c *cli.Context) error {
		if c.NArg() != 2 {
			return usagef("'%s' needs the secret ID and the BINDING id", c.Command.HelpName)
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		if err := cl.DeleteBinding(c.Context, c.Args().Get(0), c.Args().Get(1)); err != nil {
			return err
		}
		return done(c, "binding", c.Args().Get(1), "deleted")
	},
}
