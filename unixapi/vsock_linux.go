package unixapi

import (
	"fmt"
	"log/slog"
	"net"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/daemon"
)

// ListenVsock listens for AF_VSOCK connections on port, on every context id
// of this machine (VMADDR_CID_ANY, like systemd's ListenStream=vsock::PORT):
// guests reach it as the host (CID 2), local processes as CID 1 when the
// vsock_loopback transport is loaded. Every accepted connection carries the
// guest's context id as its principal.
func ListenVsock(port uint32, log *slog.Logger, allowLocal bool) (net.Listener, error) {
	if port == 0 || port == unix.VMADDR_PORT_ANY {
		return nil, fmt.Errorf("listen on vsock: port %d is not a port to serve on", port)
	}
	l, err := vsock.ListenContextID(unix.VMADDR_CID_ANY, port, nil)
	if err != nil {
		return nil, fmt.Errorf("listen on vsock port %d: %w", port, err)
	}
	return NewVsockListener(l, log, allowLocal), nil
}

// NewVsockListener wraps a vsock listener (for instance one systemd passed,
// opened with vsock.FileListener) so that each accepted connection carries
// its peer's context id. The id is the one the host kernel reported at
// accept; a guest cannot choose it. A connection without a vsock peer
// address is logged and closed; Accept goes on with the next one. So is
// one from this host itself (CIDs 0-2, through the loopback transport),
// which would otherwise reach the API without passing the Unix socket's
// permissions — unless allowLocal (tests over vsock_loopback).
func NewVsockListener(l net.Listener, log *slog.Logger, allowLocal bool) net.Listener {
	if log == nil {
		log = slog.Default()
	}
	return &vsockListener{Listener: l, log: log, allowLocal: allowLocal}
}

type vsockListener struct {
	net.Listener
	log        *slog.Logger
	allowLocal bool
}

func (l *vsockListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		p, err := vsockPeer(c, l.allowLocal)
		if err != nil {
			l.log.Warn("closing connection: cannot read vsock peer", "err", err)
			c.Close()
			continue
		}
		return &identConn{Conn: c, principal: p}, nil
	}
}

// vsockPeer reads the guest context id of an accepted vsock connection.
func vsockPeer(c net.Conn, allowLocal bool) (daemon.Principal, error) {
	a, ok := c.RemoteAddr().(*vsock.Addr)
	if !ok || a == nil {
		return daemon.Principal{}, fmt.Errorf("peer address %v (%T) is not a vsock address", c.RemoteAddr(), c.RemoteAddr())
	}
	if a.ContextID == unix.VMADDR_CID_ANY {
		return daemon.Principal{}, fmt.Errorf("peer context id is VMADDR_CID_ANY")
	}
	if a.ContextID <= unix.VMADDR_CID_HOST && !allowLocal {
		return daemon.Principal{}, fmt.Errorf("peer context id %d is this host's own, not a guest", a.ContextID)
	}
	return daemon.Principal{Channel: daemon.ChannelVsock, CID: a.ContextID}, nil
}
