package signer

import (
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// allowed says whether a peer uid may call the signer: root (as
// kube-apiserver usually runs), the daemon's own user, and
// Options.AllowUIDs.
func (s *Server) allowed(uid uint32) bool {
	return uid == 0 || uid == uint32(os.Getuid()) || slices.Contains(s.opts.AllowUIDs, uid)
}

// peerListener closes connections of peers that may not call the signer.
// The socket's mode (0600) already keeps them out; this holds even when
// the file's mode or owner is changed by hand. Whoever may connect may
// have any ServiceAccount token signed.
type peerListener struct {
	net.Listener
	allow func(uid uint32) bool
	log   *slog.Logger
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		uid, err := peerUID(c)
		if err == nil && l.allow(uid) {
			return c, nil
		}
		c.Close()
		if err != nil {
			l.log.Warn("Kubernetes signer: refused a connection whose peer cannot be read", "err", err)
		} else {
			l.log.Warn("Kubernetes signer: refused a connection from a uid that may not use it", "uid", uid)
		}
	}
}

// peerUID reads SO_PEERCRED of a Unix connection.
func peerUID(c net.Conn) (uint32, error) {
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
