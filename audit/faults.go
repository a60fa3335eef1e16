package audit

import (
	"log/slog"
	"time"
)

// faultLogEvery is how often a fault that goes on is logged again (with
// the number of failures since the last line).
const faultLogEvery = time.Minute

// fault is the state of one thing that can fail repeatedly (signing a
// checkpoint, writing or syncing the file): when to try again, and when
// to say so. Automatic tries wait for ready; a caller who asks (Flush,
// Checkpoint, Append, Close) tries at once. Only the writer goroutine
// (or, for the archiver's own faults, the archiver) uses a fault.
type fault struct {
	what     string        // "sign a checkpoint"
	min, max time.Duration // the first and the longest wait between tries

	failing  bool
	wait     time.Duration // the current wait
	next     time.Time     // no automatic try before
	failures uint64        // since the last line logged
	loggedAt time.Time     // the last line logged
	said     bool          // a line was logged about this run of failures
}

// ready reports whether an automatic try may be made now.
func (f *fault) ready(now time.Time) bool { return !f.failing || !now.Before(f.next) }

// fail counts a failure, doubles the wait and logs at most once per
// faultLogEvery.
func (f *fault) fail(log *slog.Logger, now time.Time, err error, attrs ...any) {
	f.failures++
	if !f.failing {
		f.failing, f.wait = true, f.min
	} else {
		f.wait = min(2*f.wait, f.max)
	}
	f.next = now.Add(f.wait)
	if !f.loggedAt.IsZero() && now.Sub(f.loggedAt) < faultLogEvery {
		return
	}
	log.Error("audit: cannot "+f.what,
		append(attrs, "err", err, "failures", f.failures, "retry_in", f.wait)...)
	f.failures, f.loggedAt, f.said = 0, now, true
}

// ok ends a run of failures; it is logged when the failures were.
func (f *fault) ok(log *slog.Logger) {
	if !f.failing {
		return
	}
	if f.said {
		log.Info("audit: "+f.what+": works again", "failures_since_last_line", f.failures)
		f.failures = 0
	}
	f.failing, f.said = false, false
}
