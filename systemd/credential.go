package systemd

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"syscall"
	"unsafe"

	"github.com/coreos/go-systemd/v22/journal"
	"golang.org/x/sys/unix"
)

// ErrNotCredentialPeer marks a connection on the LoadCredential= socket whose
// peer address is not the one systemd binds; CredentialPeer's errors wrap it.
var ErrNotCredentialPeer = errors.New("not a systemd LoadCredential= client")

// unitSuffixes are the unit types systemd knows (unit_type_from_string).
var unitSuffixes = []string{
	".service", ".socket", ".target", ".device", ".mount", ".automount",
	".swap", ".timer", ".path", ".slice", ".scope",
}

const (
	unitNameMax = 255 // UNIT_NAME_MAX without the NUL
	credNameMax = 255 // NAME_MAX, FDNAME_MAX
	randomMax   = 16  // a 64-bit random number in hex
)

// CredentialPeer reads which unit and credential a connection on the
// LoadCredential= socket is for. When a unit has
// LoadCredential=NAME:/run/coffer/creds.sock, systemd binds its client socket
// to the abstract address "\0<random hex>/unit/<unit>/<NAME>" before
// connecting (shown with a leading '@' for the NUL, as Go does), then shuts down its write side
// and reads the credential to EOF.
//
// The address is set by whoever binds the client socket; it identifies the
// unit only because creds.sock is reachable by root alone (SocketMode=0600):
// callers must also check that the peer's uid is 0.
//
// Anything else (an unbound peer, a path address, a malformed name, an
// invalid unit or credential name) is an error wrapping ErrNotCredentialPeer.
func CredentialPeer(c *net.UnixConn) (unit, name string, err error) {
	if c == nil {
		return "", "", fmt.Errorf("%w: no connection", ErrNotCredentialPeer)
	}
	a, err := peerName(c)
	if err != nil {
		return "", "", fmt.Errorf("%w: %v", ErrNotCredentialPeer, err)
	}
	if a == "" {
		return "", "", fmt.Errorf("%w: the peer socket is unbound", ErrNotCredentialPeer)
	}
	return parseCredentialAddr(a)
}

// peerName is getpeername(2) with the exact length the kernel reports, the
// abstract address's leading NUL shown as '@'. c.RemoteAddr() is not used: Go
// cuts an address at its first NUL byte, so "@r/unit/a.service/x\x00y" would
// read as credential "x"; here the NUL stays and is refused.
func peerName(c *net.UnixConn) (string, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return "", err
	}
	var (
		sa    unix.RawSockaddrUnix
		size  = uint32(unsafe.Sizeof(sa))
		errno syscall.Errno
	)
	if err := rc.Control(func(fd uintptr) {
		_, _, errno = unix.Syscall(unix.SYS_GETPEERNAME, fd, uintptr(unsafe.Pointer(&sa)), uintptr(unsafe.Pointer(&size)))
	}); err != nil {
		return "", err
	}
	if errno != 0 {
		return "", os.NewSyscallError("getpeername", errno)
	}
	if sa.Family != unix.AF_UNIX {
		return "", fmt.Errorf("peer address family %d is not AF_UNIX", sa.Family)
	}
	n := int(size) - int(unsafe.Offsetof(sa.Path))
	if n <= 0 {
		return "", nil
	}
	n = min(n, len(sa.Path))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(sa.Path[i])
	}
	if b[0] == 0 {
		b[0] = '@'
	}
	return string(b), nil
}

func parseCredentialAddr(a string) (unit, name string, err error) {
	bad := func(format string, args ...any) (string, string, error) {
		return "", "", fmt.Errorf("%w: peer address %q: %s", ErrNotCredentialPeer, a, fmt.Sprintf(format, args...))
	}
	rest, ok := strings.CutPrefix(a, "@")
	if !ok {
		return bad("not an abstract address")
	}
	random, rest, ok := strings.Cut(rest, "/unit/")
	if !ok {
		return bad("no /unit/ part")
	}
	if len(random) == 0 || len(random) > randomMax || strings.Trim(random, "0123456789abcdefABCDEF") != "" {
		return bad("the random prefix is not 1-%d hex digits", randomMax)
	}
	unit, name, ok = strings.Cut(rest, "/")
	if !ok {
		return bad("no credential name after the unit")
	}
	if err := validUnitName(unit); err != nil {
		return bad("unit: %v", err)
	}
	if err := validCredentialName(name); err != nil {
		return bad("credential: %v", err)
	}
	return unit, name, nil
}

// validUnitName follows systemd's unit_name_is_valid for plain and instance
// names: [A-Za-z0-9:_.\@-], a known type suffix, a non-empty prefix, at most
// one '@' and never first; a template without an instance ("foo@.service")
// cannot be running, so it is refused.
func validUnitName(u string) error {
	switch {
	case u == "":
		return errors.New("empty")
	case len(u) > unitNameMax:
		return fmt.Errorf("longer than %d bytes", unitNameMax)
	}
	for i := 0; i < len(u); i++ {
		c := u[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte(":_.\\@-", c) >= 0) {
			return fmt.Errorf("invalid byte %#02x", c)
		}
	}
	dot := strings.LastIndexByte(u, '.')
	if dot <= 0 {
		return errors.New("no unit type suffix")
	}
	prefix, suffix := u[:dot], u[dot:]
	known := false
	for _, s := range unitSuffixes {
		known = known || s == suffix
	}
	if !known {
		return fmt.Errorf("unknown unit type %q", suffix)
	}
	if at := strings.IndexByte(prefix, '@'); at >= 0 {
		if at == 0 || strings.Count(prefix, "@") > 1 {
			return errors.New("misplaced '@'")
		}
		if at == len(prefix)-1 {
			return errors.New("a template without an instance")
		}
	}
	return nil
}

// validCredentialName follows systemd's credential_name_valid: a valid file
// name (non-empty, not "." or "..", no '/', at most 255 bytes) that is also a
// valid FileDescriptorName (printable ASCII, no ':').
func validCredentialName(n string) error {
	switch {
	case n == "":
		return errors.New("empty")
	case n == "." || n == "..":
		return fmt.Errorf("%q is not a file name", n)
	case len(n) > credNameMax:
		return fmt.Errorf("longer than %d bytes", credNameMax)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if c < ' ' || c > '~' || c == '/' || c == ':' {
			return fmt.Errorf("invalid byte %#02x", c)
		}
	}
	return nil
}

// JournalStream reports whether stderr is connected to the journal
// ($JOURNAL_STREAM matches stderr's device and inode), in which case the
// daemon may log in a journal-friendly way (no timestamps, structured
// fields). A malformed $JOURNAL_STREAM counts as no.
func JournalStream() bool {
	ok, err := journal.StderrIsJournalStream()
	return err == nil && ok
}
