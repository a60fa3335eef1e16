package main

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"strings"

	"github.com/coffer-hsm/coffer/api"
	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"
)

// k8sWebhookConfigCommand prints the kubeconfig kube-apiserver reads for
// one of coffer's webhooks (--authentication-token-webhook-config-file or
// --authorization-webhook-config-file).
func k8sWebhookConfigCommand() *cli.Command {
	return &cli.Command{
		Name:  "webhook-config",
		Usage: "print the kubeconfig kube-apiserver needs for coffer's TokenReview (authn) or SubjectAccessReview (authz) webhook",
		Description: `Asks the daemon (a system admin) how it serves the webhooks (--k8s-listen) and
prints a kubeconfig: the cluster is coffer's HTTPS listener, with its
self-issued serving certificate as certificate-authority-data (its key never
leaves the HSM); the user is how kube-apiserver authenticates to coffer:
tokenFile naming the daemon's --k8s-bearer-file (or, with --embed-token, the
token itself, read here from that file), and/or the client certificate and
key given here when the daemon requires one (--k8s-client-ca).

  coffer k8s webhook-config --kind authn >/etc/kubernetes/coffer-authn.yaml
  coffer k8s webhook-config --kind authz >/etc/kubernetes/coffer-authz.yaml`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kind", Usage: "`authn` (TokenReview) or authz (SubjectAccessReview)", Value: "authn"},
			&cli.StringFlag{Name: "server", Usage: "the listener's base `URL` as kube-apiserver reaches it (default: the address the daemon listens on)"},
			&cli.BoolFlag{Name: "embed-token", Usage: "put the bearer itself in the kubeconfig (read from the daemon's --k8s-bearer-file) instead of tokenFile"},
			&cli.StringFlag{Name: "client-certificate", Usage: "kube-apiserver's client certificate `FILE` (when the daemon has --k8s-client-ca)"},
			&cli.StringFlag{Name: "client-key", Usage: "kube-apiserver's client key `FILE` (when the daemon has --k8s-client-ca)"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("webhook-config takes no arguments")
			}
			kind := c.String("kind")
			if kind != "authn" && kind != "authz" {
				return usagef("--kind takes authn or authz, not %q", kind)
			}
			if (c.String("client-certificate") == "") != (c.String("client-key") == "") {
				return usagef("--client-certificate and --client-key go together")
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			w, err := cl.K8sWebhook(c.Context)
			if err != nil {
				return err
			}
			out, err := webhookKubeconfig(w, kubeconfigOptions{
				kind: kind, server: c.String("server"), embedToken: c.Bool("embed-token"),
				clientCert: c.String("client-certificate"), clientKey: c.String("client-key"),
			})
			if err != nil {
				return err
			}
			_, err = c.App.Writer.Write(out)
			return err
		},
	}
}

type kubeconfigOptions struct {
	kind, server          string
	embedToken            bool
	clientCert, clientKey string
}

// The parts of a kubeconfig (clientcmd's v1 Config) a webhook's needs.
type kubeconfig struct {
	APIVersion     string         `yaml:"apiVersion"`
	Kind           string         `yaml:"kind"`
	Clusters       []namedCluster `yaml:"clusters"`
	Users          []namedUser    `yaml:"users"`
	Contexts       []namedContext `yaml:"contexts"`
	CurrentContext string         `yaml:"current-context"`
}

type namedCluster struct {
	Name    string `yaml:"name"`
	Cluster struct {
		Server                   string `yaml:"server"`
		CertificateAuthorityData string `yaml:"certificate-authority-data"`
	} `yaml:"cluster"`
}

type namedUser struct {
	Name string   `yaml:"name"`
	User authInfo `yaml:"user"`
}

type authInfo struct {
	Token             string `yaml:"token,omitempty"`
	TokenFile         string `yaml:"tokenFile,omitempty"`
	ClientCertificate string `yaml:"client-certificate,omitempty"`
	ClientKey         string `yaml:"client-key,omitempty"`
}

type namedContext struct {
	Name    string `yaml:"name"`
	Context struct {
		Cluster string `yaml:"cluster"`
		User    string `yaml:"user"`
	} `yaml:"context"`
}

// webhookKubeconfig renders the kubeconfig of one webhook.
func webhookKubeconfig(w api.K8sWebhook, o kubeconfigOptions) ([]byte, error) {
	server := o.server
	if server == "" {
		server = w.Server
	}
	base, err := url.Parse(server)
	if err != nil || base.Scheme != "https" || base.Host == "" {
		return nil, usagef("--server %q: want https://HOST:PORT", server)
	}
	path := w.TokenReviewPath
	if o.kind == "authz" {
		path = w.SubjectAccessReviewPath
	}
	var user authInfo
	if w.BearerFile != "" {
		if o.embedToken {
			b, err := os.ReadFile(w.BearerFile)
			if err != nil {
				return nil, fmt.Errorf("--embed-token: read the daemon's bearer file: %w", err)
			}
			user.Token = strings.TrimSpace(string(b))
		} else {
			user.TokenFile = w.BearerFile
		}
	}
	if w.ClientCAFile != "" {
		if o.clientCert == "" {
			return nil, usagef("the daemon requires kube-apiserver's client certificate (--k8s-client-ca %s): give its files with --client-certificate and --client-key", w.ClientCAFile)
		}
		user.ClientCertificate, user.ClientKey = o.clientCert, o.clientKey
	}
	var cfg kubeconfig
	cfg.APIVersion, cfg.Kind, cfg.CurrentContext = "v1", "Config", "coffer"
	var cluster namedCluster
	cluster.Name = "coffer"
	cluster.Cluster.Server = strings.TrimSuffix(base.String(), "/") + path
	cluster.Cluster.CertificateAuthorityData = base64.StdEncoding.EncodeToString([]byte(w.CertificateAuthority))
	cfg.Clusters = []namedCluster{cluster}
	cfg.Users = []namedUser{{Name: "kube-apiserver", User: user}}
	var ctx namedContext
	ctx.Name, ctx.Context.Cluster, ctx.Context.User = "coffer", "coffer", "kube-apiserver"
	cfg.Contexts = []namedContext{ctx}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(cfg); err != nil {
		return nil, err
	}
	out := buf.Bytes()
	head := "# kube-apiserver " + map[string]string{
		"authn": "--authentication-token-webhook-config-file (with --authentication-token-webhook-version=v1)",
		"authz": "--authorization-webhook-config-file (with --authorization-webhook-version=v1, --authorization-mode=Node,Webhook,RBAC)",
	}[o.kind] + "\n"
	return append([]byte(head), out...), nil
}
