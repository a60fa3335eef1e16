package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sort"
	"strings"

	"github.com/coreos/go-systemd/v22/activation"
	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"
)

// The FileDescriptorName= of each socket unit coffer understands.
const (
	FDNameAPI   = "api"   // coffer.socket: the HTTP API on /run/coffer/coffer.sock
	FDNameCreds = "creds" // coffer-creds.socket: the LoadCredential= socket
	FDNameVsock = "vsock" // coffer-vsock.socket: the HTTP API for VM guests
)

// Listeners are the sockets systemd passed to the daemon, by role. A nil
// field means systemd did not pass that socket: the daemon binds its own (or
// leaves the channel off, as configured).
type Listeners struct {
	API, Creds, Vsock net.Listener
}

// Close closes every listener that is set and returns the first error.
func (l Listeners) Close() error {
	var first error
	for _, ln := range []net.Listener{l.API, l.Creds, l.Vsock} {
		if ln == nil {
			continue
		}
		if err := ln.Close(); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Empty reports whether systemd passed no socket at all.
func (l Listeners) Empty() bool {
	return l.API == nil && l.Creds == nil && l.Vsock == nil
}

// Activated returns the listening sockets systemd passed to this process
// ($LISTEN_FDS, $LISTEN_PID, $LISTEN_FDNAMES), matched by the socket units'
// FileDescriptorName=: "api", "creds" and "vsock". It unsets those variables
// so that child processes do not inherit them.
//
// Without socket activation it returns zero Listeners and a nil error. A
// passed socket with another name (including the "LISTEN_FD_<n>" default of a
// unit without FileDescriptorName=), a name passed twice, or a socket that is
// not a listening stream socket is an error that names it; on error no
// descriptor is left open.
//
// AF_VSOCK sockets are wrapped with vsock.FileListener: go-systemd's
// activation.Listeners drops them because net.FileListener does not know the
// address family.
func Activated() (Listeners, error) {
	files := activation.Files(true)
	defer func() {
		// The listeners hold duplicates; the originals are no longer needed.
		for _, f := range files {
			f.Close()
		}
	}()

	var (
		ls      Listeners
		unknown []string
		errs    []error
	)
	for _, f := range files {
		name := f.Name()
		var slot *net.Listener
		switch name {
		case FDNameAPI:
			slot = &ls.API
		case FDNameCreds:
			slot = &ls.Creds
		case FDNameVsock:
			slot = &ls.Vsock
		default:
			unknown = append(unknown, name)
			continue
		}
		if *slot != nil {
			errs = append(errs, fmt.Errorf("socket %q passed more than once", name))
			continue
		}
		ln, err := fileListener(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("socket %q: %w", name, err))
			continue
		}
		*slot = ln
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		errs = append(errs, fmt.Errorf("unknown socket name(s) %s passed by systemd: set FileDescriptorName= to %s, %s or %s",
			strings.Join(unknown, ", "), FDNameAPI, FDNameCreds, FDNameVsock))
	}
	if err := errors.Join(errs...); err != nil {
		ls.Close()
		return Listeners{}, fmt.Errorf("socket activation: %w", err)
	}
	return ls, nil
}

// fileListener turns a passed descriptor into a listener of the right kind.
// It checks the socket itself rather than trusting the unit file: a stream
// socket in the listening state, of family AF_UNIX, AF_INET(6) or AF_VSOCK.
func fileListener(f *os.File) (net.Listener, error) {
	fd := int(f.Fd())
	typ, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_TYPE)
	if err != nil {
		return nil, fmt.Errorf("not a socket: %w", err)
	}
	if typ != unix.SOCK_STREAM {
		return nil, fmt.Errorf("not a stream socket (use ListenStream=)")
	}
	if acc, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_ACCEPTCONN); err != nil || acc == 0 {
		return nil, fmt.Errorf("not a listening socket (Accept=yes is not supported)")
	}
	domain, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_DOMAIN)
	if err != nil {
		return nil, fmt.Errorf("reading the address family: %w", err)
	}
	switch domain {
	case unix.AF_VSOCK:
		return vsock.FileListener(f)
	case unix.AF_UNIX, unix.AF_INET, unix.AF_INET6:
		return net.FileListener(f)
	default:
		return nil, fmt.Errorf("unsupported address family %d", domain)
	}
}
