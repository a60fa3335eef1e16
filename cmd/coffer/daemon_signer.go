//go:build !nodaemon

package main

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/k8s/signer"
)

// The daemon's flags of the Kubernetes external service-account signer.
var (
	k8sSignerSocketFlag = &cli.StringFlag{Name: "k8s-signer-socket",
		Usage:   "serve kube-apiserver's external service-account token signer (--service-account-signing-endpoint) on the Unix socket `PATH`, mode 0600 (empty: off; dev: ./.coffer/k8s-signer.sock)",
		EnvVars: []string{"COFFER_K8S_SIGNER_SOCKET"}}
	k8sSignerMaxExpFlag = durationFlag(cli.StringFlag{Name: "k8s-signer-max-token-expiration",
		Usage:   "the longest ServiceAccount token the Kubernetes signer signs (whole seconds, 10m to 365d); kube-apiserver's --service-account-max-token-expiration must not exceed it",
		EnvVars: []string{"COFFER_K8S_SIGNER_MAX_TOKEN_EXPIRATION"}}, daemon.DefaultK8sMaxTokenExpiration)
	k8sSignerAllowUIDFlag = &cli.UintSliceFlag{Name: "k8s-signer-allow-uid", Aliases: []string{"k8s-signer-allow-uids"},
		Usage:   "let `UID` (a rootless kube-apiserver's) use the signer socket besides root and the daemon's user; repeat for more (the socket is then mode 0666, every connection's uid checked)",
		EnvVars: []string{"COFFER_K8S_SIGNER_ALLOW_UIDS"}}
)

// k8sSignerStopTimeout bounds how long the calls in flight may take at
// shutdown.
const k8sSignerStopTimeout = 5 * time.Second

// startK8sSigner starts the Kubernetes signer when --k8s-signer-socket
// names a socket (by default under the state directory in dev mode):
// its keys made or loaded, its socket listening. Serve failures go to
// served, which shuts the daemon down like any listener's. The returned
// function stops it (calls in flight finish first) and removes the
// socket; it does nothing when the signer is off. The end of c.Context
// (the shutdown signal) stops it too.
func startK8sSigner(c *cli.Context, svc *daemon.Service, stateDir string, log *slog.Logger, served chan<- error) (stop func(), err error) {
	path := c.String(k8sSignerSocketFlag.Name)
	if c.Bool("dev") && !c.IsSet(k8sSignerSocketFlag.Name) {
		path = filepath.Join(stateDir, "k8s-signer.sock")
	}
	if path == "" {
		return func() {}, nil
	}
	if path, err = filepath.Abs(path); err != nil {
		return nil, fmt.Errorf("the Kubernetes signer socket path: %w", err)
	}
	maxExp, err := flagDuration(c, k8sSignerMaxExpFlag.Name)
	if err != nil {
		return nil, err
	}
	if err := svc.StartK8sSigner(c.Context, daemon.K8sSignerConfig{MaxTokenExpiration: maxExp}); err != nil {
		return nil, fmt.Errorf("start the Kubernetes signer: %w", err)
	}
	srv := signer.New(svc, signer.Options{Logger: log, AllowUIDs: allowUIDs(c, k8sSignerAllowUIDFlag.Name)})
	l, err := srv.Listen(path)
	if err != nil {
		return nil, err
	}
	go func() {
		if err := srv.Serve(l); err != nil {
			select {
			case served <- fmt.Errorf("the Kubernetes signer socket: %w", err):
			default:
				log.Error("the Kubernetes signer stopped serving", "err", err)
			}
		}
	}()
	log.Info("Kubernetes service-account signer serving", "socket", path, "max_token_expiration", maxExp.String())
	stop = func() {
		ctx, cancel := context.WithTimeout(context.Background(), k8sSignerStopTimeout)
		defer cancel()
		srv.Stop(ctx)
	}
	// A shutdown signal drains it alongside the API; the caller's stop
	// covers every other way out (Stop runs once).
	go func() {
		<-c.Context.Done()
		stop()
	}()
	return stop, nil
}
