package kv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/coffer-hsm/coffer/internal/diskspace"
)

// Storage faults. A store refuses writes, and keeps serving reads, in two
// cases:
//
//   - Full: its filesystem has less room than the reserve (see Reserve)
//     that Badger needs to flush its memtables and compact. Writes resume
//     by themselves once a free-space check finds room again.
//   - Failed: a commit failed (the filesystem went read-only, the disk
//     answers I/O errors, a write hit ENOSPC anyway). Badger keeps the
//     failed commit's entries in its memtable, and each further attempt
//     would add more until it rotates the memtable, fails to create the
//     next one and is left without any (every read then panics): so the
//     first failure stops all writes. The store probes its directory with
//     backoff and, once a file can be written and synced there, closes and
//     reopens Badger (which replays its write-ahead log) and resumes.
//
// A store whose reopening fails is Lost: nothing is served any more, and
// its owner should exit and let the service manager start it again.
var (
	// ErrFull: writes are refused until the store's filesystem has room
	// again (the error is a *FullError).
	ErrFull = errors.New("not enough free space for the store")
	// ErrFailed: writes are refused since a write to the store's files
	// failed (the error is a *FailedError).
	ErrFailed = errors.New("writing to the store failed")
)

// State is a store's health.
type State int

const (
	StateOK     State = iota
	StateFull         // writes refused: less room than the reserve
	StateFailed       // writes refused: a write failed; reopened once the directory is writable
	StateLost         // reopening failed: nothing is served
)

func (s State) String() string {
	switch s {
	case StateOK:
		return "ok"
	case StateFull:
		return "full"
	case StateFailed:
		return "failed"
	case StateLost:
		return "lost"
	}
	return fmt.Sprintf("State(%d)", int(s))
}

// Health is what Store.Health reports.
type Health struct {
	State State
	Since time.Time // when State began
	// Err says why writes are refused (nil in StateOK): a *FullError or a
	// *FailedError.
	Err error
	// Avail is the filesystem's room at the last check; Reserve what the
	// store keeps free there.
	Avail, Reserve int64
}

// FullError refuses a write while the filesystem is short of room.
type FullError struct {
	Dir            string
	Avail, Reserve int64
}

func (e *FullError) Error() string {
	return fmt.Sprintf("kv: store %s: its filesystem has %s free, less than the %s kept for the store's flushes and compactions: writes are refused until there is room",
		e.Dir, diskspace.Bytes(e.Avail), diskspace.Bytes(e.Reserve))
}

func (e *FullError) Is(target error) bool { return target == ErrFull }

// FailedError refuses a write after a write to the store's files failed.
type FailedError struct {
	Dir string
	Err error // the first failure
}

func (e *FailedError) Error() string {
	return fmt.Sprintf("kv: store %s: writes are refused since a write failed (%v)", e.Dir, e.Err)
}

func (e *FailedError) Is(target error) bool { return target == ErrFailed }
func (e *FailedError) Unwrap() error        { return e.Err }

// Timing of the watcher (watch.go); variables so that tests can shorten
// them.
var (
	spaceCheckEvery = time.Second      // statfs
	witnessEvery    = 2 * time.Second  // the witness file, when commits changed
	probeFirst      = time.Second      // first write probe after a failure
	probeMax        = 30 * time.Second // probes back off to this
	reopenTimeout   = time.Minute      // closing Badger for a reopen
)

// spaceOf is diskspace.Of; tests replace it to fill a filesystem.
var spaceOf = diskspace.Of

// Health reports the store's state.
func (s *Store) Health() Health {
	h := *s.health.Load()
	h.Reserve = s.reserve.Load()
	h.Avail = s.avail.Load()
	return h
}

// refuseWrites returns why writes are refused now, or nil.
func (s *Store) refuseWrites() error {
	return s.health.Load().Err
}

