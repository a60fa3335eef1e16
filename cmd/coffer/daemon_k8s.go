//go:build !nodaemon

package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/k8s/webhook"
)

// The Kubernetes webhooks (TokenReview, SubjectAccessReview) on an HTTPS
// listener whose TLS key is in the HSM: off unless --k8s-listen.
var (
	k8sListenFlag     = &cli.StringFlag{Name: "k8s-listen", Usage: "serve the Kubernetes TokenReview and SubjectAccessReview webhooks over HTTPS on `HOST:PORT` (loopback; off when empty)", EnvVars: []string{"COFFER_K8S_LISTEN"}}
	k8sListenAnyFlag  = &cli.BoolFlag{Name: "k8s-listen-any", Usage: "let --k8s-listen take an address that is not loopback", EnvVars: []string{"COFFER_K8S_LISTEN_ANY"}}
	k8sClientCAFlag   = &cli.StringFlag{Name: "k8s-client-ca", Usage: "require kube-apiserver's client certificate to chain to the PEM CAs in `FILE`", EnvVars: []string{"COFFER_K8S_CLIENT_CA"}}
	k8sBearerFileFlag = &cli.StringFlag{Name: "k8s-bearer-file", Usage: "require kube-apiserver to send the bearer in `FILE` (at least 32 characters; the token of the webhook kubeconfig)", EnvVars: []string{"COFFER_K8S_BEARER_FILE"}}
	k8sSANFlag        = &cli.StringSliceFlag{Name: "k8s-san", Usage: "add `NAME` (DNS name or IP) to the serving certificate, besides 127.0.0.1, ::1 and localhost (repeatable)", EnvVars: []string{"COFFER_K8S_SAN"}}
	k8sAudienceFlag   = &cli.StringSliceFlag{Name: "k8s-audience", Usage: "the audiences coffer tokens are valid for in TokenReviews (repeatable; none: any audience asked for)", EnvVars: []string{"COFFER_K8S_AUDIENCE"}}
)

// k8sWebhookCertFile is the serving certificate, in the state directory:
// kept so that the CA in the webhook kubeconfigs stays across restarts.
const k8sWebhookCertFile = "k8s-webhook.crt"

// k8sWebhooks is the running listener (nil when off).
type k8sWebhooks struct {
	srv *webhook.Server
	l   net.Listener
	log *slog.Logger
	// The files the apiserver's bearer and client CAs were read from
	// (absolute; "" when not used), read again by Reload.
	caFile, bearerFile string
}

// Reload reads the bearer file and the client CA file again and has the
// listener require what they hold now (SIGHUP). On any error the running
// ones are kept.
func (k *k8sWebhooks) Reload() error {
	if k == nil {
		return nil
	}
	var bearer []byte
	var cas *x509.CertPool
	var err error
	if k.caFile != "" {
		if cas, err = webhook.ReadClientCAs(k.caFile); err != nil {
			return err
		}
	}
	if k.bearerFile != "" {
		if bearer, err = webhook.ReadBearer(k.bearerFile); err != nil {
			return err
		}
		defer clear(bearer)
	}
	return k.srv.Reload(bearer, cas)
}

// startK8sWebhooks sets up the webhooks' listener when --k8s-listen is
// set: the HSM serving key, the certificate, the apiserver's
// authentication, the bound socket. It does not serve yet (Serve).
func startK8sWebhooks(c *cli.Context, svc *daemon.Service, stateDir string, log *slog.Logger) (*k8sWebhooks, error) {
	addr := c.String(k8sListenFlag.Name)
	if addr == "" {
		return nil, nil
	}
	cfg := webhook.Config{Addr: addr, AllowAny: c.Bool(k8sListenAnyFlag.Name), Logger: log}
	if err := webhook.CheckAddr(addr, cfg.AllowAny); err != nil {
		return nil, usagef("%v", err)
	}
	caFile, bearerFile := c.String(k8sClientCAFlag.Name), c.String(k8sBearerFileFlag.Name)
	if caFile == "" && bearerFile == "" {
		return nil, usagef("--k8s-listen needs --k8s-client-ca or --k8s-bearer-file (or both): only kube-apiserver may ask coffer about tokens")
	}
	var err error
	if caFile != "" {
		if caFile, err = filepath.Abs(caFile); err != nil {
			return nil, err
		}
		if cfg.ClientCAs, err = webhook.ReadClientCAs(caFile); err != nil {
			return nil, err
		}
	}
	if bearerFile != "" {
		if bearerFile, err = filepath.Abs(bearerFile); err != nil {
			return nil, err
		}
		if cfg.Bearer, err = webhook.ReadBearer(bearerFile); err != nil {
			return nil, err
		}
	}
	ctx := c.Context
	key, err := svc.K8sServingKey(ctx)
	if err != nil {
		return nil, fmt.Errorf("the Kubernetes webhooks: %w", err)
	}
	sc, err := webhook.LoadOrIssue(webhook.CertOptions{Path: filepath.Join(stateDir, k8sWebhookCertFile), Key: key, Names: c.StringSlice(k8sSANFlag.Name)})
	if err != nil {
		return nil, fmt.Errorf("the Kubernetes webhooks: %w", err)
	}
	if sc.Issued {
		log.Warn("Kubernetes webhooks: new serving certificate (a new CA): give kube-apiserver the kubeconfigs of 'coffer k8s webhook-config' again",
			"why", sc.Why, "not_after", sc.Cert.NotAfter.UTC().Format(time.RFC3339))
	}
	cfg.Cert = tls.Certificate{Certificate: [][]byte{sc.Cert.Raw}, PrivateKey: key, Leaf: sc.Cert}
	srv, err := webhook.NewServer(webhook.NewHandler(svc, log), cfg)
	if err != nil {
		return nil, err
	}
	l, err := srv.Listen()
	if err != nil {
		return nil, err
	}
	svc.SetK8sWebhook(daemon.K8sWebhook{
		Server: "https://" + l.Addr().String(), TokenReviewPath: webhook.TokenReviewPath, SubjectAccessReviewPath: webhook.SubjectAccessReviewPath,
		CertificatePEM: sc.PEM, BearerFile: bearerFile, ClientCAFile: caFile, Audiences: c.StringSlice(k8sAudienceFlag.Name),
	})
	log.Info("Kubernetes webhooks listening", "addr", l.Addr().String(), "client_ca", caFile != "", "bearer", bearerFile != "",
		"certificate_not_after", sc.Cert.NotAfter.UTC().Format(time.RFC3339))
	return &k8sWebhooks{srv: srv, l: l, log: log, caFile: caFile, bearerFile: bearerFile}, nil
}

// Serve serves in the background; a failure goes to served (as the other
// listeners', which stops the daemon) when there is room, else to the log.
func (k *k8sWebhooks) Serve(served chan<- error) {
	if k == nil {
		return
	}
	go func() {
		if err := k.srv.Serve(k.l); err != nil {
			select {
			case served <- fmt.Errorf("the Kubernetes webhooks: %w", err):
			default:
				k.log.Error("Kubernetes webhooks stopped serving", "err", err)
			}
		}
	}()
}

// Stop drains in-flight reviews (at most a few seconds) and closes the
// listener.
func (k *k8sWebhooks) Stop() {
	if k == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := k.srv.Shutdown(ctx); err != nil {
		k.log.Warn("Kubernetes webhooks: shutdown", "err", err)
	}
	_ = k.l.Close()
}
