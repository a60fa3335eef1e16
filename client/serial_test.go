package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// acceptCounter counts the connections it accepts.
type acceptCounter struct {
	net.Listener
	n atomic.Int64
}

func (l *acceptCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

// serveHTTP serves h on a new Unix socket and returns a command client for
// it and the listener that counts its connections.
func serveHTTP(t *testing.T, h http.Handler) (*Client, *acceptCounter) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	l := &acceptCounter{Listener: ul}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return NewCommandClient(path), l
}

func get(t *testing.T, c *Client, path string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://coffer"+path, nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read: %v", path, err)
	}
	return string(b)
}

// echo answers the request path, and a body of n bytes for /big/n.
var echo = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	var n int
	if _, err := fmt.Sscanf(r.URL.Path, "/big/%d", &n); err == nil {
		w.Write([]byte(strings.Repeat("x", n)))
		return
	}
	if r.Method == http.MethodPost {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s", r.URL.Path, b)
		return
	}
	fmt.Fprint(w, r.URL.Path)
})

func TestSerialTransportReusesOneConnection(t *testing.T) {
	c, l := serveHTTP(t, echo)
	for i := range 5 {
		p := fmt.Sprintf("/r%d", i)
		if got := get(t, c, p); got != p {
			t.Fatalf("GET %s answered %q", p, got)
		}
	}
	// A POST with a body, then a big answer read in small pieces.
	if got := postBody(t, c, "/p", "hello"); got != "/p hello" {
		t.Fatalf("POST answered %q", got)
	}
	if got := get(t, c, "/big/200000"); len(got) != 200000 {
		t.Fatalf("big answer of %d bytes", len(got))
	}
	if n := l.n.Load(); n != 1 {
		t.Errorf("%d connections for 7 sequential requests, want 1", n)
	}
}

func postBody(t *testing.T, c *Client, path, body string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, "http://coffer"+path, strings.NewReader(body))
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestSerialTransportUnreadBodyClosesTheConnection(t *testing.T) {
	c, l := serveHTTP(t, echo)
	req, _ := http.NewRequest(http.MethodGet, "http://coffer/big/100000", nil)
	resp, err := c.hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 10)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if _, err := resp.Body.Read(buf); !errors.Is(err, http.ErrBodyReadAfterClose) {
		t.Errorf("read after close: %v, want ErrBodyReadAfterClose", err)
	}
	// The rest of the first answer must not be taken for the next one.
	if got := get(t, c, "/next"); got != "/next" {
		t.Fatalf("next answer %.40q, want /next", got)
	}
	if n := l.n.Load(); n != 2 {
		t.Errorf("%d connections, want 2 (the half-read one is not reused)", n)
	}
}

func TestSerialTransportConnectionClose(t *testing.T) {
	c, l := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		fmt.Fprint(w, r.URL.Path)
	}))
	for _, p := range []string{"/a", "/b", "/c"} {
		// A body that cannot be sent twice: no new try would save a
		// request sent on a connection the server closed.
		req, _ := http.NewRequest(http.MethodPost, "http://coffer"+p, io.NopCloser(strings.NewReader("x")))
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatalf("POST %s: %v", p, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != p {
			t.Fatalf("POST %s answered %q", p, b)
		}
	}
	if n := l.n.Load(); n != 3 {
		t.Errorf("%d connections, want 3 (the server closes each)", n)
	}
}

// closingServer answers the first request of each connection with a
// keep-alive answer and then drops the connection, as a daemon drops an
// idle one: at once (readSecond false), or having read the next request
// without answering it (readSecond true: the drop crossed the request). It
// records the requests it read.
func closingServer(t *testing.T, readSecond bool) (string, func() []string, chan struct{}) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	var mu sync.Mutex
	var seen []string
	closed := make(chan struct{}, 16) // a connection was dropped
	read := func(br *bufio.Reader) bool {
		req, err := http.ReadRequest(br)
		if err != nil {
			return false
		}
		body, _ := io.ReadAll(req.Body)
		mu.Lock()
		seen = append(seen, req.Method+" "+req.URL.Path+" "+string(body))
		mu.Unlock()
		return true
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer func() { c.Close(); closed <- struct{}{} }()
				br := bufio.NewReader(c)
				if !read(br) {
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if readSecond {
					read(br)
				}
			}()
		}
	}()
	return path, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), seen...)
	}, closed
}

func count(ss []string, s string) int {
	n := 0
	for _, x := range ss {
		if x == s {
			n++
		}
	}
	return n
}

