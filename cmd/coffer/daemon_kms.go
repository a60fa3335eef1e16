package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/k8s/kms"
	"github.com/coffer-hsm/coffer/unixapi"
)

// The daemon's Kubernetes KMS v2 flags (daemon.go lists them).
var (
	kmsSocketFlag = &cli.StringFlag{Name: "kms-socket", Usage: "serve the Kubernetes KMS v2 plugin (gRPC) on the Unix socket `PATH`, mode 0600 (empty: off; dev: ./.coffer/kms.sock)", EnvVars: []string{"COFFER_KMS_SOCKET"}}
	kmsGraceFlag  = &cli.DurationFlag{Name: "kms-remove-grace", Usage: "a retired KEK that wrapped Kubernetes KMS DEKs is kept from 'coffer hsm remove-kek' until unused for `DURATION` (--force overrides)", Value: daemon.DefaultKMSRemoveGrace, EnvVars: []string{"COFFER_KMS_REMOVE_GRACE"}}
)

// kmsService is the daemon's KMS plugin: nil-safe, so the daemon calls it
// the same way whether the KMS is on or off.
type kmsService struct {
	path string
	l    net.Listener
	srv  *kms.Server
	log  *slog.Logger
	once sync.Once
}

// openKMS configures the domain's KMS side and, when a KMS socket is
// asked for (or in dev mode), listens on it: it removes a stale socket
// file, refuses when a live daemon answers there, and makes the file 0600
// (the daemon's user; kube-apiserver runs as root).
func openKMS(c *cli.Context, svc *daemon.Service, dev bool, stateDir string, log *slog.Logger) (*kmsService, error) {
	if g := c.Duration(kmsGraceFlag.Name); g < 0 {
		return nil, usagef("--%s must not be negative", kmsGraceFlag.Name)
	}
	svc.ConfigureKMS(daemon.KMSConfig{RemoveGrace: c.Duration(kmsGraceFlag.Name)})
	path := c.String(kmsSocketFlag.Name)
	if dev && !c.IsSet(kmsSocketFlag.Name) {
		path = filepath.Join(stateDir, "kms.sock")
	}
	if path == "" {
		return nil, nil
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("kms socket path: %w", err)
	}
	l, err := unixapi.ListenUnixPlain(abs, unixapi.SocketOptions{Mode: 0o600, GID: -1, Logger: log})
	if err != nil {
		return nil, fmt.Errorf("kms socket: %w", err)
	}
	return &kmsService{path: abs, l: l, srv: kms.New(svc, kms.Options{Logger: log.With("component", "kms")}), log: log}, nil
}

// Serve serves the KMS until ctx ends, then stops it gracefully and
// removes the socket file; it reports a failure on failed.
func (k *kmsService) Serve(ctx context.Context, failed chan<- error) {
	if k == nil {
		return
	}
	k.log.Info("serving the Kubernetes KMS v2 plugin", "kms_socket", k.path)
	if err := k.srv.Serve(ctx, k.l); err != nil {
		select {
		case failed <- err:
		default:
			k.log.Error("kms socket failed", "err", err)
		}
	}
	k.Close()
}

// Close closes the listener (if Serve never ran) and removes the socket
// file. It is idempotent.
func (k *kmsService) Close() {
	if k == nil {
		return
	}
	k.once.Do(func() {
		k.l.Close()
		os.Remove(k.path)
	})
}
