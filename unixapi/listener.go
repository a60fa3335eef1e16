package unixapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coffer-hsm/coffer/daemon"
)

// SocketOptions configure ListenUnix.
type SocketOptions struct {
	// Mode is the socket file's permission bits; 0 means 0660.
	Mode os.FileMode
	// GID, when not -1, is the group the socket file is given (the admin
	// group, so its members can connect).
	GID int
	// Logger receives a line for each connection whose identity cannot be
	// read (that connection is closed).
	Logger *slog.Logger
	// MaxConns, when positive, is how many connections ListenUnix's
	// listener has open at once; ListenHybridVsock applies it to each VM's
	// socket. See FairListener.
	MaxConns int
	// MaxConnsPerPeer, when positive, is how many of them one caller (a
	// uid; a VM) may have open; see FairListener.
	MaxConnsPerPeer int
	// IsAdmin tells whether a Unix peer is a system admin: admins are not
	// held to MaxConnsPerPeer, and a few slots are kept for them. nil:
	// nobody is. Hybrid vsock sockets never have admins.
	IsAdmin func(uid, gid uint32) bool
	// Private: the socket serves root and the daemon's user (the
	// Kubernetes KMS and signer sockets). Its directory must be one that
	// nobody else can write (CheckPrivateSocketDir), and a socket file
	// there that another uid owns is refused, not replaced.
	Private bool
}

// ListenUnix listens on a Unix socket at path. It refuses when a live
// daemon already answers there, removes a stale socket file left by a dead
// one, and sets the file's mode (and group) deliberately. Every accepted
// connection carries the peer's SO_PEERCRED identity, and the callers
// share the connection slots as FairListener describes.
func ListenUnix(path string, opts SocketOptions) (net.Listener, error) {
	l, err := ListenUnixPlain(path, opts)
	if err != nil {
		return nil, err
	}
	return FairListener(NewPeerListener(l, opts.Logger), opts), nil
}

// ListenUnixPlain is ListenUnix without the peer identity: for protocols
// that identify their peers otherwise (the LoadCredential= socket).
func ListenUnixPlain(path string, opts SocketOptions) (*net.UnixListener, error) {
	if opts.Mode == 0 {
		opts.Mode = 0o660
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory: %w", err)
	}
	if opts.Private {
		if err := CheckPrivateSocketDir(filepath.Dir(path)); err != nil {
			return nil, fmt.Errorf("listen on %s: %w", path, err)
		}
	}
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("listen on %s: the path exists and is not a socket; refusing to replace it", path)
		}
		owner, ours := fileOwner(fi)
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			if !ours {
				return nil, fmt.Errorf("listen on %s: a process of uid %d (not this daemon's uid %d) is serving there%s; refusing to share the path", path, owner, os.Geteuid(), listenerPID(c))
			}
			return nil, fmt.Errorf("listen on %s: another coffer daemon is already serving there%s", path, listenerPID(c))
		}
		if opts.Private && !ours {
			return nil, fmt.Errorf("listen on %s: a stale socket file of uid %d (not this daemon's uid %d) is there; refusing to replace it (remove it if it is known)", path, owner, os.Geteuid())
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return nil, fmt.Errorf("listen on %s: cannot tell whether a daemon is serving there: %w", path, err)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
		if opts.Logger != nil {
			opts.Logger.Info("removed stale socket file", "path", path)
		}
	}
	// Connecting needs write permission on the socket file; under the usual
	// umask nobody else has it until the chmod below sets the mode asked for.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := setSocketFile(path, opts.GID, opts.Mode); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

// listenerPID closes c, a connection to a live socket, and returns
// " (pid N)" naming the process that listens there (SO_PEERCRED of a
// client names the process that called listen), or "" when it cannot tell.
func listenerPID(c net.Conn) string {
	defer c.Close()
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return ""
	}
	p, err := unixPeer(uc)
	if err != nil || p.PID <= 0 {
		return ""
	}
	return fmt.Sprintf(" (pid %d)", p.PID)
}

// NewPeerListener wraps a Unix listener (for instance one passed by systemd)
// so that each accepted connection carries its peer's identity. A
// connection whose identity cannot be read is logged and closed; Accept goes
// on with the next one.
func NewPeerListener(l *net.UnixListener, log *slog.Logger) net.Listener {
	if log == nil {
		log = slog.Default()
	}
	return &peerListener{UnixListener: l, log: log}
}

type peerListener struct {
	*net.UnixListener
	log *slog.Logger
}

func (l *peerListener) Accept() (net.Conn, error) {
	for {
		c, err := l.AcceptUnix()
		if err != nil {
			return nil, err
		}
		p, err := unixPeer(c)
		if err != nil {
			l.log.Warn("closing connection: cannot read peer credentials", "err", err)
			c.Close()
			continue
		}
		return &identConn{Conn: c, principal: p}, nil
	}
}

// identConn is a connection with the identity read at accept.
type identConn struct {
	net.Conn
	principal daemon.Principal
}

// CloseWrite half-closes the connection when it can, so net/http can end
// an error answer (431, 400) with a FIN rather than a reset.
func (c *identConn) CloseWrite() error { return closeWrite(c.Conn) }

// connContext puts the identity of an accepted connection on the context of
// every request that arrives on it. A connection that did not come from a
// peer listener is anonymous.
func connContext(ctx context.Context, c net.Conn) context.Context {
	if ic, ok := innerConn(c).(*identConn); ok {
		return daemon.WithPrincipal(ctx, ic.principal)
	}
	return daemon.WithPrincipal(ctx, daemon.Principal{Channel: daemon.Channel(innerConn(c).LocalAddr().Network())})
}
