package unixapi

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/vsock"
	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// fakeVsockListener hands out in-memory connections whose peer address is
// what a real vsock listener would report.
type fakeVsockListener struct {
	conns chan net.Conn
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

func (l *fakeVsockListener) Accept() (net.Conn, error) {
	c, ok := <-l.conns
	if !ok {
		return nil, net.ErrClosed
	}
	return c, nil
}
func (l *fakeVsockListener) Close() error { return nil }
func (l *fakeVsockListener) Addr() net.Addr {
	return &vsock.Addr{ContextID: unix.VMADDR_CID_ANY, Port: 5000}
}

func TestVsockPrincipalFromPeerAddress(t *testing.T) {
	fl := &fakeVsockListener{conns: make(chan net.Conn, 5)}
	pipe := func(remote net.Addr) (net.Conn, net.Conn) {
		a, b := net.Pipe()
		t.Cleanup(func() { a.Close(); b.Close() })
		return addrConn{Conn: a, remote: remote}, b
	}
	bad, badPeer := pipe(&net.UnixAddr{Name: "@x", Net: "unix"})
	anyCID, anyPeer := pipe(&vsock.Addr{ContextID: unix.VMADDR_CID_ANY, Port: 1})
	local, localPeer := pipe(&vsock.Addr{ContextID: unix.VMADDR_CID_LOCAL, Port: 1})
	good, _ := pipe(&vsock.Addr{ContextID: 42, Port: 1234})
	fl.conns <- bad
	fl.conns <- anyCID
	fl.conns <- local
	fl.conns <- good
	var logs lockedBuffer
	l := NewVsockListener(fl, slog.New(slog.NewTextHandler(&logs, nil)), false)
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	ic, ok := c.(*identConn)
	if !ok {
		t.Fatalf("accepted %T, want *identConn", c)
	}
	if want := (daemon.Principal{Channel: daemon.ChannelVsock, CID: 42}); ic.principal != want {
		t.Fatalf("principal = %+v, want %+v", ic.principal, want)
	}
	if s := ic.principal.String(); s != "vsock cid=42" {
		t.Fatalf("String() = %q", s)
	}
	// The connections without a usable peer were closed and logged.
	for _, peer := range []net.Conn{badPeer, anyPeer, localPeer} {
		peer.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
			t.Fatalf("a connection without a vsock peer was not closed: %v", err)
		}
	}
	if n := strings.Count(logs.String(), "closing connection: cannot read vsock peer"); n != 3 {
		t.Fatalf("logged %d refusals, want 3:\n%s", n, logs.String())
	}
	close(fl.conns)
	if _, err := l.Accept(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept on a closed listener: %v", err)
	}
}

func TestListenVsockRejectsPorts(t *testing.T) {
	for _, port := range []uint32{0, unix.VMADDR_PORT_ANY} {
		if _, err := ListenVsock(port, nil, false); err == nil || !strings.Contains(err.Error(), "is not a port to serve on") {
			t.Fatalf("port %d: err = %v", port, err)
		}
	}
}

var (
	loopbackOnce sync.Once
	loopbackErr  error
)

// requireVsockLoopback skips t unless this kernel has AF_VSOCK with the
// loopback transport (CID 1, module vsock_loopback). The UML test in e2e
// covers the real path where the host kernel lacks it.
func requireVsockLoopback(t *testing.T) {
	t.Helper()
	loopbackOnce.Do(func() { loopbackErr = probeVsockLoopback() })
	if loopbackErr != nil {
		t.Skip(loopbackErr.Error())
	}
}

func probeVsockLoopback() error {
	if _, err := os.Stat("/dev/vsock"); err != nil {
		return fmt.Errorf("AF_VSOCK unavailable: %v (load the vsock and vsock_loopback modules)", err)
	}
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		return fmt.Errorf("AF_VSOCK unavailable: socket(AF_VSOCK): %v", err)
	}
	defer unix.Close(fd)
	// Inside a VM without loopback, a connect to CID 1 goes to the host and
	// may hang until the (default 2 s) connect timeout: keep it short.
	tv := unix.NsecToTimeval((500 * time.Millisecond).Nanoseconds())
	unix.SetsockoptTimeval(fd, unix.AF_VSOCK, unix.SO_VM_SOCKETS_CONNECT_TIMEOUT, &tv)
	// Connecting to a port nobody listens on tells the transports apart:
	// with vsock_loopback the answer is a reset, without a transport for
	// CID 1 an error such as ENODEV, EHOSTUNREACH or a timeout.
	err = unix.Connect(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: 0xFFFFFFF0})
	switch {
	case err == nil, errors.Is(err, unix.ECONNRESET), errors.Is(err, unix.ECONNREFUSED):
		return nil
	default:
		return fmt.Errorf("no vsock loopback transport on this kernel (connect to CID 1: %v); load vsock_loopback — e2e's UML test covers this path", err)
	}
}

// listenVsockAnyPort listens on the first free port from a fixed base.
func listenVsockAnyPort(t *testing.T) (net.Listener, uint32) {
	t.Helper()
	base := uint32(40000 + os.Getpid()%10000)
	for port := base; port < base+50; port++ {
		l, err := ListenVsock(port, slog.New(slog.NewTextHandler(io.Discard, nil)), true)
		if err == nil {
			return l, port
		}
		if !errors.Is(err, unix.EADDRINUSE) {
			t.Fatal(err)
		}
	}
	t.Fatal("no free vsock port")
	return nil, 0
}

func TestVsockLoopbackPrincipal(t *testing.T) {
	requireVsockLoopback(t)
	l, port := listenVsockAnyPort(t)
	f := &fakeBackend{}
	srv := NewServer(f, slog.New(slog.NewTextHandler(io.Discard, nil)))
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	}()
	c := client.NewVsockClient(unix.VMADDR_CID_LOCAL, port)
	if _, err := c.Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := f.lastPrincipal(); p.Channel != daemon.ChannelVsock || p.CID != unix.VMADDR_CID_LOCAL || p.HasCred {
		t.Fatalf("principal = %+v, want vsock cid 1", p)
	}
}

func TestVsockClientUnreachable(t *testing.T) {
	requireVsockLoopback(t)
	c := client.NewVsockClient(unix.VMADDR_CID_LOCAL, 0xFFFFFFF0)
	_, err := c.Status(context.Background())
	var ue *client.UnreachableError
	if !errors.As(err, &ue) || ue.Addr != "vsock:1:4294967280" {
		t.Fatalf("err = %v, want unreachable at vsock:1:4294967280", err)
	}
}
