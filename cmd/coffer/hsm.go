package main

import (
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

// rotationPoll is how often rotate-kek asks for the re-wrap's progress.
const rotationPoll = 200 * time.Millisecond

var hsmCommand = group("hsm", "show the HSM token and its schemes; list and rotate its keys (system admins); print the import key",
	hsmInfoCommand,
	&cli.Command{
		Name:  "keys",
		Usage: "list the KEK versions and signing keys with what uses them, and the last KEK rotation",
		Action: noArgs("hsm keys", func(c *cli.Context, cl *client.Client) error {
			k, err := cl.HSMKeys(c.Context)
			if err != nil {
				return err
			}
			return render(c, k, func(w io.Writer) { writeKeys(w, k) })
		}),
	},
	&cli.Command{
		Name:  "rotate-kek",
		Usage: "make a new KEK current and re-wrap every sealed secret's key with it (payloads are not re-encrypted)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "no-wait", Usage: "return once the new KEK is current; the re-wrap goes on in the daemon (see 'coffer hsm keys')"},
		},
		Action: noArgs("hsm rotate-kek", func(c *cli.Context, cl *client.Client) error {
			rot, err := cl.RotateKEK(c.Context)
			if err != nil {
				return err
			}
			if !c.Bool("no-wait") {
				if rot, err = waitRotation(c, cl, rot.Target); err != nil {
					return err
				}
			}
			if err := render(c, rot, func(w io.Writer) { writeRotation(w, rot) }); err != nil {
				return err
			}
			switch {
			case rot.State == "interrupted":
				return fmt.Errorf("the re-wrap to %s stopped after %d records; it resumes at the next start or maintenance sweep (the daemon log says why)", rot.Target, rot.Rewrapped)
			case rot.Failed > 0:
				fmt.Fprintf(c.App.ErrWriter, "warning: %d sealed records did not open and keep an old KEK in use (the daemon log names them)\n", rot.Failed)
			}
			return nil
		}),
	},
	&cli.Command{
		Name:      "remove-kek",
		Usage:     "destroy an old KEK on the token once no sealed secret uses it and the Kubernetes KMS no longer needs it",
		ArgsUsage: "LABEL",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "force", Usage: "remove it although the Kubernetes KMS used it within the grace (see 'coffer k8s kms-keys'): only once every Secret has been rewritten under a newer key id"},
		},
		Action: withArg("LABEL", func(c *cli.Context, cl *client.Client, label string) error {
			return cl.RemoveKEK(c.Context, label, c.Bool("force"))
		}),
	},
	&cli.Command{
		Name:  "rotate-signing-key",
		Usage: "make a new token signing key current; the old one stays in the JWKS until the tokens it signed expire",
		Action: noArgs("hsm rotate-signing-key", func(c *cli.Context, cl *client.Client) error {
			r, err := cl.RotateSigningKey(c.Context)
			if err != nil {
				return err
			}
			return render(c, r, func(w io.Writer) {
				writeFields(w, []field{
					{"current", r.Current.Label},
					{"kid", r.Current.Kid},
					{"previous", r.Previous.Label},
					{"previous kid", r.Previous.Kid},
					{"previous published until", tsp(r.Previous.RetireAfter)},
				})
			})
		}),
	},
	hsmImportKeyCommand, // hsm_import.go
)

// noArgs is the Action of a command that takes no arguments and talks to
// the daemon.
func noArgs(name string, call func(c *cli.Context, cl *client.Client) error) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("%s takes no arguments", name)
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		return call(c, cl)
	}
}

// waitRotation polls the daemon until the re-wrap to target is no longer
// running.
func waitRotation(c *cli.Context, cl *client.Client, target string) (api.KEKRotation, error) {
	tick := time.NewTicker(rotationPoll)
	defer tick.Stop()
	for {
		k, err := cl.HSMKeys(c.Context)
		if err != nil {
			return api.KEKRotation{}, err
		}
		if r := k.Rotation; r != nil && r.Target == target && r.State != "running" {
			return *r, nil
		}
		select {
		case <-c.Context.Done():
			return api.KEKRotation{}, fmt.Errorf("stopped waiting; the re-wrap to %s goes on in the daemon (see 'coffer hsm keys'): %w", target, c.Context.Err())
		case <-tick.C:
		}
	}
}

func mark(b bool) string {
	if b {
		return "*"
	}
	return ""
}

func writeKeys(w io.Writer, k api.HSMKeys) {
	rows := make([][]string, 0, len(k.KEKs))
	for _, v := range k.KEKs {
		rows = append(rows, []string{v.Label, strconv.Itoa(v.Version), v.Scheme, mark(v.Current), strconv.Itoa(v.Records)})
	}
	writeRows(w, []string{"KEK", "VERSION", "SCHEME", "CURRENT", "SECRETS"}, rows)
	fmt.Fprintln(w)
	rows = rows[:0]
	for _, v := range k.SigningKeys {
		rows = append(rows, []string{v.Label, strconv.Itoa(v.Version), v.Alg, mark(v.Current), mark(v.Published), strconv.Itoa(v.Tokens), tsp(v.RetireAfter), v.Kid})
	}
	writeRows(w, []string{"SIGNING KEY", "VERSION", "ALG", "CURRENT", "IN JWKS", "TOKENS", "RETIRE AFTER", "KID"}, rows)
	if k.Rotation != nil {
		fmt.Fprintln(w)
		writeRotation(w, *k.Rotation)
	}
}

func writeRotation(w io.Writer, r api.KEKRotation) {
	writeFields(w, []field{
		{"kek rotation", r.State},
		{"to", r.Target},
		{"from", r.Previous},
		{"re-wrapped", strconv.Itoa(r.Rewrapped)},
		{"failed", strconv.Itoa(r.Failed)},
		{"remaining", strconv.Itoa(r.Remaining)},
		{"started", ts(r.StartedAt)},
		{"finished", tsp(r.FinishedAt)},
	})
}
