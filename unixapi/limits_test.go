package unixapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// countingListener records how many of its connections are open at once.
type countingListener struct {
	net.Listener
	mu       sync.Mutex
	open     int
	maxOpen  int
	accepted int
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.open++
	l.accepted++
	l.maxOpen = max(l.maxOpen, l.open)
	l.mu.Unlock()
	return &countedConn{Conn: c, l: l}, nil
}

func (l *countingListener) stats() (open, maxOpen, accepted int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.open, l.maxOpen, l.accepted
}

type countedConn struct {
	net.Conn
	l    *countingListener
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		c.l.open--
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}

func unixListener(t *testing.T) (*net.UnixListener, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "l.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

func dial(t *testing.T, path string) net.Conn {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLimitListenerHoldsBackConnectionsBeyondN(t *testing.T) {
	inner, path := unixListener(t)
	l := LimitListener(inner, 2).(*limitListener)
	accepted := make(chan net.Conn, 10)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	notAccepted := func(why string) {
		t.Helper()
		select {
		case c := <-accepted:
			t.Fatalf("accepted a connection (%v) %s", c.RemoteAddr(), why)
		case <-time.After(200 * time.Millisecond):
		}
	}
	for range 3 {
		dial(t, path)
	}
	a, b := <-accepted, <-accepted
	// The third is connected but waits in the backlog.
	notAccepted("while two are open, limit 2")
	// Closing twice gives back one slot, once.
	a.Close()
	a.Close()
	c := <-accepted
	dial(t, path)
	notAccepted("after a double close freed one slot, taken since")
	b.Close()
	d := <-accepted
	defer c.Close()
	defer d.Close()
	// Close ends an Accept that waits for a slot.
	dial(t, path)
	l.Close()
	if _, ok := <-accepted; ok {
		t.Fatal("accepted after Close")
	}
}

func TestLimitListenerZeroIsNoLimit(t *testing.T) {
	inner, _ := unixListener(t)
	if l := LimitListener(inner, 0); l != net.Listener(inner) {
		t.Fatalf("LimitListener(l, 0) = %T, want l itself", l)
	}
}

// TestFloodDoesNotStarveAcceptedClients fills the server's connection
// limit with silent connections and queues many more: a client whose
// connection was accepted before is still served at once, the daemon never
// holds more connections than the limit, and a new client is served once
// the header timeout has freed the slots.
func TestFloodDoesNotStarveAcceptedClients(t *testing.T) {
	const limit = 4
	inner, path := unixListener(t)
	counting := &countingListener{Listener: NewPeerListener(inner, nil)}
	l := LimitListener(counting, limit)
	srv := NewServer(&fakeBackend{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.SetTimeouts(Timeouts{ReadHeader: 200 * time.Millisecond})
	go srv.Serve(l)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	})

	// One client connects and keeps its connection.
	var conns sync.Map
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			c, err := d.DialContext(ctx, "unix", path)
			if err == nil {
				conns.Store(c, true)
			}
			return c, err
		},
		MaxConnsPerHost: 1,
	}
	early := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	status := func(c *http.Client) error {
		resp, err := c.Get("http://coffer/v1/status")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		if resp.StatusCode != http.StatusOK {
			return errors.New(resp.Status)
		}
		return nil
	}
	if err := status(early); err != nil {
		t.Fatal(err)
	}

	// The flood: silent connections and partial request lines.
	for i := range 24 {
		c := dial(t, path)
		if i%2 == 1 {
			io.WriteString(c, "GET /v1/sta")
		}
	}
	if err := status(early); err != nil {
		t.Fatalf("the accepted client during the flood: %v", err)
	}
	n := 0
	conns.Range(func(_, _ any) bool { n++; return true })
	if n != 1 {
		t.Fatalf("the accepted client dialled %d connections, want its one", n)
	}
	late := &http.Client{Transport: &http.Transport{DialContext: tr.DialContext}, Timeout: 30 * time.Second}
	if err := status(late); err != nil {
		t.Fatalf("a new client after the flood: %v", err)
	}
	_, maxOpen, accepted := counting.stats()
	if maxOpen > limit {
		t.Fatalf("%d connections open at once, limit %d", maxOpen, limit)
	}
	if accepted < limit {
		t.Fatalf("only %d connections accepted", accepted)
	}
}

