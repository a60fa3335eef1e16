package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"time"
)

// serialTransport is the http.RoundTripper of a short-lived client, a CLI
// command that makes a request or two and exits. It does each exchange in
// the calling goroutine on one kept-alive connection. http.Transport starts
// a dial goroutine and a read and a write loop per connection and hands
// every request and response between them; a process that exits after two
// requests pays for that (a few tenths of a ms of a `coffer secret get`).
// Concurrent requests are correct but each one past the first dials its
// own connection; at most one idle connection is kept.
//
// The transport bounds each exchange, body included, by timeout, with the
// errors http.Client.Timeout gives: http.Client starts a goroutine per
// request to time a RoundTripper other than its own.
type serialTransport struct {
	dial        func(ctx context.Context) (net.Conn, error)
	timeout     time.Duration // 0: none; a request's context may lift it (unbounded)
	idleTimeout time.Duration // an idle connection older than this is not reused

	mu        sync.Mutex
	idle      *serialConn
	idleSince time.Time
}

type serialConn struct {
	net.Conn
	br *bufio.Reader
}

// aLongTimeAgo is a deadline that makes pending and future I/O fail.
var aLongTimeAgo = time.Unix(1, 0)

// unboundedKey marks a request context that the transport's timeout does
// not apply to (a backup takes as long as the store is big).
type unboundedKey struct{}

// errTimeout is the cause of a context that the transport's timeout ended.
var errTimeout = errors.New("client timeout")

// timeoutError is http.Client's error for its Timeout.
type timeoutError struct{ err string }

func (e *timeoutError) Error() string        { return e.err }
func (e *timeoutError) Timeout() bool        { return true }
func (e *timeoutError) Temporary() bool      { return true }
func (e *timeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

func (t *serialTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	cancel := context.CancelFunc(func() {})
	if t.timeout > 0 && req.Context().Value(unboundedKey{}) == nil {
		var ctx context.Context
		ctx, cancel = context.WithTimeoutCause(req.Context(), t.timeout, errTimeout)
		req = req.WithContext(ctx)
	}
	for {
		resp, retry, err := t.exchange(req, cancel)
		if err != nil {
			if context.Cause(req.Context()) == errTimeout {
				err = &timeoutError{err.Error() + " (Client.Timeout exceeded while awaiting headers)"}
			}
			cancel()
			return nil, err
		}
		if !retry {
			return resp, nil // the body ends the timeout
		}
		// A reused connection that the daemon had closed: send again on a
		// new one (http.Transport does the same, for the same requests).
		r2 := req.Clone(req.Context())
		if req.GetBody != nil {
			body, err := req.GetBody()
			if err != nil {
				cancel()
				return nil, err
			}
			r2.Body = body
		}
		req = r2
	}
}

// exchange sends req and reads the answer's header; the answer's body calls
// done once it is read or closed. retry reports that the connection was a
// reused one that turned out closed before the daemon saw the request or
// answered it, and that req can be sent again.
func (t *serialTransport) exchange(req *http.Request, done func()) (_ *http.Response, retry bool, _ error) {
	ctx := req.Context()
	if err := ctx.Err(); err != nil {
		closeBody(req)
		return nil, false, err
	}
	c, reused := t.take()
	if c == nil {
		nc, err := t.dial(ctx)
		if err != nil {
			closeBody(req)
			return nil, false, err
		}
		c = &serialConn{Conn: nc, br: bufio.NewReader(nc)}
	}
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(aLongTimeAgo) })
	fail := func(err error, retry bool) (*http.Response, bool, error) {
		stop()
		c.Close()
		if ctxErr := ctx.Err(); ctxErr != nil {
			return nil, false, ctxErr
		}
		if retry {
			return nil, true, nil
		}
		return nil, false, err
	}
	cw := &countingWriter{w: c}
	if err := req.Write(cw); err != nil { // closes req.Body
		// Nothing of it sent: the connection was closed before.
		return fail(err, reused && cw.n == 0 && replayable(req, false))
	}
	// Nothing at all back on a reused connection: the daemon closed it
	// while idle; send again what is safe to send twice.
	if _, err := c.br.Peek(1); err != nil {
		return fail(err, reused && replayable(req, true))
	}
	var resp *http.Response
	for {
		var err error
		resp, err = http.ReadResponse(c.br, req)
		if err != nil {
			// http.Transport's words for an answer cut or garbled.
			return fail(fmt.Errorf("net/http: HTTP/1.x transport connection broken: %w", err), false)
		}
		// Skip informational answers (the daemon sends none unasked).
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		resp.Body.Close()
	}
	b := &serialBody{t: t, c: c, rc: resp.Body, ctx: ctx, stop: stop, done: done, keep: !resp.Close && !req.Close}
	if resp.Body == http.NoBody {
		b.release(true)
		return resp, false, nil
	}
	resp.Body = b
	return resp, false, nil
}

