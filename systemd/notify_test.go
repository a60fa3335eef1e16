package systemd

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// notifySocket listens on a datagram socket like systemd's NOTIFY_SOCKET,
// points $NOTIFY_SOCKET at it and returns a function that waits for the next
// datagram.
func notifySocket(t *testing.T) (next func(timeout time.Duration) (string, bool)) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return func(timeout time.Duration) (string, bool) {
		buf := make([]byte, 4096)
		c.SetReadDeadline(time.Now().Add(timeout))
		n, err := c.Read(buf)
		if err != nil {
			return "", false
		}
		return string(buf[:n]), true
	}
}

func TestNotifierMessages(t *testing.T) {
	next := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "")
	n := NewNotifier(nil)
	if !n.Enabled() {
		t.Fatal("Enabled() = false with NOTIFY_SOCKET set")
	}
	for _, tc := range []struct {
		name string
		call func()
		want string // "MONOTONIC_USEC=" is checked for a number
	}{
		{"ready", func() { n.Ready("serving on /run/coffer/coffer.sock") }, "READY=1\nSTATUS=serving on /run/coffer/coffer.sock"},
		{"ready without status", func() { n.Ready("") }, "READY=1"},
		{"status", func() { n.Status("opening the HSM") }, "STATUS=opening the HSM"},
		{"status is one line", func() { n.Status("a\nREADY=1\r") }, "STATUS=a READY=1 "},
		{"reloading", n.Reloading, "RELOADING=1\nMONOTONIC_USEC="},
		{"stopping", n.Stopping, "STOPPING=1"},
		{"watchdog", n.Watchdog, "WATCHDOG=1"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.call()
			got, ok := next(5 * time.Second)
			if !ok {
				t.Fatal("no datagram")
			}
			if want, ok := strings.CutSuffix(tc.want, "MONOTONIC_USEC="); ok {
				usec, found := strings.CutPrefix(got, tc.want)
				if !found || !strings.HasPrefix(got, want) {
					t.Fatalf("got %q, want %q<usec>", got, tc.want)
				}
				if v, err := strconv.ParseUint(usec, 10, 64); err != nil || v == 0 {
					t.Fatalf("MONOTONIC_USEC=%q is not a positive number", usec)
				}
				return
			}
			if got != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNotifierOff(t *testing.T) {
	t.Setenv("NOTIFY_SOCKET", "")
	t.Setenv("WATCHDOG_USEC", "1000000")
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	for _, n := range []*Notifier{NewNotifier(nil), {}, nil} {
		if n.Enabled() || n.WatchdogInterval() != 0 {
			t.Fatalf("%+v: enabled without NOTIFY_SOCKET", n)
		}
		// None of these may panic or block.
		n.Ready("x")
		n.Status("x")
		n.Reloading()
		n.Stopping()
		n.Watchdog()
		n.RunWatchdog(context.Background(), func(context.Context) error { return nil })
	}
}

func TestNotifierBadSocket(t *testing.T) {
	for _, sock := range []string{filepath.Join(t.TempDir(), "missing"), "vsock:2:1234"} {
		t.Setenv("NOTIFY_SOCKET", sock)
		n := NewNotifier(nil)
		n.Ready("x") // logged and ignored
		if err := n.write("READY=1"); err == nil {
			t.Fatalf("%s: write succeeded", sock)
		}
	}
}

func TestWatchdogInterval(t *testing.T) {
	self := strconv.Itoa(os.Getpid())
	for _, tc := range []struct {
		name      string
		notify    bool
		usec, pid string
		want      time.Duration
	}{
		{"half of WATCHDOG_USEC", true, "30000000", self, 15 * time.Second},
		{"no WATCHDOG_PID", true, "2000000", "", time.Second},
		{"another process", true, "2000000", "1", 0},
		{"off", true, "", "", 0},
		{"malformed", true, "soon", self, 0},
		{"negative", true, "-5", self, 0},
		{"no NOTIFY_SOCKET", false, "2000000", self, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.notify {
				notifySocket(t)
			} else {
				t.Setenv("NOTIFY_SOCKET", "")
			}
			t.Setenv("WATCHDOG_USEC", tc.usec)
			t.Setenv("WATCHDOG_PID", tc.pid)
			if got := NewNotifier(nil).WatchdogInterval(); got != tc.want {
				t.Fatalf("WatchdogInterval() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestRunWatchdog(t *testing.T) {
	next := notifySocket(t)
	t.Setenv("WATCHDOG_USEC", "40000") // ping every 20ms
	t.Setenv("WATCHDOG_PID", strconv.Itoa(os.Getpid()))
	n := NewNotifier(nil)
	if got := n.WatchdogInterval(); got != 20*time.Millisecond {
		t.Fatalf("WatchdogInterval() = %v", got)
	}
	n.Ready("serving")
	if got, _ := next(5 * time.Second); got != "READY=1\nSTATUS=serving" {
		t.Fatalf("got %q", got)
	}

	var (
		mu     sync.Mutex
		health error
		checks atomic.Int32
	)
	setHealth := func(err error) { mu.Lock(); health = err; mu.Unlock() }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.RunWatchdog(ctx, func(ctx context.Context) error {
			checks.Add(1)
			if _, ok := ctx.Deadline(); !ok {
				t.Error("health check context has no deadline")
			}
			mu.Lock()
			defer mu.Unlock()
			return health
		})
	}()

	// Healthy: pings arrive.
	for i := 0; i < 3; i++ {
		if got, ok := next(5 * time.Second); got != "WATCHDOG=1" {
			t.Fatalf("ping %d: got %q (%v)", i, got, ok)
		}
	}

	// Unhealthy: one STATUS= with the reason, then silence.
	setHealth(errors.New("hsm: wedged\nsecond line"))
	for {
		got, ok := next(5 * time.Second)
		if !ok {
			t.Fatal("no status after the health check failed")
		}
		if got == "WATCHDOG=1" { // sent before the change was seen
			continue
		}
		if want := "STATUS=unhealthy, not pinging the watchdog: hsm: wedged second line"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		break
	}
	before := checks.Load()
	if got, ok := next(200 * time.Millisecond); ok { // ten intervals
		t.Fatalf("sent %q while unhealthy", got)
	}
	if checks.Load()-before < 3 {
		t.Fatalf("only %d health checks in ten intervals", checks.Load()-before)
	}

	// Healthy again: pings resume and the status line comes back.
	setHealth(nil)
	if got, _ := next(5 * time.Second); got != "WATCHDOG=1\nSTATUS=serving" {
		t.Fatalf("got %q", got)
	}
	if got, _ := next(5 * time.Second); got != "WATCHDOG=1" {
		t.Fatalf("got %q", got)
	}

	// Degraded (the daemon repairs it itself): pings go on, and the first
	// one says why.
	setHealth(fmt.Errorf("HSM: %w", degradedErr{errors.New("token lost; reconnecting")}))
	for {
		got, ok := next(5 * time.Second)
		if !ok {
			t.Fatal("no ping after the check turned degraded")
		}
		if got == "WATCHDOG=1" { // sent before the change was seen
			continue
		}
		if want := "WATCHDOG=1\nSTATUS=degraded, recovering: HSM: token lost; reconnecting"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
		break
	}
	for i := 0; i < 3; i++ {
		if got, ok := next(5 * time.Second); got != "WATCHDOG=1" {
			t.Fatalf("ping %d while degraded: got %q (%v)", i, got, ok)
		}
	}
	setHealth(nil)
	if got, _ := next(5 * time.Second); got != "WATCHDOG=1\nSTATUS=serving" {
		t.Fatalf("after recovery: got %q", got)
	}

	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("RunWatchdog did not return after cancel")
	}
}

// degradedErr is what the daemon's DegradedError looks like to systemd.
type degradedErr struct{ error }

func (degradedErr) Degraded() bool { return true }

func (e degradedErr) Unwrap() error { return e.error }
