package unixapi

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// peerHungUp tells whether c's peer has closed its end: a read would
// return end of file or an error. It peeks without blocking and without
// consuming anything the peer sent.
func peerHungUp(c net.Conn) bool {
	c = innerConn(c)
	if ic, ok := c.(*identConn); ok {
		c = ic.Conn
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	hungUp := false
	if err := raw.Control(func(fd uintptr) {
		var b [1]byte
		n, _, err := unix.Recvfrom(int(fd), b[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == nil:
			hungUp = n == 0
		case err == unix.EAGAIN || err == unix.EINTR:
		default:
			hungUp = true // reset, or no longer connected
		}
	}); err != nil {
		return true // closed already
	}
	return hungUp
}
