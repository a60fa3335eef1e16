package main

import (
	"bytes"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

// defaultKMSSocket is where a packaged daemon serves the Kubernetes KMS
// when --kms-socket names no other path.
const defaultKMSSocket = "/run/coffer/kms.sock"

// k8sCommand holds the Kubernetes integrations' commands; each is one
// entry of its list.
var k8sCommand = group("k8s", "Kubernetes integrations: the KMS v2 plugin (encryption of Secrets at rest), the external service-account token signer, the TokenReview and SubjectAccessReview webhooks",
	append([]*cli.Command{
		k8sKMSKeysCommand,
		k8sEncryptionConfigCommand,
		k8sWebhookConfigCommand(), // k8s_webhook.go
	}, k8sSignerCommands()...)..., // k8s_signer.go
)

var k8sKMSKeysCommand = &cli.Command{
	Name:  "kms-keys",
	Usage: "list the key ids (KEK labels) the Kubernetes KMS used, with counts, times, how long each has been idle, and whether removing it needs --force (system admins)",
	Action: noArgs("k8s kms-keys", func(c *cli.Context, cl *client.Client) error {
		k, err := cl.KMSKeys(c.Context)
		if err != nil {
			return err
		}
		return render(c, k, func(w io.Writer) { writeKMSKeys(w, k) })
	}),
}

func writeKMSKeys(w io.Writer, k api.KMSKeys) {
	rows := make([][]string, 0, len(k.Keys))
	now := time.Now()
	for _, v := range k.Keys {
		// What remove-kek does with the KEK: never the current one; one the
		// KMS used only with --force (silence proves nothing).
		remove := "yes"
		switch {
		case !v.Present:
			remove = "removed"
		case v.Current:
			remove = "no (current)"
		case v.NeedsForce:
			remove = "--force only"
		}
		idle := "-"
		if last := latestTime(v.LastEncryptAt, v.LastDecryptAt); last != nil {
			idle = now.Sub(*last).Truncate(time.Second).String()
		}
		decrypts := strconv.FormatInt(v.Decrypts, 10)
		if v.UsageUnknown {
			decrypts += " (restored: usage unknown)"
		}
		rows = append(rows, []string{v.KeyID, mark(v.Current), strconv.FormatInt(v.Encrypts, 10), decrypts,
			tsp(v.FirstEncryptAt), tsp(v.LastEncryptAt), tsp(v.LastDecryptAt), idle, tsp(v.RetiredAt), remove})
	}
	writeRows(w, []string{"KEY ID", "CURRENT", "ENCRYPTS", "DECRYPTS", "FIRST ENCRYPT", "LAST ENCRYPT", "LAST DECRYPT", "IDLE FOR", "RETIRED", "REMOVE-KEK"}, rows)
}

// latestTime is the latest of ts (nil when all are).
func latestTime(ts ...*time.Time) *time.Time {
	var out *time.Time
	for _, t := range ts {
		if t != nil && (out == nil || t.After(*out)) {
			out = t
		}
	}
	return out
}

var k8sEncryptionConfigCommand = &cli.Command{
	Name:  "encryption-config",
	Usage: "print the EncryptionConfiguration that makes kube-apiserver encrypt Secrets with coffer's KMS v2 plugin",
	Description: `Prints an EncryptionConfiguration (apiserver.config.k8s.io/v1) for
kube-apiserver's --encryption-provider-config (k3s:
--kube-apiserver-arg=encryption-provider-config=FILE). It talks to no daemon.
The identity provider comes last, so objects written before encryption was
turned on stay readable until they are rewritten.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "kms-socket", Usage: "`PATH` of the daemon's KMS socket (its --kms-socket)", Value: defaultKMSSocket, EnvVars: []string{"COFFER_KMS_SOCKET"}},
		durationFlag(cli.StringFlag{Name: "timeout", Usage: "how long kube-apiserver waits for one KMS call"}, 3*time.Second),
		&cli.StringSliceFlag{Name: "resource", Usage: "`RESOURCE` to encrypt (repeat for more)", Value: cli.NewStringSlice("secrets")},
	},
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("k8s encryption-config takes no arguments")
		}
		timeout, err := flagDuration(c, "timeout")
		if err != nil {
			return err
		}
		b, err := encryptionConfig(c.String("kms-socket"), timeout, c.StringSlice("resource"))
		if err != nil {
			return err
		}
		_, err = c.App.Writer.Write(b)
		return err
	},
}

// encryptionConfig renders the EncryptionConfiguration.
func encryptionConfig(socket string, timeout time.Duration, resources []string) ([]byte, error) {
	if !filepath.IsAbs(socket) {
		return nil, usagef("--kms-socket must be an absolute path (kube-apiserver resolves it on its own), not %q", socket)
	}
	if timeout <= 0 {
		return nil, usagef("--timeout must be positive")
	}
	if len(resources) == 0 {
		return nil, usagef("name at least one --resource")
	}
	type kms struct {
		APIVersion string `yaml:"apiVersion"`
		Name       string `yaml:"name"`
		Endpoint   string `yaml:"endpoint"`
		Timeout    string `yaml:"timeout"`
	}
	type provider struct {
		KMS      *kms      `yaml:"kms,omitempty"`
		Identity *struct{} `yaml:"identity,omitempty"`
	}
	type resource struct {
		Resources []string   `yaml:"resources"`
		Providers []provider `yaml:"providers"`
	}
	doc := struct {
		APIVersion string     `yaml:"apiVersion"`
		Kind       string     `yaml:"kind"`
		Resources  []resource `yaml:"resources"`
	}{
		APIVersion: "apiserver.config.k8s.io/v1",
		Kind:       "EncryptionConfiguration",
		Resources: []resource{{
			Resources: resources,
			Providers: []provider{
				{KMS: &kms{APIVersion: "v2", Name: "coffer", Endpoint: "unix://" + filepath.Clean(socket), Timeout: timeout.String()}},
				{Identity: &struct{}{}},
			},
		}},
	}
	var buf bytes.Buffer
	buf.WriteString("# coffer's KMS v2 plugin encrypts new writes; identity reads what was\n# written before. Generated by 'coffer k8s encryption-config'.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode the EncryptionConfiguration: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode the EncryptionConfiguration: %w", err)
	}
	return buf.Bytes(), nil
}