func TestHybridVsockLimitIsPerVM(t *testing.T) {
	dir := hybridDir(t)
	a := HybridVM{Name: "vm-a", UDSPath: filepath.Join(dir, "a")}
	b := HybridVM{Name: "vm-b", UDSPath: filepath.Join(dir, "b")}
	f := &fakeBackend{}
	l, err := ListenHybridVsock([]HybridVM{a, b}, hybridPort, SocketOptions{GID: -1, MaxConns: 1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, f, l)
	// A silent connection takes vm-a's only slot; vm-b is served.
	hold := dial(t, HybridSocketPath(a, hybridPort))
	if _, err := vmmClient(b).Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := f.lastPrincipal(); p.Channel != daemon.ChannelHybridVsock || p.VM != "vm-b" {
		t.Fatalf("principal %+v, want vm-b", p)
	}
	hold.Close()
	if _, err := vmmClient(a).Status(context.Background()); err != nil {
		t.Fatal(err)
	}
	if p := f.lastPrincipal(); p.Channel != daemon.ChannelHybridVsock || p.VM != "vm-a" || p.HasCred {
		t.Fatalf("principal %+v, want exactly vm-a", p)
	}
}

func TestOversizeHeadersGet431(t *testing.T) {
	_, path := serve(t, &fakeBackend{})
	for _, size := range []int{MaxHeaderBytes + 8<<10, 64 << 10, 256 << 10} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			c := dial(t, path)
			req := "GET /v1/status HTTP/1.1\r\nHost: coffer\r\nX-Big: " + strings.Repeat("a", size) + "\r\n\r\n"
			// Write from another goroutine: past the socket buffer the
			// write blocks until the server has stopped reading.
			go io.WriteString(c, req)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatalf("read the answer: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			if err != nil {
				t.Fatalf("read the body: %v (the connection must end cleanly)", err)
			}
			if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || !resp.Close {
				t.Fatalf("status %d close %v: %s; want 431 and the connection closed", resp.StatusCode, resp.Close, body)
			}
		})
	}
	// Just under the limit is served.
	c := client.NewClient(path)
	req, _ := http.NewRequest("GET", "http://coffer/v1/status", nil)
	req.Header.Set("X-Big", strings.Repeat("a", MaxHeaderBytes-1024))
	resp, err := c.HTTPClient().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("headers under the limit: %d", resp.StatusCode)
	}
}

// TestSlowClientsAreCutOff: a client that trickles its headers, or its
// body, is disconnected by the server.
func TestSlowClientsAreCutOff(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.sock")
	l, err := ListenUnix(path, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(&fakeBackend{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.SetTimeouts(Timeouts{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond})
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })

	for _, tc := range []struct {
		name, head string
	}{
		{"headers", ""},
		{"body", "POST /v1/projects/default/secrets HTTP/1.1\r\nHost: coffer\r\nContent-Type: application/json\r\nContent-Length: 8000\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := dial(t, path)
			if _, err := io.WriteString(c, tc.head); err != nil {
				t.Fatal(err)
			}
			trickle := "GET /v1/status HTTP/1.1\r\nHost: coffer\r\n"
			if tc.head != "" {
				trickle = `{"display_name":"` + strings.Repeat("x", 8000)
			}
			if !cutOff(c, trickle, 100*time.Millisecond, 30*time.Second) {
				t.Fatal("the server did not hang up on a client sending one byte at a time")
			}
		})
	}
}

// cutOff sends data one byte every gap until the server closes the
// connection (true) or until bound (false). Whatever the server answers
// before hanging up is ignored.
func cutOff(c net.Conn, data string, gap, bound time.Duration) bool {
	closed := make(chan struct{})
	go func() {
		io.Copy(io.Discard, c) // returns at EOF or reset
		close(closed)
	}()
	end := time.After(bound)
	for i := 0; ; i++ {
		select {
		case <-closed:
			return true
		case <-end:
			return false
		case <-time.After(gap):
		}
		if i < len(data) {
			c.Write([]byte{data[i]}) // fails once the server is gone; the reader notices
		}
	}
}

// limitedBackend refuses every authentication as rate-limited.
type limitedBackend struct {
	fakeBackend
	err error
}

