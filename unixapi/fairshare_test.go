package unixapi

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// fakeIdentListener gives each connection of a real Unix socket the
// identity its client names in its own (abstract) address: "@fs-N-u1000"
// is uid 1000 (gid the same), "@fs-N-c42" CID 42. The real socket lets
// the server, its timeouts and the kernel behave as in production; only
// who is calling is made up.
type fakeIdentListener struct {
	net.Listener
}

func (l *fakeIdentListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	name := c.RemoteAddr().String()
	i := strings.LastIndexByte(name, '-')
	n, err := strconv.ParseUint(name[i+2:], 10, 32)
	if i < 0 || err != nil {
		c.Close()
		return nil, fmt.Errorf("fake identity %q", name)
	}
	p := daemon.Principal{Channel: daemon.ChannelUnix, HasCred: true, UID: uint32(n), GID: uint32(n)}
	if name[i+1] == 'c' {
		p = daemon.Principal{Channel: daemon.ChannelVsock, CID: uint32(n)}
	}
	return &identConn{Conn: c, principal: p}, nil
}

var fakeAddrs atomic.Int64

// dialAs connects to path as peer ("u1000", "c42").
func dialAs(t *testing.T, path, peer string) net.Conn {
	t.Helper()
	laddr := &net.UnixAddr{Name: fmt.Sprintf("@fs-%d-%d-%s", os.Getpid(), fakeAddrs.Add(1), peer), Net: "unix"}
	c, err := net.DialUnix("unix", laddr, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// fairServer serves a fake backend on a fair listener over a real socket.
type fairServer struct {
	path string
	fl   *fairListener
	logs *lockedBuffer
	// inner, when counted, counts the connections accepted from the
	// kernel and not yet closed: served and being refused.
	inner *countingListener
}

// isAdminUID0 makes uid 0 the only system admin.
func isAdminUID0(uid, _ uint32) bool { return uid == 0 }

// newFairServer serves on a fair listener with opts, changed by tweak.
// With counted, the listener's connections are counted (see inner); they
// are then not the kernel's, and the listener cannot tell those whose peer
// hung up.
func newFairServer(t *testing.T, opts SocketOptions, counted bool, tweak func(*fairListener)) *fairServer {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.sock")
	ul, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	s := &fairServer{path: path, logs: &lockedBuffer{}}
	var inner net.Listener = ul
	if counted {
		s.inner = &countingListener{Listener: ul}
		inner = s.inner
	}
	opts.Logger = slog.New(slog.NewTextHandler(s.logs, nil))
	s.fl = FairListener(&fakeIdentListener{Listener: inner}, opts).(*fairListener)
	if tweak != nil {
		tweak(s.fl)
	}
	serveOn(t, &fakeBackend{}, s.fl)
	return s
}

// open is how many connections the fair listener counts.
func (s *fairServer) open() int {
	s.fl.mu.Lock()
	defer s.fl.mu.Unlock()
	return s.fl.n
}

// idle is how many connections of uid the server has seen become idle.
func (s *fairServer) idle(uid uint32) int {
	s.fl.mu.Lock()
	defer s.fl.mu.Unlock()
	n := 0
	if pc := s.fl.peers[peerKey{channel: daemon.ChannelUnix, uid: uid}]; pc != nil {
		for fc := range pc.conns {
			if fc.state == http.StateIdle {
				n++
			}
		}
	}
	return n
}

// waitFor polls cond for up to 5 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// getStatus sends GET /v1/status on c and reads the answer; the connection
// stays open (keep-alive) unless the server closed it.
func getStatus(t *testing.T, c net.Conn) (*http.Response, []byte) {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	defer c.SetDeadline(time.Time{})
	if _, err := io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: coffer\r\n\r\n"); err != nil {
		t.Fatalf("write: %v", err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("read the answer: %v", err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read the body: %v", err)
	}
	return resp, body
}

// keepAlive opens a connection as peer that makes one request (answered
// 200) and stays open, idle.
func keepAlive(t *testing.T, path, peer string) net.Conn {
	t.Helper()
	c := dialAs(t, path, peer)
	if resp, body := getStatus(t, c); resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: status %d, want 200: %s", peer, resp.StatusCode, body)
	}
	return c
}

// keepIdle is keepAlive, returning once the server has marked the
// connection idle (so the connections of a test become idle in the order
// it opens them).
func (s *fairServer) keepIdle(t *testing.T, uid uint32) net.Conn {
	t.Helper()
	n := s.idle(uid)
	c := keepAlive(t, s.path, "u"+strconv.FormatUint(uint64(uid), 10))
	waitFor(t, "the server to see the connection idle", func() bool { return s.idle(uid) == n+1 })
	return c
}

// wantRefused asserts a refusal: the status, the error code, Retry-After,
// and the end of the connection after the answer.
func wantRefused(t *testing.T, c net.Conn, status int, code string) {
	t.Helper()
	resp, body := getStatus(t, c)
	if resp.StatusCode != status || !resp.Close || resp.Header.Get("Retry-After") != "1" || resp.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d close %v headers %v: %s; want %d, closed, Retry-After 1, JSON", resp.StatusCode, resp.Close, resp.Header, body, status)
	}
	var e api.ErrorBody
	if err := json.Unmarshal(body, &e); err != nil || e.Error != code || e.Message == "" {
		t.Fatalf("body %s (%v), want error %q with a message", body, err, code)
	}
	if !closedByServer(c) {
		t.Fatal("the refused connection is still open")
	}
}

// closedByServer tells whether the server has closed c (EOF or reset
// within 2 s); it consumes anything the server sent.
func closedByServer(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	defer c.SetReadDeadline(time.Time{})
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	return !(errors.As(err, &ne) && ne.Timeout())
}

// stillOpen tells whether c is open 50 ms from now.
func stillOpen(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	defer c.SetReadDeadline(time.Time{})
	_, err := c.Read(make([]byte, 1))
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestFairSharePerPeerCap: a caller (uid, CID) gets at most its share of
// the socket and a clear 429 beyond it, logged once per interval; other
// callers and admins are served; a caller that hangs up one of its
// connections may open another at once.
func TestFairSharePerPeerCap(t *testing.T) {
	s := newFairServer(t, SocketOptions{MaxConns: 64, MaxConnsPerPeer: 3, IsAdmin: isAdminUID0}, false, nil)
	for _, peer := range []string{"u1000", "c42"} {
		held := []net.Conn{keepAlive(t, s.path, peer), keepAlive(t, s.path, peer), keepAlive(t, s.path, peer)}
		for range 4 {
			wantRefused(t, dialAs(t, s.path, peer), http.StatusTooManyRequests, CodeTooManyConnections)
		}
		// The ones it holds still work.
		for _, c := range held {
			if resp, _ := getStatus(t, c); resp.StatusCode != http.StatusOK {
				t.Fatalf("%s: a held connection: status %d", peer, resp.StatusCode)
			}
		}
		// Hanging up one makes room for another at once.
		held[0].Close()
		keepAlive(t, s.path, peer)
	}
	// Others are served, and admins beyond the per-caller limit.
	keepAlive(t, s.path, "u2000")
	keepAlive(t, s.path, "c43")
	for range 6 {
		keepAlive(t, s.path, "u0")
	}
	// One log line per caller for its four refusals.
	logs := s.logs.String()
	for _, caller := range []string{"unix uid=1000", "vsock cid=42"} {
		if n := strings.Count(logs, `caller="`+caller); n != 1 {
			t.Errorf("%d log lines about %s, want 1:\n%s", n, caller, logs)
		}
	}
	if !strings.Contains(logs, `msg="refusing connections: the caller has as many open as it may" caller="unix uid=1000`) || !strings.Contains(logs, "open=3 max=3 refused_since_last_line=1") {
		t.Errorf("log:\n%s", logs)
	}
	// After the interval, the next line counts what was refused since.
	s.fl.mu.Lock()
	s.fl.logs[peerKey{channel: daemon.ChannelUnix, uid: 1000}].last = time.Now().Add(-refusalLogInterval)
	s.fl.mu.Unlock()
	wantRefused(t, dialAs(t, s.path, "u1000"), http.StatusTooManyRequests, CodeTooManyConnections)
	if logs := s.logs.String(); !strings.Contains(logs, "refused_since_last_line=4") {
		t.Errorf("log after the interval:\n%s", logs)
	}
}

// activeConn opens a connection as peer whose request the server is busy
// reading (a body that never comes): it serves something and is never
// closed to make room.
func activeConn(t *testing.T, path, peer string) net.Conn {
	t.Helper()
	c := dialAs(t, path, peer)
	io.WriteString(c, "POST /v1/projects HTTP/1.1\r\nHost: coffer\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
	return c
}

// TestFairShareAdminReserve: when the other callers hold every slot they
// may, a new caller is refused 503, an admin still gets in, and with every
// slot held (the reserve too) a new connection waits for one to be freed.
func TestFairShareAdminReserve(t *testing.T) {
	// 8 slots: 2 kept for admins, at most 3 per caller.
	s := newFairServer(t, SocketOptions{MaxConns: 8, MaxConnsPerPeer: 3, IsAdmin: isAdminUID0}, false, nil)
	if s.fl.reserve != 2 {
		t.Fatalf("reserve %d, want 2 (a quarter of 8)", s.fl.reserve)
	}
	var busy []net.Conn
	for _, peer := range []string{"u1000", "u1000", "u1000", "u1001", "u1001", "u1001"} {
		busy = append(busy, activeConn(t, s.path, peer))
	}
	waitFor(t, "six active connections", func() bool { return s.open() == 6 })
	wantRefused(t, dialAs(t, s.path, "u1002"), http.StatusServiceUnavailable, daemon.CodeUnavailable)
	root1 := keepAlive(t, s.path, "u0")
	keepAlive(t, s.path, "u0")
	// Every slot held: the next connection waits in the backlog.
	late := dialAs(t, s.path, "u0")
	io.WriteString(late, "GET /v1/status HTTP/1.1\r\nHost: coffer\r\n\r\n")
	answered := make(chan int, 1)
	go func() {
		resp, err := http.ReadResponse(bufio.NewReader(late), nil)
		if err != nil {
			answered <- -1
			return
		}
		answered <- resp.StatusCode
	}()
	select {
	case st := <-answered:
		t.Fatalf("answered %d with every slot held", st)
	case <-time.After(300 * time.Millisecond):
	}
	if n := s.open(); n != 8 {
		t.Fatalf("%d connections counted, want 8", n)
	}
	// A held connection ends: the waiting one is served.
	busy[0].Close()
	select {
	case st := <-answered:
		if st != http.StatusOK {
			t.Fatalf("the waiting connection: status %d", st)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the waiting connection was not served after a slot was freed")
	}
	if resp, _ := getStatus(t, root1); resp.StatusCode != http.StatusOK {
		t.Fatalf("root's first connection: status %d", resp.StatusCode)
	}
}

// TestFairShareReapsIdleWhenBusy: while more than half the slots are held,
// connections idle for the busy idle timeout are closed, the biggest
// holder's first, until the socket is no longer busy; when it is not busy,
// idle connections stay.
func TestFairShareReapsIdleWhenBusy(t *testing.T) {
	s := newFairServer(t, SocketOptions{MaxConns: 8, MaxConnsPerPeer: 8}, false, func(l *fairListener) {
		l.busyIdle = 300 * time.Millisecond
		l.reapEvery = 50 * time.Millisecond
	})
	big := []net.Conn{s.keepIdle(t, 1000), s.keepIdle(t, 1000), s.keepIdle(t, 1000), s.keepIdle(t, 1000)}
	small := s.keepIdle(t, 2000)
	// 5 of 8 is busy: one goes, uid 1000's oldest.
	if !closedByServer(big[0]) {
		t.Fatal("the biggest holder's oldest idle connection was not closed")
	}
	time.Sleep(600 * time.Millisecond) // twice the busy idle timeout
	for i, c := range big[1:] {
		if !stillOpen(c) {
			t.Errorf("uid 1000's connection %d was closed, though 4 of 8 is not busy", i+1)
		}
	}
	if !stillOpen(small) {
		t.Error("the small holder's idle connection was closed")
	}
	if n := s.open(); n != 4 {
		t.Errorf("%d open, want 4", n)
	}
}

// TestFairShareMakesRoomFromTheBiggestHolder: when the slots a caller may
// take are all held, the longest idle connection of the caller that holds
// the most is closed for it — but not to take from a caller that holds
// barely more than it.
func TestFairShareMakesRoomFromTheBiggestHolder(t *testing.T) {
	// 8 slots, 2 for admins: 6 for the others, at most 4 each.
	s := newFairServer(t, SocketOptions{MaxConns: 8, MaxConnsPerPeer: 4, IsAdmin: isAdminUID0}, false, nil)
	var big []net.Conn
	for range 4 {
		big = append(big, s.keepIdle(t, 1000))
	}
	mid := []net.Conn{s.keepIdle(t, 1001), s.keepIdle(t, 1001)}
	start := time.Now()
	keepAlive(t, s.path, "u1002")
	if d := time.Since(start); d > time.Second {
		t.Errorf("the new caller waited %s", d)
	}
	if !closedByServer(big[0]) {
		t.Fatal("uid 1000's oldest idle connection is still open")
	}
	for _, c := range append(big[1:], mid...) {
		if !stillOpen(c) {
			t.Fatal("another connection was closed")
		}
	}
	// uid 1001 holds 2; the most anyone holds is 3: no room for it.
	wantRefused(t, dialAs(t, s.path, "u1001"), http.StatusServiceUnavailable, daemon.CodeUnavailable)
	// An admin takes the reserve without closing anything.
	keepAlive(t, s.path, "u0")
	for _, c := range append(big[1:], mid...) {
		if !stillOpen(c) {
			t.Fatal("a connection was closed for an admin who had the reserve")
		}
	}
}

// TestFairShareFloodIsBounded: a flood of connections that never send
// anything, from many callers, costs at most the socket's slots plus the
// lingering refusals, and a new caller and an admin are served during it.
func TestFairShareFloodIsBounded(t *testing.T) {
	const total, refusing = 16, 4
	s := newFairServer(t, SocketOptions{MaxConns: total, MaxConnsPerPeer: 4, IsAdmin: isAdminUID0}, true, func(l *fairListener) {
		l.maxRefusing = refusing
		l.stallAge = 100 * time.Millisecond
	})
	// 10 callers open 60 connections each and keep them: silent, or with
	// half a request line.
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		conns []net.Conn
	)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for w := range 10 {
		wg.Go(func() {
			for i := range 60 {
				c, err := net.DialUnix("unix", &net.UnixAddr{Name: fmt.Sprintf("@fs-%d-%d-u%d", os.Getpid(), fakeAddrs.Add(1), 1000+w), Net: "unix"}, &net.UnixAddr{Name: s.path, Net: "unix"})
				if err != nil {
					t.Errorf("flood: %v", err)
					return
				}
				if i%2 == 1 {
					io.WriteString(c, "GET /v1/sta")
				}
				mu.Lock()
				conns = append(conns, c)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	waitFor(t, "the flood to be accepted", func() bool {
		_, _, accepted := s.inner.stats()
		return accepted == 600
	})
	// The flood's connections have sent no whole request for longer than
	// a real client takes: they serve nothing.
	time.Sleep(2 * s.fl.stallAge)
	for _, peer := range []string{"u3000", "u0"} {
		start := time.Now()
		keepAlive(t, s.path, peer)
		if d := time.Since(start); d > time.Second {
			t.Errorf("%s waited %s during the flood", peer, d)
		}
	}
	_, maxOpen, accepted := s.inner.stats()
	if maxOpen > total+refusing+1 {
		t.Errorf("%d connections open at once, want at most %d (the slots, the lingering refusals and one being refused)", maxOpen, total+refusing+1)
	}
	if accepted != 602 {
		t.Errorf("%d connections accepted, want the 600 of the flood and 2", accepted)
	}
	if n := s.open(); n > total {
		t.Errorf("%d connections counted, limit %d", n, total)
	}
}

// TestHybridVsockPerVMShare: a VM is held to its share on its own socket
// (429 beyond it); another VM is served; admins do not exist there.
func TestHybridVsockPerVMShare(t *testing.T) {
	dir := hybridDir(t)
	a := HybridVM{Name: "vm-a", UDSPath: filepath.Join(dir, "a"), VMMUID: uint32(os.Getuid())}
	b := HybridVM{Name: "vm-b", UDSPath: filepath.Join(dir, "b"), VMMUID: uint32(os.Getuid())}
	l, err := ListenHybridVsock([]HybridVM{a, b}, hybridPort, SocketOptions{GID: -1, MaxConns: 64, MaxConnsPerPeer: 2, IsAdmin: func(uint32, uint32) bool { return true },
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, &fakeBackend{}, l)
	dialVM := func(vm HybridVM) net.Conn {
		c, err := net.Dial("unix", HybridSocketPath(vm, hybridPort))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	for range 2 {
		if resp, _ := getStatus(t, dialVM(a)); resp.StatusCode != http.StatusOK {
			t.Fatalf("vm-a: status %d", resp.StatusCode)
		}
	}
	wantRefused(t, dialVM(a), http.StatusTooManyRequests, CodeTooManyConnections)
	if _, err := vmmClient(b).Status(context.Background()); err != nil {
		t.Fatalf("vm-b: %v", err)
	}
}