func TestSerialTransportStaleConnection(t *testing.T) {
	for _, readSecond := range []bool{false, true} {
		t.Run(fmt.Sprintf("read second %v", readSecond), func(t *testing.T) {
			path, seen, closed := closingServer(t, readSecond)
			// Without readSecond, the next request waits for the drop.
			dropped := func() {
				if !readSecond {
					<-closed
				}
			}
			c := NewCommandClient(path)
			if got := get(t, c, "/first"); got != "ok" {
				t.Fatalf("first answer %q", got)
			}
			dropped()
			// A GET goes again on a new connection.
			if got := get(t, c, "/again"); got != "ok" {
				t.Fatalf("GET on a dropped connection answered %q", got)
			}
			dropped()
			// A POST goes again only if none of it was sent; the server
			// never gets it twice.
			req, _ := http.NewRequest(http.MethodPost, "http://coffer/create", strings.NewReader("once"))
			resp, err := c.hc.Do(req)
			if err == nil {
				io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			posts := count(seen(), "POST /create once")
			switch {
			case readSecond && err == nil:
				t.Errorf("a POST the server read but did not answer succeeded (sent %d times)", posts)
			case posts != 1:
				t.Errorf("the POST reached the server %d times, want 1: %q", posts, seen())
			}
		})
	}
}

func TestSerialTransportCancel(t *testing.T) {
	release := make(chan struct{})
	c, _ := serveHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-body":
			w.Write([]byte("part"))
			w.(http.Flusher).Flush()
		case "/slow":
		default:
			fmt.Fprint(w, r.URL.Path)
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer close(release)
	for _, tt := range []struct {
		name, path string
	}{
		{"waiting for the header", "/slow"},
		{"reading the body", "/slow-body"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			time.AfterFunc(50*time.Millisecond, cancel)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://coffer"+tt.path, nil)
			done := make(chan error, 1)
			go func() {
				resp, err := c.hc.Do(req)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				done <- err
			}()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("err = %v, want context.Canceled", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("request not cancelled")
			}
			// The client still works.
			if got := get(t, c, "/after"); got != "/after" {
				t.Fatalf("answer after a cancel %q", got)
			}
		})
	}
}

func TestSerialTransportConcurrent(t *testing.T) {
	c, _ := serveHTTP(t, echo)
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 8 {
		wg.Go(func() {
			for i := range 20 {
				p := fmt.Sprintf("/g%d/%d", g, i)
				req, _ := http.NewRequest(http.MethodGet, "http://coffer"+p, nil)
				resp, err := c.hc.Do(req)
				if err != nil {
					errs <- err
					return
				}
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if err != nil || string(b) != p {
					errs <- fmt.Errorf("GET %s: %q, %v", p, b, err)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestSerialTransportTimeout: the transport's timeout fails a request as
// http.Client.Timeout does with http.Transport, and a request marked
// unbounded (a backup) has none.
func TestSerialTransportTimeout(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/slow-body":
			w.Write([]byte("part"))
			w.(http.Flusher).Flush()
		case "/late":
			time.Sleep(300 * time.Millisecond)
			fmt.Fprint(w, "late")
			return
		}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	dial := func(ctx context.Context) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", path)
	}
	const timeout = 100 * time.Millisecond
	ours := &http.Client{Transport: &serialTransport{dial: dial, timeout: timeout}}
	std := &http.Client{Timeout: timeout, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) { return dial(ctx) },
	}}
	fetch := func(c *http.Client, ctx context.Context, p string) error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://coffer"+p, nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		return err
	}
	for _, p := range []string{"/slow", "/slow-body"} {
		t.Run(p, func(t *testing.T) {
			got, want := fetch(ours, context.Background(), p), fetch(std, context.Background(), p)
			if got == nil || want == nil || got.Error() != want.Error() {
				t.Fatalf("error %v, http.Client.Timeout gives %v", got, want)
			}
			var ne net.Error
			if !errors.Is(got, context.DeadlineExceeded) || !errors.As(got, &ne) || !ne.Timeout() {
				t.Errorf("error %v is not a deadline timeout", got)
			}
		})
	}
	ctx := context.WithValue(context.Background(), unboundedKey{}, true)
	if err := fetch(ours, ctx, "/late"); err != nil {
		t.Errorf("an unbounded request timed out: %v", err)
	}
	if err := fetch(ours, context.Background(), "/late"); err == nil {
		t.Errorf("a bounded request outlived the timeout")
	}
}

// TestSerialTransportEndsItsTimer: an exchange read to its end or closed
// releases its timeout (the context the request went with ends).
func TestSerialTransportEndsItsTimer(t *testing.T) {
	c, _ := serveHTTP(t, echo)
	for _, readAll := range []bool{true, false} {
		req, _ := http.NewRequest(http.MethodGet, "http://coffer/big/100000", nil)
		resp, err := c.hc.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if readAll {
			io.ReadAll(resp.Body)
		}
		resp.Body.Close()
		if resp.Request.Context().Err() == nil {
			t.Errorf("read to the end %v: the exchange's timeout still runs", readAll)
		}
	}
}

// TestCommandClientBrokenAnswersLikeNewClient: a daemon that dies mid-way
// gives the command client the errors NewClient gives.
func TestCommandClientBrokenAnswersLikeNewClient(t *testing.T) {
	for _, tt := range []struct {
		name   string
		answer string // written after reading the request, then the connection closes
	}{
		{"closed before answering", ""},
		{"closed mid-header", "HTTP/1.1 200 OK\r\nContent-Len"},
		{"closed after the status line", "HTTP/1.1 200 OK\r\n"},
		{"closed after the header", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n"},
		{"closed mid-body", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"ver"},
		{"not HTTP", "hello\r\n\r\n"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "s.sock")
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						defer c.Close()
						if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
							io.WriteString(c, tt.answer)
						}
					}()
				}
			}()
			_, want := NewClient(path).Status(context.Background())
			_, got := NewCommandClient(path).Status(context.Background())
			if want == nil || got == nil || got.Error() != want.Error() {
				t.Errorf("command client: %v; NewClient: %v", got, want)
			}
		})
	}
}