func (b *limitedBackend) Authenticate(context.Context, daemon.Principal, string) (daemon.Principal, error) {
	return daemon.Principal{}, b.err
}

func (b *limitedBackend) Login(context.Context, string) (daemon.Session, string, error) {
	return daemon.Session{}, "", b.err
}

func (b *limitedBackend) ClientCredentials(context.Context, string, string, string, ...daemon.Audiences) (daemon.AccessToken, error) {
	return daemon.AccessToken{}, b.err
}

func TestRateLimitedAnswers(t *testing.T) {
	b := &limitedBackend{err: &daemon.Error{
		Class: daemon.ErrRateLimited, Code: daemon.CodeRateLimited,
		Message: "too many failed authentications; retry in 3 seconds",
		Err:     &daemon.RetryAfterError{After: 2100 * time.Millisecond},
	}}
	c, _ := serve(t, b)
	for _, tc := range []struct {
		name   string
		req    func() *http.Request
		oauth2 bool
	}{
		{"bearer", func() *http.Request {
			r, _ := http.NewRequest("GET", "http://coffer/v1/status", nil)
			r.Header.Set("Authorization", "Bearer cfs_x")
			return r
		}, false},
		{"login", func() *http.Request {
			r, _ := http.NewRequest("POST", "http://coffer/v1/auth/login", nil)
			r.Header.Set("Authorization", "Bearer cfa_x")
			return r
		}, false},
		{"oauth2 token", func() *http.Request {
			form := url.Values{"grant_type": {"client_credentials"}, "client_id": {"id"}, "client_secret": {"cfo_x"}}
			r, _ := http.NewRequest("POST", "http://coffer/oauth2/token", strings.NewReader(form.Encode()))
			r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			return r
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp, err := c.HTTPClient().Do(tc.req())
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("status %d, want 429", resp.StatusCode)
			}
			if ra := resp.Header.Get("Retry-After"); ra != "3" {
				t.Fatalf("Retry-After %q, want 3 (2.1 s rounded up)", ra)
			}
			var body map[string]string
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatal(err)
			}
			msgKey := "message"
			if tc.oauth2 {
				msgKey = "error_description" // RFC 6749 §5.2
			}
			if body["error"] != "rate_limited" || body[msgKey] == "" || len(body) != 2 {
				t.Fatalf("body %v, want error rate_limited and %s", body, msgKey)
			}
		})
	}
	// The client maps 429 back to the class.
	_, err := c.WithToken("cfs_x").Status(context.Background())
	if !errors.Is(err, api.ErrRateLimited) {
		t.Fatalf("client error %v is not ErrRateLimited", err)
	}
}

// TestStreamingOutlivesTheReadTimeout: a handler that streams reads a body
// that takes longer than the server's whole-request timeout, as long as
// it keeps coming; one that stalls is still cut off.
func TestStreamingOutlivesTheReadTimeout(t *testing.T) {
	path := filepath.Join(t.TempDir(), "coffer.sock")
	l, err := ListenUnix(path, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(&fakeBackend{}, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.SetTimeouts(Timeouts{Read: 300 * time.Millisecond})
	for _, route := range []struct {
		pattern string
		stream  bool
	}{{"POST /test/stream", true}, {"POST /test/plain", false}} {
		srv.mux.HandleFunc(route.pattern, func(w http.ResponseWriter, r *http.Request) {
			if route.stream {
				w, r = streaming(w, r, 5*time.Second)
			}
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusRequestTimeout)
				return
			}
			io.WriteString(w, strconv.FormatInt(n, 10))
		})
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	c := client.NewClient(path)

	send := func(route string) (int, string) {
		pr, pw := io.Pipe()
		go func() {
			// 12 chunks 100 ms apart: over a second, four read timeouts.
			for range 12 {
				time.Sleep(100 * time.Millisecond)
				if _, err := pw.Write([]byte("0123456789")); err != nil {
					return
				}
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", "http://coffer"+route, pr)
		resp, err := c.HTTPClient().Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if status, body := send("/test/stream"); status != http.StatusOK || body != "120" {
		t.Fatalf("streaming route: %d %q, want 200 \"120\"", status, body)
	}
	if status, body := send("/test/plain"); status == http.StatusOK {
		t.Fatalf("plain route read a body slower than the read timeout: %d %q", status, body)
	}
}