// replayable is http.Transport's rule for sending a request again: its
// body can be had again, and either none of it was written or its method
// is idempotent.
func replayable(req *http.Request, written bool) bool {
	if req.Body != nil && req.Body != http.NoBody && req.GetBody == nil {
		return false
	}
	if !written {
		return true
	}
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace:
		return true
	}
	_, ok := req.Header["Idempotency-Key"]
	_, xok := req.Header["X-Idempotency-Key"]
	return ok || xok
}

// countingWriter counts the bytes written through it.
type countingWriter struct {
	w io.Writer
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.w.Write(p)
	cw.n += int64(n)
	return n, err
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		req.Body.Close()
	}
}

// take returns the idle connection, if there is one fresh enough.
func (t *serialTransport) take() (*serialConn, bool) {
	t.mu.Lock()
	c, since := t.idle, t.idleSince
	t.idle = nil
	t.mu.Unlock()
	if c != nil && t.idleTimeout > 0 && time.Since(since) > t.idleTimeout {
		c.Close()
		return nil, false
	}
	return c, c != nil
}

// put keeps c for the next request, or closes it if one is kept already.
func (t *serialTransport) put(c *serialConn) {
	t.mu.Lock()
	if t.idle == nil {
		t.idle, t.idleSince = c, time.Now()
		c = nil
	}
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// CloseIdleConnections closes the kept connection (http.Client calls it).
func (t *serialTransport) CloseIdleConnections() {
	t.mu.Lock()
	c := t.idle
	t.idle = nil
	t.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// serialBody is a response body: once read to its end the connection goes
// back to the transport; closed before that, the connection is closed (as
// http.Transport does), so that an unread rest never reaches the next
// request. Close may come while a Read waits: closing the connection ends
// the Read.
type serialBody struct {
	t    *serialTransport
	c    *serialConn
	rc   io.ReadCloser
	ctx  context.Context
	stop func() bool // stops the context's AfterFunc
	done func()      // ends the exchange's timeout
	keep bool

	mu       sync.Mutex
	closed   bool
	released bool
}

func (b *serialBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if closed {
		return 0, http.ErrBodyReadAfterClose
	}
	n, err := b.rc.Read(p)
	if err == nil {
		return n, nil
	}
	if err != io.EOF {
		if ctxErr := b.ctx.Err(); ctxErr != nil {
			err = ctxErr
		}
		if context.Cause(b.ctx) == errTimeout {
			err = &timeoutError{err.Error() + " (Client.Timeout or context cancellation while reading body)"}
		}
	}
	b.release(err == io.EOF)
	return n, err
}

func (b *serialBody) Close() error {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.release(false)
	return nil
}

// release ends the exchange, once: the connection is kept when the body
// was read to its end, neither side asked to close, and the context did
// not fire.
func (b *serialBody) release(eof bool) {
	b.mu.Lock()
	if b.released {
		b.mu.Unlock()
		return
	}
	b.released = true
	b.mu.Unlock()
	defer b.done()
	if b.stop() && eof && b.keep {
		b.t.put(b.c)
		return
	}
	b.c.Close()
}
