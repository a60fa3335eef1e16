package unixapi

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// waitingBackend's watches wait their whole wait (or until their context
// ends) and find nothing new.
type waitingBackend struct {
	fakeBackend
	cancelled chan struct{}
}

func (b *waitingBackend) WatchDelivery(ctx context.Context, _ daemon.Principal, _ daemon.DeliveryRequest, _ int, wait time.Duration) (daemon.Delivery, error) {
	select {
	case <-time.After(wait):
		return daemon.Delivery{}, daemon.ErrNotModified
	case <-ctx.Done():
		close(b.cancelled)
		return daemon.Delivery{}, ctx.Err()
	}
}

// A watch outlives the server's read and write timeouts: its answer is
// the 304 at the end of its wait, not a cancelled request.
func TestWatchOutlivesServerTimeouts(t *testing.T) {
	b := &waitingBackend{cancelled: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "coffer.sock")
	l, err := ListenUnix(path, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	srv.SetTimeouts(Timeouts{Read: 200 * time.Millisecond})
	srv.httpSrv.WriteTimeout = 300 * time.Millisecond
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	c := client.NewClient(path)
	t0 := time.Now()
	w, err := c.WatchDelivery(context.Background(), "x", "", "", 1, time.Second)
	if err != nil || !w.NotModified || time.Since(t0) < time.Second {
		t.Fatalf("watch: %+v %v after %v, want 304 after 1s", w, err, time.Since(t0))
	}
	select {
	case <-b.cancelled:
		t.Fatal("the server's read timeout cancelled the watch")
	default:
	}
}

// Shutdown ends waiting watches at once, with a 304, so that the drain
// does not wait for them.
func TestShutdownEndsWatches(t *testing.T) {
	b := &waitingBackend{cancelled: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "coffer.sock")
	l, err := ListenUnix(path, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.Serve(l)
	c := client.NewClient(path)
	type res struct {
		w   client.Watched
		err error
	}
	ch := make(chan res, 1)
	go func() {
		w, err := c.WatchDelivery(context.Background(), "x", "", "", 1, time.Minute)
		ch <- res{w, err}
	}()
	time.Sleep(200 * time.Millisecond)
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("shutdown: %v", err)
	}
	r := <-ch
	if r.err != nil || !r.w.NotModified || time.Since(t0) > 2*time.Second {
		t.Fatalf("watch at shutdown: %+v %v after %v", r.w, r.err, time.Since(t0))
	}
}

func TestParseWatch(t *testing.T) {
	for _, c := range []struct {
		wait, after string
		d           time.Duration
		n           int
		code        string
	}{
		{"30s", "3", 30 * time.Second, 3, ""},
		{"", "", 0, 0, ""},
		{"5m", "0", 5 * time.Minute, 0, ""},
		{"5m1s", "0", 0, 0, daemon.CodeInvalidWait},
		{"-1s", "0", 0, 0, daemon.CodeInvalidWait},
		{"30", "0", 0, 0, daemon.CodeInvalidWait},
		{"1s", "-1", 0, 0, daemon.CodeInvalidAfterVersion},
		{"1s", "+1", 0, 0, daemon.CodeInvalidAfterVersion},
		{"1s", "1.5", 0, 0, daemon.CodeInvalidAfterVersion},
		{"1s", "99999999999", 0, 0, daemon.CodeInvalidAfterVersion},
	} {
		d, n, err := ParseWatch(c.wait, c.after)
		if daemon.CodeOf(err) != c.code && !(c.code == "" && err == nil) {
			t.Errorf("ParseWatch(%q, %q): %v, want %s", c.wait, c.after, err, c.code)
		}
		if c.code == "" && (d != c.d || n != c.n) {
			t.Errorf("ParseWatch(%q, %q) = %v, %d", c.wait, c.after, d, n)
		}
	}
}

// A client that hangs up during a watch ends it, and leaves no error line
// in the daemon log.
func TestWatchClientGone(t *testing.T) {
	b := &waitingBackend{cancelled: make(chan struct{})}
	path := filepath.Join(t.TempDir(), "coffer.sock")
	l, err := ListenUnix(path, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	var logs lockedLog
	srv := NewServer(b, slog.New(slog.NewTextHandler(&logs, nil)))
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := client.NewClient(path).WatchDelivery(ctx, "x", "", "", 1, time.Minute); err == nil {
		t.Fatal("no error from a cancelled watch")
	}
	select {
	case <-b.cancelled:
	case <-time.After(5 * time.Second):
		t.Fatal("the watch went on after its client left")
	}
	time.Sleep(100 * time.Millisecond)
	if s := logs.String(); s != "" {
		t.Fatalf("daemon log: %s", s)
	}
}

type lockedLog struct {
	mu sync.Mutex
	b  []byte
}

func (l *lockedLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b = append(l.b, p...)
	return len(p), nil
}

func (l *lockedLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return string(l.b)
}

// heldBackend's watches wait until their context ends.
type heldBackend struct {
	fakeBackend
	got chan struct{} // one send per watch that began
}

func (b *heldBackend) WatchDelivery(ctx context.Context, _ daemon.Principal, _ daemon.DeliveryRequest, _ int, _ time.Duration) (daemon.Delivery, error) {
	b.got <- struct{}{}
	<-ctx.Done()
	return daemon.Delivery{}, ctx.Err()
}

// One caller's watches take at most half of the per-caller connection
// limit the daemon was started with (--max-connections-per-peer), not a
// fixed count that a lower limit would let them fill.
func TestWatchesTakeHalfThePerPeerLimit(t *testing.T) {
	for _, tc := range []struct{ perPeer, want int }{{6, 3}, {1, 1}, {0, MaxWatchesPerPeer}} {
		b := &heldBackend{got: make(chan struct{}, 64)}
		path := filepath.Join(t.TempDir(), "coffer.sock")
		l, err := ListenUnix(path, SocketOptions{GID: -1})
		if err != nil {
			t.Fatal(err)
		}
		srv := NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
		srv.SetMaxConnsPerPeer(tc.perPeer)
		go srv.Serve(l)
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		for range tc.want {
			wg.Add(1)
			go func() {
				defer wg.Done()
				client.NewClient(path).WatchDelivery(ctx, "x", "", "", 1, time.Minute)
			}()
		}
		for i := range tc.want {
			select {
			case <-b.got:
			case <-time.After(10 * time.Second):
				t.Fatalf("per-peer %d: watch %d of %d did not begin", tc.perPeer, i+1, tc.want)
			}
		}
		over, overDone := context.WithTimeout(context.Background(), 5*time.Second) // a watch let in would wait
		_, err = client.NewClient(path).WatchDelivery(over, "x", "", "", 1, time.Minute)
		overDone()
		var ae *client.APIError
		if !errors.As(err, &ae) || ae.Status != 429 || ae.Code != CodeTooManyWatches {
			t.Errorf("per-peer %d: watch %d: %v, want 429 %s", tc.perPeer, tc.want+1, err, CodeTooManyWatches)
		}
		cancel()
		wg.Wait()
		srv.Shutdown(context.Background())
	}
}
