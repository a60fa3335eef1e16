package main

import (
	"encoding/json"
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/hostseal"
)

// sealCommand seals a secret to one host's import key. It needs no daemon
// and no token: a fleet controller runs it, and only that host can open
// the result (`coffer secret import`).
var sealCommand = &cli.Command{
	Name:      "seal",
	Usage:     "seal a secret to one host's import key (offline; prints sealed JSON)",
	UsageText: "coffer seal --to HOST.pub --project P --display-name NAME --payload-file FILE > sealed.json",
	Description: `Encrypts the payload (and key values) to the host whose import key is in
--to (the output of 'coffer hsm import-key' on that host). No daemon or token
is needed. Only that host's daemon can import the result, once.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "to", Usage: "the host's import key `FILE` (PEM)", Required: true},
		&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "`PROJECT` the secret will belong to", Value: "default"},
		&cli.StringFlag{Name: "display-name", Usage: "human `NAME` of the secret", Required: true},
		&cli.StringFlag{Name: "out", Usage: "write to `FILE` (mode 0600) instead of standard output"},
		payloadFileFlag, keyValueFlag, keyValuesFile,
	},
	Action: runSeal,
}

func runSeal(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("seal takes no arguments; pass the payload with --payload-file")
	}
	keyPEM, err := os.ReadFile(c.String("to"))
	if err != nil {
		return fmt.Errorf("read import key: %w", err)
	}
	pub, err := hostseal.ParsePublicKey(keyPEM)
	if err != nil {
		return fmt.Errorf("%s: %w", c.String("to"), err)
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
	f, err := hostseal.Seal(pub, c.String("project"), c.String("display-name"), hostseal.Contents{Payload: payload, KeyValues: kvs}, time.Now())
	if err != nil {
		return err
	}
	out, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return fmt.Errorf("encode sealed secret: %w", err)
	}
	out = append(out, '\n')
	if path := c.String("out"); path != "" {
		return writeFile0600(path, out)
	}
	_, err = c.App.Writer.Write(out)
	return err
}
