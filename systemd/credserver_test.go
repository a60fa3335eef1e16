package systemd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
)

// wrapListener wraps each accepted connection the way a connection limit
// does: the Unix connection is reachable through NetConn, and closing the
// wrapper is what the limit counts.
type wrapListener struct {
	net.Listener
	closed atomic.Int32
}

func (l *wrapListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &wrapConn{Conn: c, l: l}, nil
}

type wrapConn struct {
	net.Conn
	l *wrapListener
}

func (c *wrapConn) NetConn() net.Conn { return c.Conn }

func (c *wrapConn) Close() error {
	c.l.closed.Add(1)
	return c.Conn.Close()
}

func TestServeCredentialsThroughAWrappedListener(t *testing.T) {
	path := filepath.Join(t.TempDir(), "creds.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	wl := &wrapListener{Listener: ln}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- ServeCredentials(ctx, wl, func(_ context.Context, unit, name string) ([]byte, error) {
			return []byte(unit + ":" + name), nil
		}, slog.New(slog.NewTextHandler(io.Discard, nil)), uint32(os.Getuid()))
	}()
	defer cancel()

	u := randomHex(t, 12)
	c, err := net.DialUnix("unix", &net.UnixAddr{Name: "@" + randomHex(t, 16) + "/unit/w" + u + ".service/db", Net: "unix"}, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(c)
	c.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := "w" + u + ".service:db"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
	cancel()
	if err := <-done; err != nil { // after every connection is done with
		t.Fatalf("ServeCredentials: %v", err)
	}
	if n := wl.closed.Load(); n != 1 {
		t.Fatalf("the wrapped connection was closed %d times, want 1", n)
	}
}