// setHealth moves the store to state with err and logs the change once.
// It returns whether the state changed.
func (s *Store) setHealth(state State, err error) bool {
	s.stateMu.Lock()
	defer s.stateMu.Unlock()
	cur := s.health.Load()
	if cur.State == state {
		if state == StateFull {
			// Same state, fresher numbers.
			s.health.Store(&Health{State: state, Since: cur.Since, Err: err})
		}
		return false
	}
	if cur.State == StateLost || (cur.State == StateFailed && state == StateFull) {
		return false // only a reopen leaves these
	}
	s.health.Store(&Health{State: state, Since: time.Now(), Err: err})
	switch state {
	case StateOK:
		s.log.Info("kv: the store accepts writes again", "dir", s.dir, "was", cur.State.String(), "refused_for", time.Since(cur.Since).Round(time.Second).String())
	case StateFull:
		s.log.Error("kv: the store's filesystem is short of room: refusing writes until there is room again (reads go on)",
			"dir", s.dir, "free", diskspace.Bytes(s.avail.Load()), "reserve", diskspace.Bytes(s.reserve.Load()))
	case StateFailed:
		s.log.Error("kv: a write to the store failed: refusing writes and retrying until the directory is writable again (reads go on)",
			"dir", s.dir, "err", errors.Unwrap(err))
	case StateLost:
		s.log.Error("kv: the store could not be reopened after a failed write: it serves nothing any more; restart once the filesystem is repaired",
			"dir", s.dir, "err", errors.Unwrap(err))
	}
	return true
}

// fail marks the store failed after a write error.
func (s *Store) fail(err error) {
	if s.setHealth(StateFailed, &FailedError{Dir: s.dir, Err: err}) {
		s.kickWatcher()
	}
}

func (s *Store) kickWatcher() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// Probe checks that the store's directory still takes a synced write, for
// a caller that saw a write fail next to it (the audit log, usually on the
// same filesystem): ext4 turned read-only after an error answers writes
// with EROFS while statfs still calls it writable (Linux's emergency
// read-only state), and the store would learn it only at its next
// commit, which a caller refusing changes for its own reason never makes.
// A failure marks the store failed, as a failed commit does (a full
// filesystem is left to the space check). It returns the probe's error.
func (s *Store) Probe() error {
	if s.dir == "" {
		return nil
	}
	switch s.health.Load().State {
	case StateFailed, StateLost:
		return s.health.Load().Err // the watcher probes already
	}
	err := probeWritable(s.dir)
	if err != nil && !diskspace.IsFull(err) {
		s.fail(fmt.Errorf("a probe after a failed write beside the store: %w", err))
	}
	return err
}

// probeWritable writes, syncs and removes a small file in dir.
func probeWritable(dir string) error {
	f, err := os.CreateTemp(dir, probePrefix+"*")
	if err != nil {
		return err
	}
	name := f.Name()
	_, err = f.Write([]byte{1})
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if rerr := os.Remove(name); err == nil {
		err = rerr
	}
	return err
}

// probePrefix names the files of probeWritable; Open removes any a crash
// left.
const probePrefix = ".probe-"

// logEvery rate-limits a log line repeated per event: the first is
// logged, then at most one per interval, which says how many it stands
// for. The interval doubles after each line that stood for more than one
// event, up to max, and starts over after a quiet interval.
type logEvery struct {
	min, max time.Duration
	interval time.Duration
	last     time.Time
	count    int
}

// tick records one event at now and reports whether to log it, with how
// many events (this one included) the line stands for.
func (l *logEvery) tick(now time.Time) (int, bool) {
	if l.interval == 0 {
		l.interval = l.min
	}
	l.count++
	if !l.last.IsZero() && now.Sub(l.last) < l.interval {
		return 0, false
	}
	n := l.count
	if !l.last.IsZero() && now.Sub(l.last) >= 2*l.interval && n == 1 {
		l.interval = l.min // quiet for a while: start over
	} else if n > 1 {
		l.interval = min(2*l.interval, l.max)
	}
	l.last, l.count = now, 0
	return n, true
}

// logRepeated logs msg at level through lim.
func logRepeated(log *slog.Logger, lim *logEvery, level slog.Level, msg string, args ...any) {
	n, ok := lim.tick(time.Now())
	if !ok {
		return
	}
	if n > 1 {
		args = append(args, "repeated", n)
	}
	log.Log(context.Background(), level, msg, args...)
}

// Size is the store's size on disk and its pending compaction work.
type Size struct {
	LSM, Vlog int64
	// CompactionDebt is how many LSM levels are over their target size
	// (Badger's compaction score of 1 or more).
	CompactionDebt int
}

// Size reports the store's size as Badger last measured it; the zero Size
// when the store is closed or lost.
func (s *Store) Size() Size {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if s.closed || s.db == nil {
		return Size{}
	}
	var out Size
	out.LSM, out.Vlog = s.db.Size()
	for _, l := range s.db.Levels() {
		if l.Score >= 1 {
			out.CompactionDebt++
		}
	}
	return out
}
