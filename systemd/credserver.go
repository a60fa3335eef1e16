package systemd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// DeliverFunc returns the payload bound to a unit under a credential name,
// or an error when there is none. The server clears the slice once sent.
type DeliverFunc func(ctx context.Context, unit, credential string) ([]byte, error)

// MaxCredential is the largest credential systemd accepts (1 MiB).
const MaxCredential = 1 << 20

// credentialTimeout bounds one LoadCredential= exchange.
const credentialTimeout = 10 * time.Second

// ServeCredentials answers systemd's LoadCredential= connections on l until
// ctx ends or l is closed: it reads the unit and credential name from the
// peer's abstract address, writes the bound payload and closes. Anything
// unbound (or oversized) is closed with zero bytes, and the reason logged;
// systemd then fails the unit's start, which is what an operator wants.
//
// Abstract addresses can be bound by anyone, so the address alone proves
// nothing: the peer must also be root (systemd itself) or one of
// extraUIDs, as its SO_PEERCRED says.
func ServeCredentials(ctx context.Context, l net.Listener, deliver DeliverFunc, log *slog.Logger, extraUIDs ...uint32) error {
	return ServeCredentialsAudited(ctx, l, deliver, nil, log, extraUIDs...)
}

// CredentialRefusal is a LoadCredential= request refused by the server
// itself: before deliver was asked (the peer is not systemd, its address
// names no unit and credential) or after (the payload could not be sent).
type CredentialRefusal struct {
	UID        uint32
	HasUID     bool
	Unit       string
	Credential string
	Reason     string
}

// ServeCredentialsAudited is ServeCredentials that also tells refused (when
// not nil) of every request it refuses itself; deliver sees the others.
func ServeCredentialsAudited(ctx context.Context, l net.Listener, deliver DeliverFunc, refused func(CredentialRefusal), log *slog.Logger, extraUIDs ...uint32) error {
	if refused == nil {
		refused = func(CredentialRefusal) {}
	}
	allowed := append([]uint32{0}, extraUIDs...)
	var wg sync.WaitGroup
	defer wg.Wait()
	stop := context.AfterFunc(ctx, func() { l.Close() })
	defer stop()
	for {
		c, err := l.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			serveCredential(ctx, c, deliver, refused, log, allowed)
		}()
	}
}

func serveCredential(ctx context.Context, c net.Conn, deliver DeliverFunc, refused func(CredentialRefusal), log *slog.Logger, allowed []uint32) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(credentialTimeout))
	uc, ok := unixConn(c)
	if !ok {
		log.Warn("audit: credential refused", "reason", "not a unix connection")
		refused(CredentialRefusal{Reason: "not a unix connection"})
		return
	}
	uid, err := peerUID(uc)
	if err != nil || !slices.Contains(allowed, uid) {
		log.Warn("audit: credential refused", "reason", "the peer is not systemd (root)", "uid", uid, "err", err)
		refused(CredentialRefusal{UID: uid, HasUID: err == nil, Reason: "the peer is not systemd (root)"})
		return
	}
	unit, name, err := CredentialPeer(uc)
	if err != nil {
		log.Warn("audit: credential refused", "reason", err.Error())
		refused(CredentialRefusal{UID: uid, HasUID: true, Reason: "the peer address names no unit and credential"})
		return
	}
	payload, err := deliver(ctx, unit, name)
	if err != nil {
		return // the deliverer has logged why
	}
	defer clear(payload)
	if len(payload) > MaxCredential {
		log.Warn("audit: credential refused", "unit", unit, "credential", name, "reason", "payload over systemd's 1 MiB limit")
		refused(CredentialRefusal{UID: uid, HasUID: true, Unit: unit, Credential: name, Reason: "payload over systemd's 1 MiB limit"})
		return
	}
	if _, err := uc.Write(payload); err != nil {
		log.Warn("credential socket: write failed", "unit", unit, "credential", name, "err", err)
		refused(CredentialRefusal{UID: uid, HasUID: true, Unit: unit, Credential: name, Reason: "writing the payload failed"})
		return
	}
	// systemd reads to EOF: end our side cleanly.
	uc.CloseWrite()
	io.Copy(io.Discard, io.LimitReader(uc, 1))
}

// unixConn finds the Unix connection under c, which a listener wrapper
// (a connection limit) may have wrapped: such wrappers return it from
// NetConn, like tls.Conn. Closing stays c's job.
func unixConn(c net.Conn) (*net.UnixConn, bool) {
	for {
		if uc, ok := c.(*net.UnixConn); ok {
			return uc, true
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil, false
		}
		c = w.NetConn()
	}
}

// peerUID reads the uid of the peer of c (SO_PEERCRED).
func peerUID(c *net.UnixConn) (uint32, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if credErr != nil {
		return 0, credErr
	}
	return cred.Uid, nil
}
