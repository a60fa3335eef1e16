//go:build !nodaemon

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
	kmsSocketFlag   = &cli.StringFlag{Name: "kms-socket", Usage: "serve the Kubernetes KMS v2 plugin (gRPC) on the Unix socket `PATH`, mode 0600, in a directory only root and the daemon's user can write (empty: off; dev: ./.coffer/kms.sock)", EnvVars: []string{"COFFER_KMS_SOCKET"}}
	kmsAllowUIDFlag = &cli.UintSliceFlag{Name: "kms-allow-uid", Aliases: []string{"kms-allow-uids"},
		Usage:   "let `UID` (a rootless kube-apiserver's) use the KMS socket besides root and the daemon's user; repeat for more (the socket is then mode 0666, every connection's uid checked)",
		EnvVars: []string{"COFFER_KMS_ALLOW_UIDS"}}
)

// allowUIDs reads a --*-allow-uid flag.
func allowUIDs(c *cli.Context, name string) []uint32 {
	var out []uint32
	for _, u := range c.UintSlice(name) {
		out = append(out, uint32(u))
	}
	return out
}

// kmsService is the daemon's KMS plugin: nil-safe, so the daemon calls it
// the same way whether the KMS is on or off.
type kmsService struct {
	path string
	l    net.Listener
	srv  *kms.Server
	log  *slog.Logger
	once sync.Once
}

// openKMS listens on the KMS socket when one is asked for (or in dev
// mode): it refuses a directory other users can write and a socket file of
// another uid, removes a stale socket file of its own, refuses when a live
// daemon answers there, and makes the file 0600 (the daemon's user;
// kube-apiserver runs as root), or 0666 with --kms-allow-uid.
func openKMS(c *cli.Context, svc *daemon.Service, dev bool, stateDir string, log *slog.Logger) (*kmsService, error) {
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
	allow := allowUIDs(c, kmsAllowUIDFlag.Name)
	mode := os.FileMode(0o600)
	if len(allow) > 0 {
		mode = 0o666 // the peers are checked at accept (SO_PEERCRED)
	}
	l, err := unixapi.ListenUnixPlain(abs, unixapi.SocketOptions{Mode: mode, GID: -1, Logger: log, Private: true})
	if err != nil {
		return nil, fmt.Errorf("kms socket: %w", err)
	}
	return &kmsService{path: abs, l: l, srv: kms.New(svc, kms.Options{Logger: log.With("component", "kms"), AllowUIDs: allow}), log: log}, nil
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
