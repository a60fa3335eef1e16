package systemd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"
)

// Notifier sends sd_notify(3) messages to the service manager over
// $NOTIFY_SOCKET. Every method is a no-op when the variable is unset (not
// started by systemd, or a unit without Type=notify), so the daemon calls them
// unconditionally. A failed send is logged and otherwise ignored: systemd
// notices a missing READY=1 or WATCHDOG=1 by itself.
//
// The zero Notifier does nothing; use NewNotifier. Methods are safe for
// concurrent use.
type Notifier struct {
	socket   string        // $NOTIFY_SOCKET at construction; "" = off
	watchdog time.Duration // half of $WATCHDOG_USEC; 0 = off
	log      *slog.Logger

	mu     sync.Mutex
	status string // the last STATUS= set by Ready or Status, restored after a watchdog failure clears
}

// NewNotifier reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID. The
// variables are left in place. log receives send errors; nil discards them.
func NewNotifier(log *slog.Logger) *Notifier {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	n := &Notifier{socket: os.Getenv("NOTIFY_SOCKET"), log: log}
	// SdWatchdogEnabled returns 0 when WATCHDOG_PID names another process
	// (the variables leaked from a parent) and an error when they are
	// malformed: both mean no watchdog for us.
	if d, err := daemon.SdWatchdogEnabled(false); err != nil {
		log.Warn("ignoring the systemd watchdog settings", "err", err)
	} else if n.socket != "" {
		n.watchdog = d / 2
	}
	return n
}

// Enabled reports whether notifications go anywhere.
func (n *Notifier) Enabled() bool { return n != nil && n.socket != "" }

// Ready tells systemd that start-up (or a reload) is complete, with a
// human-readable status line (may be empty).
func (n *Notifier) Ready(status string) {
	msg := daemon.SdNotifyReady
	if status != "" {
		n.setStatus(status)
		msg += "\nSTATUS=" + oneLine(status)
	}
	n.send(msg)
}

// Status sets the one-line status shown by systemctl status.
func (n *Notifier) Status(s string) {
	n.setStatus(s)
	n.send("STATUS=" + oneLine(s))
}

// Reloading tells systemd that the daemon is re-reading its configuration;
// call Ready when done. The message carries MONOTONIC_USEC=, which systemd
// 253 and later require to match a reload to its request (Type=notify-reload)
// and older versions ignore.
func (n *Notifier) Reloading() {
	n.send(daemon.SdNotifyReloading + "\n" + strings.TrimSuffix(daemon.SdNotifyMonotonicUsec(), "\n"))
}

// Stopping tells systemd that the daemon is shutting down (draining).
func (n *Notifier) Stopping() {
	n.send(daemon.SdNotifyStopping)
}

// Watchdog sends one keep-alive ping (WATCHDOG=1).
func (n *Notifier) Watchdog() {
	n.send(daemon.SdNotifyWatchdog)
}

// WatchdogInterval is how often to ping: half of $WATCHDOG_USEC, as
// sd_watchdog_enabled(3) advises. It is 0 when the watchdog is off, when
// $WATCHDOG_PID names another process, or without $NOTIFY_SOCKET.
func (n *Notifier) WatchdogInterval() time.Duration {
	if n == nil {
		return 0
	}
	return n.watchdog
}

// RunWatchdog pings the watchdog every WatchdogInterval for as long as
// healthy returns nil, until ctx is done. healthy gets a context that expires
// after one interval; a check that fails (or hangs) means no ping, so systemd
// restarts a daemon whose HSM or store is wedged once WatchdogSec= passes
// without one. An error with a Degraded() bool method returning true (the
// daemon's DegradedError) is a failure the daemon repairs by itself (a lost HSM token being reconnected): pings go on, since a restart
// would not bring the token back, and STATUS= says what is degraded. While
// unhealthy or degraded, STATUS= shows the reason; when the check passes
// again, the previous status line is restored.
//
// It returns at once when the watchdog is off.
func (n *Notifier) RunWatchdog(ctx context.Context, healthy func(context.Context) error) {
	interval := n.WatchdogInterval()
	if interval <= 0 {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	var failing string // the reason last shown, "" while healthy
	for {
		cctx, cancel := context.WithTimeout(ctx, interval)
		err := healthy(cctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err == nil && failing != "":
			failing = ""
			n.log.Info("health check passes again; resuming watchdog pings")
			n.mu.Lock()
			last := n.status
			n.mu.Unlock()
			n.send(daemon.SdNotifyWatchdog + "\nSTATUS=" + oneLine(last))
		case err == nil:
			n.Watchdog()
		case isDegraded(err):
			reason := "degraded, recovering: " + err.Error()
			if reason == failing {
				n.Watchdog()
				break
			}
			failing = reason
			n.log.Warn("health check: degraded; still pinging the systemd watchdog while the daemon recovers", "err", err)
			n.send(daemon.SdNotifyWatchdog + "\nSTATUS=" + oneLine(reason))
		default:
			reason := "unhealthy, not pinging the watchdog: " + err.Error()
			if reason != failing {
				failing = reason
				n.log.Error("health check failed; not pinging the systemd watchdog", "err", err)
				n.send("STATUS=" + oneLine(reason))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// isDegraded reports whether err says the daemon is repairing the failure
// by itself.
func isDegraded(err error) bool {
	var d interface{ Degraded() bool }
	return errors.As(err, &d) && d.Degraded()
}

func (n *Notifier) setStatus(s string) {
	if n == nil {
		return
	}
	n.mu.Lock()
	n.status = s
	n.mu.Unlock()
}

// send writes one datagram to $NOTIFY_SOCKET. A path or an abstract name
// ("@...") are supported, like sd_notify(3) does for AF_UNIX.
func (n *Notifier) send(msg string) {
	if !n.Enabled() {
		return
	}
	if err := n.write(msg); err != nil {
		n.log.Warn("sd_notify failed", "socket", n.socket, "err", err)
	}
}

func (n *Notifier) write(msg string) error {
	if !strings.HasPrefix(n.socket, "/") && !strings.HasPrefix(n.socket, "@") {
		return fmt.Errorf("unsupported NOTIFY_SOCKET %q: want a path or an abstract @name", n.socket)
	}
	c, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: n.socket, Net: "unixgram"})
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.Write([]byte(msg))
	return err
}

// oneLine keeps a status to one line: a newline would start a new
// assignment in the notification.
func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' {
			return ' '
		}
		return r
	}, s)
}
