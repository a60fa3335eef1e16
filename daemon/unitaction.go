package daemon

import (
	"context"
	"errors"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/audit"
)

// What a unit binding asks of systemd when its secret is rotated
// (on_rotate). A unit holds its credentials in /run/credentials/<unit>/
// from the moment it starts: only a new start reads the new version.
const (
	// OnRotateTryRestart restarts the unit if it is running; a stopped
	// unit stays stopped (what package upgrades do to the services whose
	// files they replace). The default of a new unit binding.
	OnRotateTryRestart = "try-restart"
	// OnRotateRestart restarts the unit, starting it if it was stopped.
	OnRotateRestart = "restart"
	// OnRotateReload runs the unit's ExecReload= (for services that re-read
	// their credentials on SIGHUP; systemd 252 does not refresh
	// /run/credentials on reload, so the service must fetch the new value
	// itself, e.g. with coffer deliver).
	OnRotateReload = "reload"
	// OnRotateNone does nothing: the next start gets the new version.
	// What a binding made before on_rotate existed does.
	OnRotateNone = "none"

	// DefaultOnRotate is what a new unit binding does unless told.
	DefaultOnRotate = OnRotateTryRestart

	// DefaultUnitActionTimeout bounds how long a rotation waits for one
	// unit's job (a restart waits for the unit to be started again).
	DefaultUnitActionTimeout = 60 * time.Second
)

// ValidOnRotate reports whether s names an on-rotate action.
func ValidOnRotate(s string) bool {
	switch s {
	case OnRotateTryRestart, OnRotateRestart, OnRotateReload, OnRotateNone:
		return true
	}
	return false
}

// UnitController carries out an action ("restart", "reload",
// "try-restart") on a systemd unit and waits for its job's result: nil
// when it ended done. systemd/unitctl is the D-Bus one.
type UnitController interface {
	Act(ctx context.Context, unit, action string) error
}

// SetUnitController attaches what carries out unit bindings' on-rotate
// actions. Without one, rotations record the actions as failed ("no
// systemd connection").
func (s *Service) SetUnitController(u UnitController, timeout time.Duration) {
	s.units.Lock()
	defer s.units.Unlock()
	s.units.ctl = u
	s.units.timeout = timeout
}

type unitActions struct {
	sync.Mutex
	ctl     UnitController
	timeout time.Duration
}

// UnitAction is what one unit binding's on-rotate action came to.
type UnitAction struct {
	Unit      string
	BindingID string
	Action    string // restart, reload, try-restart
	// Result: "restarted", "reloaded", "try-restarted" (done), or
	// "failed" with Error saying why.
	Result string
	Error  string
}

// Results of a unit action.
const (
	UnitResultFailed = "failed"
)

func unitDone(action string) string {
	switch action {
	case OnRotateRestart:
		return "restarted"
	case OnRotateReload:
		return "reloaded"
	case OnRotateTryRestart:
		return "try-restarted"
	}
	return "done"
}

// unitJob is one action to carry out after a rotation commits.
type unitJob struct {
	binding, unit, action string
}

// runUnitActions carries out the on-rotate actions of a committed
// rotation, all at once, each bounded by the timeout, and records each
// result in the audit log (best effort: the rotation itself is already
// durable). It never fails: the rotation stands whatever the units do.
// Cancelling the request does not cut the actions short.
func (s *Service) runUnitActions(ctx context.Context, p Principal, secretID string, version int, jobs []unitJob) []UnitAction {
	if len(jobs) == 0 {
		return nil
	}
	s.units.Lock()
	ctl, timeout := s.units.ctl, s.units.timeout
	s.units.Unlock()
	if timeout <= 0 {
		timeout = DefaultUnitActionTimeout
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	out := make([]UnitAction, len(jobs))
	var wg sync.WaitGroup
	for i, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := errNoUnitController
			if ctl != nil {
				err = ctl.Act(ctx, j.unit, j.action)
			}
			out[i] = s.recordUnitAction(ctx, p, secretID, version, j, err)
		}()
	}
	wg.Wait()
	return out
}

var errNoUnitController = errors.New("no systemd connection")

func (s *Service) recordUnitAction(ctx context.Context, p Principal, secretID string, version int, j unitJob, err error) UnitAction {
	a := UnitAction{Unit: j.unit, BindingID: j.binding, Action: j.action, Result: unitDone(j.action)}
	e := audit.Event{Action: "unit." + j.action, Outcome: audit.OutcomeOK, Principal: auditPrincipal(p),
		Target: map[string]string{"secret": secretID, "version": strconv.Itoa(version), "binding": j.binding, "unit": j.unit}}
	level := slog.LevelInfo
	if err != nil {
		a.Result, a.Error = UnitResultFailed, err.Error()
		e.Outcome, e.Code, e.Reason = audit.OutcomeFailed, CodeUnitActionFailed, unitFailureReason(err)
		level = slog.LevelWarn
	}
	s.record(e)
	// Unit names are the host's configuration: logged. The secret by id.
	s.log.LogAttrs(ctx, level, "on-rotate unit action", slog.String("unit", j.unit), slog.String("action", j.action),
		slog.String("result", a.Result), slog.String("secret", secretID), slog.Int("version", version), slog.String("binding", j.binding),
		slog.String("error", a.Error))
	return a
}

// CodeUnitActionFailed is the audit code of an on-rotate action that did
// not end done.
const CodeUnitActionFailed = "unit_action_failed"

// unitFailureReason is a fixed phrase for the audit log: the job's result
// word or the D-Bus error name, never free text.
func unitFailureReason(err error) string {
	var named interface{ UnitFailure() string }
	switch {
	case errors.As(err, &named):
		return named.UnitFailure()
	case errors.Is(err, errNoUnitController):
		return "no systemd connection"
	case errors.Is(err, context.DeadlineExceeded):
		return "timed out waiting for the job"
	}
	return "systemd refused or could not be reached"
}
