// Package peer admits the connections of a Kubernetes integration's Unix
// socket (the KMS plugin, the service-account signer) by the peer's uid:
// root (kube-apiserver in kubeadm and k3s), the daemon's own user, and
// the uids an operator allows. The sockets' mode already keeps others
// out; this holds even when a file's mode or owner is changed by hand,
// and when allowed uids make the socket world-connectable.
package peer

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// Allowed says whether uid may connect: root, the daemon's user, or one of
// extra.
func Allowed(uid uint32, extra []uint32) bool {
	return uid == 0 || uid == uint32(os.Getuid()) || slices.Contains(extra, uid)
}

// Listener closes, at accept, every connection whose peer Allow refuses
// (or whose peer cannot be read), logging it as refused by What.
type Listener struct {
	net.Listener
	Allow func(uid uint32) bool
	What  string // who refuses, for the log: "kms", "Kubernetes signer"
	Log   *slog.Logger
}

// Accept returns the next connection of an allowed peer.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := UID(c)
		if err == nil && l.Allow(uid) {
			return c, nil
		}
		c.Close()
		if err != nil {
			l.Log.Warn(l.What+": refused a connection whose peer cannot be read", "err", err)
		} else {
			l.Log.Warn(l.What+": refused a connection from a uid that may not use it", "uid", uid)
		}
	}
}

// UID reads SO_PEERCRED of a Unix connection.
func UID(c net.Conn) (uint32, error) {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return 0, fmt.Errorf("not a Unix connection (%T)", c)
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var cerr error
	if err := raw.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, fmt.Errorf("peer credentials: %w", err)
	}
	if cerr != nil {
		return 0, fmt.Errorf("peer credentials: %w", cerr)
	}
	return cred.Uid, nil
}
