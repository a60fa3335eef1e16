package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/hostseal"
	"github.com/coffer-hsm/coffer/internal/atomicfile"
)

// Sealed import, the host's side: hand out the import key, take in what
// `coffer seal` made with it.

var hsmImportKeyCommand = &cli.Command{
	Name:      "import-key",
	Usage:     "print the host's import key, to seal secrets to it (coffer seal --to)",
	UsageText: "coffer hsm import-key [--out FILE] > host.pub",
	Description: `Prints the public half of the HSM's import key (PEM) and its fingerprint.
Anyone with it can seal a secret for this host with 'coffer seal', offline;
only this host's HSM can open it ('coffer secret import').`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "out", Usage: "write the key to `FILE` instead of standard output"},
	},
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("hsm import-key takes no arguments")
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		k, err := cl.ImportKey(c.Context)
		if err != nil {
			return err
		}
		// The fingerprint is printed for people to compare: check it
		// names the key printed with it.
		pub, err := hostseal.ParsePublicKey([]byte(k.PublicKeyPEM))
		if err != nil {
			return fmt.Errorf("the daemon's import key: %w", err)
		}
		if fp, err := hostseal.Fingerprint(pub); err != nil || fp != k.Fingerprint {
			return fmt.Errorf("the daemon's import key does not match its fingerprint %s", k.Fingerprint)
		}
		text := k.PublicKeyPEM + "fingerprint: " + k.Fingerprint + "\n"
		if path := c.String("out"); path != "" {
			if err := atomicfile.Write(path, []byte(text), 0o644); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			return render(c, k, func(w io.Writer) { fmt.Fprintf(w, "fingerprint: %s\n", k.Fingerprint) })
		}
		return render(c, k, func(w io.Writer) { io.WriteString(w, text) })
	},
}

// maxSealedRead bounds what is read of a sealed file; the daemon refuses
// more than api.ImportBodyLimit with a clear error.
const maxSealedRead = 1 << 20

var secretImportCommand = &cli.Command{
	Name:      "import",
	Usage:     "import a secret sealed to this host (coffer seal); prints its metadata",
	ArgsUsage: "FILE|-",
	Description: `Sends a sealed file made by 'coffer seal --to HOST.pub' to the daemon, which
opens it with the HSM's import key and stores the secret in the file's
project under the file's display name. Each file imports once.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "import into `PROJECT` (default: the project the file was sealed for; it must match)"},
	},
	Action: func(c *cli.Context) error {
		path, err := oneArg(c, "FILE (or - for standard input)")
		if err != nil {
			return err
		}
		sealed, err := readSealed(c, path)
		if err != nil {
			return err
		}
		project := c.String("project")
		if project == "" {
			var head struct {
				Project string `json:"project"`
			}
			if err := json.Unmarshal(sealed, &head); err != nil || head.Project == "" {
				return fmt.Errorf("%s is not a sealed secret (from coffer seal): it names no project", path)
			}
			project = head.Project
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		s, err := cl.ImportSecret(c.Context, project, sealed)
		if err != nil {
			return err
		}
		return renderSecret(c, s)
	},
}

func readSealed(c *cli.Context, path string) ([]byte, error) {
	var r io.Reader = c.App.Reader
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, fmt.Errorf("read sealed file: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSealedRead+1))
	if err != nil {
		return nil, fmt.Errorf("read sealed file %s: %w", path, err)
	}
	if len(b) > maxSealedRead {
		return nil, fmt.Errorf("%s is larger than %d bytes: not a sealed secret (the daemon takes up to %d)", path, maxSealedRead, api.ImportBodyLimit)
	}
	return b, nil
}
