// Package unitctl restarts, reloads and try-restarts systemd units through
// the manager's D-Bus API (org.freedesktop.systemd1 on the system bus) and
// waits for each job's result. coffer uses it to carry out a unit binding's
// on-rotate action once a secret rotation has committed.
//
// It is its own package so that the domain depends on a one-method
// interface (daemon.UnitController) and its tests on a fake, not on a bus.
// A coffer that runs as its own user needs the manager's permission: the
// package ships a polkit rule for that (packaging/polkit/coffer.rules).
package unitctl

import (
	"context"
	"errors"
	"fmt"
	"sync"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
	"github.com/godbus/dbus/v5"
)

// Actions a caller may ask for.
const (
	Restart    = "restart"
	Reload     = "reload"
	TryRestart = "try-restart"
)

// JobError is a job that systemd ran but that did not end "done": Result
// is systemd's word for it ("failed", "canceled", "timeout",
// "dependency", "skipped", ...).
type JobError struct {
	Unit, Action, Result string
}

func (e *JobError) Error() string {
	return fmt.Sprintf("%s %s: job %s", e.Action, e.Unit, e.Result)
}

// UnitFailure is "job <result>": a fixed phrase for the audit log.
func (e *JobError) UnitFailure() string { return "job " + e.Result }

// Controller talks to the system manager. It connects on first use and
// again after the bus connection is lost. Safe for concurrent use.
type Controller struct {
	// Dial opens the connection; nil means the system bus.
	Dial func(ctx context.Context) (*sddbus.Conn, error)

	mu   sync.Mutex
	conn *sddbus.Conn
}

// New returns a Controller on the system bus.
func New() *Controller { return &Controller{} }

func (c *Controller) connect(ctx context.Context) (*sddbus.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil && c.conn.Connected() {
		return c.conn, nil
	}
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
	dial := c.Dial
	if dial == nil {
		dial = sddbus.NewSystemConnectionContext
	}
	conn, err := dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("connect to the system bus: %w", err)
	}
	c.conn = conn
	return conn, nil
}

// Act queues action on unit (mode "replace") and waits, until ctx ends,
// for its job's result. nil means the job ended "done"; a *JobError a job
// that ended otherwise; any other error that no job ran (no bus, access
// denied, no such unit) or that ctx ended first.
func (c *Controller) Act(ctx context.Context, unit, action string) error {
	conn, err := c.connect(ctx)
	if err != nil {
		return err
	}
	var call func(context.Context, string, string, chan<- string) (int, error)
	switch action {
	case Restart:
		call = conn.RestartUnitContext
	case Reload:
		call = conn.ReloadUnitContext
	case TryRestart:
		call = conn.TryRestartUnitContext
	default:
		return fmt.Errorf("unknown unit action %q", action)
	}
	done := make(chan string, 1)
	if _, err := call(ctx, unit, "replace", done); err != nil {
		return busError(err)
	}
	select {
	case res := <-done:
		if res != "done" {
			return &JobError{Unit: unit, Action: action, Result: res}
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%s %s: no job result: %w", action, unit, ctx.Err())
	}
}

// busError keeps the D-Bus error's name and message (systemd's, such as
// org.freedesktop.DBus.Error.AccessDenied or
// org.freedesktop.systemd1.NoSuchUnit).
func busError(err error) error {
	var de dbus.Error
	if errors.As(err, &de) {
		return &BusError{Name: de.Name, Err: err}
	}
	return err
}

// BusError is an error reply from the manager; Name is its D-Bus error
// name, a fixed string the audit log may keep.
type BusError struct {
	Name string
	Err  error
}

func (e *BusError) Error() string { return e.Err.Error() }
func (e *BusError) Unwrap() error { return e.Err }

// UnitFailure is the D-Bus error name: a fixed string for the audit log.
func (e *BusError) UnitFailure() string { return e.Name }

// Close closes the bus connection, if any.
func (c *Controller) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.conn != nil {
		c.conn.Close()
		c.conn = nil
	}
}
