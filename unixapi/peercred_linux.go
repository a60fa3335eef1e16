package unixapi

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/daemon"
)

// unixPeer reads SO_PEERCRED of c through its raw fd without duplicating it.
func unixPeer(c *net.UnixConn) (daemon.Principal, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return daemon.Principal{}, fmt.Errorf("raw conn: %w", err)
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return daemon.Principal{}, fmt.Errorf("control: %w", err)
	}
	if credErr != nil {
		return daemon.Principal{}, fmt.Errorf("SO_PEERCRED: %w", credErr)
	}
	return daemon.Principal{Channel: daemon.ChannelUnix, HasCred: true, UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}, nil
}
