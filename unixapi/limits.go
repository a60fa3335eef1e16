package unixapi

import (
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/daemon"
)

// DefaultMaxConns is how many connections one listener serves at once
// unless configured otherwise.
const DefaultMaxConns = 256

// The server's timeouts. A request's line and headers must arrive within
// ReadHeader of its first byte (or of the connection), and the whole
// request, body included, within Read: a client that trickles bytes is cut
// off. 10 s is ample for the 8 KiB a body may have; handlers that stream
// (a backup download, a restore upload) lift it with streaming.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 10 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	// MaxHeaderBytes bounds a request's line and headers; over it the
	// server answers 431 and hangs up.
	MaxHeaderBytes = 16 << 10
)

// Timeouts override the server's read timeouts; a zero field keeps the
// default.
type Timeouts struct {
	ReadHeader time.Duration
	Read       time.Duration
}

// SetTimeouts changes the server's read timeouts. Call it before Serve.
func (s *Server) SetTimeouts(t Timeouts) {
	if t.ReadHeader > 0 {
		s.httpSrv.ReadHeaderTimeout = t.ReadHeader
	}
	if t.Read > 0 {
		s.httpSrv.ReadTimeout = t.Read
	}
}

// LimitListener returns a listener that has at most n of l's connections
// open at once (n <= 0: no limit). When n are open, Accept waits until one
// closes: the connections beyond n wait in the kernel's listen backlog
// rather than being accepted and dropped, so that a client caught in a
// flood is served late instead of refused, while the connections already
// accepted are served as usual — the flood costs the daemon no goroutine,
// buffer or file descriptor. The server's timeouts are what free the slots
// that idle or slow peers hold.
func LimitListener(l net.Listener, n int) net.Listener {
	if n <= 0 {
		return l
	}
	return &limitListener{Listener: l, slots: make(chan struct{}, n), done: make(chan struct{})}
}

type limitListener struct {
	net.Listener
	slots     chan struct{}
	done      chan struct{}
	closeOnce sync.Once
}

func (l *limitListener) Accept() (net.Conn, error) {
	select {
	case l.slots <- struct{}{}:
	case <-l.done:
		return nil, &net.OpError{Op: "accept", Net: l.Addr().Network(), Addr: l.Addr(), Err: net.ErrClosed}
	}
	c, err := l.Listener.Accept()
	if err != nil {
		<-l.slots
		return nil, err
	}
	return &limitConn{Conn: c, release: func() { <-l.slots }}, nil
}

// Close closes l; an Accept waiting for a slot returns at once.
func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// limitConn is an accepted connection that gives its slot back when
// closed.
type limitConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(c.release)
	return err
}

// NetConn returns the wrapped connection (the convention of tls.Conn).
func (c *limitConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the connection when it can, so net/http can end
// an error answer (431, 400) with a FIN rather than a reset.
func (c *limitConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c when its type can.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: c.LocalAddr().Network(), Err: net.ErrClosed}
}

// innerConn returns the connection under any limitConn and fairConn
// wrappers.
func innerConn(c net.Conn) net.Conn {
	for {
		switch w := c.(type) {
		case *limitConn:
			c = w.Conn
		case *fairConn:
			c = w.Conn
		default:
			return c
		}
	}
}

// setRetryAfter adds the Retry-After header (seconds) a rate-limited
// error asks for.
func setRetryAfter(w http.ResponseWriter, err error) {
	if r, ok := daemon.RetryAfterOf(err); ok {
		w.Header().Set("Retry-After", strconv.FormatInt(r.RetrySeconds(), 10))
	}
}

// streaming lifts the server-wide whole-request read deadline and the
// write deadline for a handler that moves more data than fits in them (a
// backup download, a restore upload). A trickling peer is still cut off:
// every read of the body and every write of the answer must make progress
// within idle. It returns the writer and request the handler must use.
func streaming(w http.ResponseWriter, r *http.Request, idle time.Duration) (http.ResponseWriter, *http.Request) {
	rc := http.NewResponseController(w)
	sw := &streamWriter{ResponseWriter: w, rc: rc, idle: idle}
	r2 := new(http.Request)
	*r2 = *r
	r2.Body = &streamBody{ReadCloser: r.Body, rc: rc, idle: idle}
	// Until the first read or write, neither may stall longer than idle.
	rc.SetReadDeadline(time.Now().Add(idle))
	rc.SetWriteDeadline(time.Now().Add(idle))
	return sw, r2
}

type streamWriter struct {
	http.ResponseWriter
	rc   *http.ResponseController
	idle time.Duration
}

func (w *streamWriter) Write(p []byte) (int, error) {
	w.rc.SetWriteDeadline(time.Now().Add(w.idle))
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.ResponseController reach the server's writer (Flush).
func (w *streamWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

type streamBody struct {
	io.ReadCloser
	rc   *http.ResponseController
	idle time.Duration
}

func (b *streamBody) Read(p []byte) (int, error) {
	b.rc.SetReadDeadline(time.Now().Add(b.idle))
	return b.ReadCloser.Read(p)
}
