package audit

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/internal/durable"
)

// Defaults of Options.
const (
	DefaultCheckpointEvery    = 10000
	DefaultCheckpointInterval = 10 * time.Second
	DefaultSyncInterval       = time.Second
	DefaultMaxFileSize        = 64 << 20
	DefaultMaxTotalSize       = 1 << 30
	DefaultQueue              = 8192
	// maxPending bounds the bytes kept in memory while writes fail;
	// events recorded beyond it are lost (and counted: ActionLost), and
	// Append refuses more.
	maxPending = 32 << 20
	// signTimeout bounds one checkpoint signature.
	signTimeout = 10 * time.Second
)

// Waits between automatic tries of what keeps failing: signing a
// checkpoint, and writing or syncing the file. (Flush, Checkpoint, Append
// and Close try at once.)
const (
	signRetryMin  = time.Second
	signRetryMax  = time.Minute
	writeRetryMin = 100 * time.Millisecond
	writeRetryMax = 10 * time.Second
)

// Options configure a Log.
type Options struct {
	// Dir holds the log files and head (created 0700 if missing).
	Dir string
	// Signer signs checkpoints. Required.
	Signer Signer
	// Keys verifies checkpoints for Verify; nil: Verify cannot run.
	Keys func() (KeySource, error)
	// Logger gets the log's own errors. Journal, when set, also gets every
	// line written, once per write of the log (an external copy of the
	// chain; see LogJournal).
	Logger  *slog.Logger
	Journal Journal
	// CheckpointEvery events, or CheckpointInterval after the first event
	// since the last checkpoint, a checkpoint is written (and at Close).
	CheckpointEvery    int
	CheckpointInterval time.Duration
	// SyncInterval: written lines reach the disk (fsync) at least this
	// often.
	SyncInterval time.Duration
	// MaxFileSize: audit.log is rotated after the first checkpoint past it
	// (any size > 0; tests use small ones).
	MaxFileSize int64
	// MaxTotalSize bounds the log files of Dir together: once they are
	// over it, the oldest rotated files are deleted (each recorded first
	// by a signed ActionPruned entry). 0: DefaultMaxTotalSize; < 0: keep
	// everything. audit.log itself is never deleted, so the directory
	// may exceed the budget by up to one file.
	MaxTotalSize int64
	// CoalesceInterval: denials (Outcome denied) by the same caller of the
	// same action for the same code and reason are written once per
	// interval: the first at once, the others counted into one line at
	// the end of the interval (Event.Count). 0: DefaultCoalesceInterval;
	// < 0: every denial is written.
	CoalesceInterval time.Duration
	// Queue is how many events recorded with Record may wait for the
	// writer; beyond it they are lost (and counted: ActionLost).
	Queue int
	// Now is the clock (tests).
	Now func() time.Time

	// Tests: wrap the file written (to make it fail), and the bytes that
	// may wait to be written (0: maxPending).
	wrapFile   func(*os.File) writeFile
	maxPending int
}

// writeFile is what the writer needs of the file it appends to.
type writeFile interface {
	Write([]byte) (int, error)
	Sync() error
	Close() error
}

// Log is an open audit log. Record, Append and the readers are safe for
// concurrent use; one goroutine writes, another archives rotated files.
type Log struct {
	opts     Options
	log      *slog.Logger
	queue    chan item
	ctl      chan ctlReq
	closing  chan struct{} // closed when Close starts: Record stops queueing
	done     chan struct{} // closed when the writer has stopped
	once     sync.Once
	closeErr error
	synced   *durable.Checker // confirms the log's fsyncs (writer only)
	coal     *coalescer       // nil: no coalescing
	lost     lostCounter
	closed   atomic.Uint64 // events recorded after Close began

	// files is held for writing while files are renamed, replaced or
	// deleted, and for reading while readers list and open the files.
	files  sync.RWMutex
	active string // the file being written (under files)

	cpAt    atomic.Int64  // unix nanoseconds of the last checkpoint written (Stats)
	written atomic.Uint64 // the last seq completely written to the file
	durable atomic.Uint64 // the highest change seq written and synced

	// marks index audit.log for readers: where the line with seq starts.
	marksMu sync.Mutex
	marks   []mark

	// The archiver (archive.go).
	kick     chan struct{}
	archDone chan struct{}
	archMu   sync.Mutex // held by a pass

	// The writer goroutine's own state.
	f        writeFile
	size     int64
	firstSeq uint64  // of audit.log
	seq      uint64  // last seq assigned
	head     string  // hex hash of the last line
	change   uint64  // highest change seq assigned
	wChange  uint64  // highest change seq completely written
	buf      []byte  // encoded lines not yet written
	jbuf     []byte  // lines not yet copied to the journal
	jents    []Entry // what they encode, for an EntryJournal
	bufSeq   uint64  // the last seq in buf
	enc      bytes.Buffer
	sinceCP  int
	firstAt  time.Time // of the first event since the last checkpoint
	unsynced bool
	lastCP   bool // the last line is a checkpoint
	signF    fault
	writeF   fault
	syncF    fault
	headF    fault
	rotateF  fault
}

// mark says that the line with seq starts at offset in audit.log.
type mark struct {
	seq    uint64
	offset int64
}

// markEvery is how many bytes of audit.log go between two marks.
const markEvery = 256 << 10

type item struct {
	ev  Event
	at  time.Time
	sum bool // a line of coalesced denials
}

type ctlKind int

const (
	ctlFlush ctlKind = iota
	ctlCheckpoint
	ctlClose
	ctlAppend
	ctlPrune
)

type ctlReq struct {
	kind   ctlKind
	events []Event // ctlAppend, ctlPrune
	reply  chan error
}

// Open opens (or creates) the log in opts.Dir, continues its chain and
// starts the writer. What it finds wrong at the end of the log is written
// into the log as events (ActionRecovered, ActionDiscontinuity).
func Open(ctx context.Context, opts Options) (*Log, error) {
	if opts.Dir == "" || opts.Signer == nil {
		return nil, errors.New("audit: a directory and a signer are required")
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.CheckpointEvery <= 0 {
		opts.CheckpointEvery = DefaultCheckpointEvery
	}
	if opts.CheckpointInterval <= 0 {
		opts.CheckpointInterval = DefaultCheckpointInterval
	}
	if opts.SyncInterval <= 0 {
		opts.SyncInterval = DefaultSyncInterval
	}
	if opts.MaxFileSize <= 0 {
		opts.MaxFileSize = DefaultMaxFileSize
	}
	if opts.MaxTotalSize == 0 {
		opts.MaxTotalSize = DefaultMaxTotalSize
	}
	if opts.CoalesceInterval == 0 {
		opts.CoalesceInterval = DefaultCoalesceInterval
	}
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.wrapFile == nil {
		opts.wrapFile = func(f *os.File) writeFile { return f }
	}
	if opts.maxPending <= 0 {
		opts.maxPending = maxPending
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: create %s: %w", opts.Dir, err)
	}
	l := &Log{
		opts:     opts,
		log:      opts.Logger,
		queue:    make(chan item, opts.Queue),
		ctl:      make(chan ctlReq),
		closing:  make(chan struct{}),
		done:     make(chan struct{}),
		kick:     make(chan struct{}, 1),
		archDone: make(chan struct{}),
		head:     genesis,
		synced:   durable.NewChecker(opts.Dir),
		signF:    fault{what: "sign a checkpoint", min: signRetryMin, max: signRetryMax},
		writeF:   fault{what: "write the log", min: writeRetryMin, max: writeRetryMax},
		syncF:    fault{what: "sync the log", min: writeRetryMin, max: writeRetryMax},
		headF:    fault{what: "record the checkpoint in head"},
		rotateF:  fault{what: "rotate the log"},
	}
	if opts.CoalesceInterval > 0 {
		l.coal = newCoalescer(opts.CoalesceInterval)
	}
	notes, err := l.resume()
	if err != nil {
		return nil, err
	}
	cur := filepath.Join(opts.Dir, currentName)
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err == nil && st.Size() > 0 {
		// What the last run wrote is durable from now on (LastChange).
		err = f.Sync()
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	l.f, l.size, l.active = opts.wrapFile(f), st.Size(), cur
	if err := l.synced.Prepare(); err != nil {
		l.log.Warn("audit: the check that each sync of the log held is weaker or not ready (internal/durable)", "dir", opts.Dir, "err", err)
	}
	if l.size == 0 {
		l.firstSeq = l.seq + 1
	}
	l.written.Store(l.seq)
	l.wChange = l.change
	l.durable.Store(l.change)
	for _, ev := range notes {
		l.appendEvent(ev, opts.Now())
	}
	l.writeOut()
	go l.run()
	go l.archive()
	l.kickArchiver()
	return l, nil
}

// resume reads the end of the log: its last seq and hash, a torn last line
// (removed), and whether it still reaches the checkpoint in head.
func (l *Log) resume() ([]Event, error) {
	dir := l.opts.Dir
	files, err := listFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	t, err := readTail(files)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var notes []Event
	if t.torn > 0 {
		st, err := os.Stat(t.tornPath)
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		if err := os.Truncate(t.tornPath, st.Size()-t.torn); err != nil {
			return nil, fmt.Errorf("audit: remove the incomplete last line: %w", err)
		}
		l.log.Warn("audit: removed an incomplete last line (a crash during a write)", "file", t.tornPath, "bytes", t.torn)
		notes = append(notes, Event{Action: ActionRecovered, Outcome: OutcomeOK,
			Reason: "an incomplete last line was removed", Target: map[string]string{"bytes": strconv.FormatInt(t.torn, 10)}})
	}
	if t.lastLine != nil {
		h := lineHash(t.lastLine)
		l.seq, l.head = t.seq, hex.EncodeToString(h[:])
		_, l.lastCP = lineChange(t.lastLine)
	}
	if n := len(files); n > 0 && filepath.Base(files[n-1].path) == currentName {
		l.firstSeq = files[n-1].firstSeq
	}
	if l.change, err = lastChange(files); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	head, err := readHead(dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if head == nil {
		return notes, nil
	}
	cpSeq, ok := peekSeq(head)
	if !ok {
		return append(notes, l.discontinuity("the head file is not a checkpoint line", 0)), nil
	}
	if l.seq < cpSeq {
		return append(notes, l.discontinuity(fmt.Sprintf("the log ends at entry %d but checkpoint %d had been written: entries after %d were removed", l.seq, cpSeq, l.seq), cpSeq)), nil
	}
	line, err := findLine(files, cpSeq)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if line == nil || lineHash(line) != lineHash(head) {
		return append(notes, l.discontinuity(fmt.Sprintf("checkpoint %d in the log is not the one that was written", cpSeq), cpSeq)), nil
	}
	return notes, nil
}

func (l *Log) discontinuity(reason string, cpSeq uint64) Event {
	l.log.Error("audit: the log was cut or replaced while the daemon was stopped", "reason", reason)
	return Event{Action: ActionDiscontinuity, Outcome: OutcomeFailed, Reason: reason,
		Target: map[string]string{"checkpoint": strconv.FormatUint(cpSeq, 10), "log_end": strconv.FormatUint(l.seq, 10)}}
}

// Record queues e to be written. It never blocks: when the queue is full
// (the writer is behind), e is lost and counted, and an ActionLost entry
// says so once writing goes on (Lost has the total). Repeated denials are
// coalesced (Options.CoalesceInterval). e.Change is ignored: state
// changes go through Append. After Close, e is dropped.
func (l *Log) Record(e Event) {
	at := l.opts.Now()
	select {
	case <-l.closing:
		l.closed.Add(1)
		l.lost.total.Add(1)
		return
	default:
	}
	e.Change = 0
	if l.coal != nil && e.Outcome == OutcomeDenied {
		write, sum := l.coal.admit(&e, at)
		if sum != nil {
			l.enqueue(item{ev: *sum, at: at, sum: true})
		}
		if !write {
			return
		}
	}
	l.enqueue(item{ev: e, at: at})
}

// enqueue queues it without waiting, or counts it lost.
func (l *Log) enqueue(it item) {
	select {
	case l.queue <- it:
	default:
		l.lost.addItem(&it, lostQueueFull)
	}
}

// Append writes events, in order, after the events recorded before it,
// and returns nil once every one of them is written and synced to disk:
// the transactional outbox's drainer deletes them from the store then.
// Each event carries the store's change seq in Change: greater than 0 and
// strictly increasing within events. Events whose Change is not above the
// highest change seq already in the log (written, or waiting to be) are
// skipped, so delivering a batch again after a crash or an error neither
// duplicates nor loses an event.
//
// On an error (writing or syncing failed) the events not skipped are
// either all in the log, waiting to be written (the log keeps retrying;
// calling Append again with the same events waits for them), or, when
// too much already waits (maxPending), none of them. Either way, call
// Append again with the same events.
func (l *Log) Append(ctx context.Context, events []Event) error {
	for i := range events {
		if c := events[i].Change; c == 0 || (i > 0 && c <= events[i-1].Change) {
			return fmt.Errorf("audit: append: event %d has change seq %d: change seqs must be > 0 and increasing", i, c)
		}
	}
	if len(events) == 0 || events[len(events)-1].Change <= l.durable.Load() {
		return nil
	}
	return l.controlWith(ctx, ctlReq{kind: ctlAppend, events: events})
}

// LastChange is the highest change seq (Event.Change) written and synced
// to the log: after Open, the highest in the files.
func (l *Log) LastChange() uint64 { return l.durable.Load() }

// Stats are the log's queue and counters, for metrics.
type Stats struct {
	Queued         int       // best-effort events waiting for the writer
	Lost           uint64    // see Lost
	Coalesced      uint64    // denials folded into summary lines
	LastCheckpoint time.Time // zero: none written since Open
}

// Stats reports the log's queue and counters.
func (l *Log) Stats() Stats {
	st := Stats{Queued: len(l.queue), Lost: l.Lost()}
	if l.coal != nil {
		st.Coalesced = l.coal.folded.Load()
	}
	if ns := l.cpAt.Load(); ns != 0 {
		st.LastCheckpoint = time.Unix(0, ns)
	}
	return st
}

// Lost is how many events recorded with Record were lost since Open: the
// queue was full, the file could not be written, or the log was closed.
// (A coalesced line that is lost counts the denials it stood for.)
func (l *Log) Lost() uint64 { return l.lost.total.Load() }

// Flush waits until every event recorded before it is written to the file
// (not necessarily synced). Denials still being counted are written at
// the end of their interval (or at Close), not by Flush.
func (l *Log) Flush(ctx context.Context) error { return l.control(ctx, ctlFlush) }

// Checkpoint writes a checkpoint now (after the events recorded before it)
// and syncs the file.
func (l *Log) Checkpoint(ctx context.Context) error { return l.control(ctx, ctlCheckpoint) }

// Close writes the queued events, the counted denials and a last
// checkpoint, syncs and closes the file, and stops the archiver. Later
// calls return the first result.
func (l *Log) Close(ctx context.Context) error {
	l.once.Do(func() {
		close(l.closing)
		l.closeErr = l.control(ctx, ctlClose)
		// Events queued after the writer's last look (by a Record that
		// began before Close) are counted.
		for drained := false; !drained; {
			select {
			case it := <-l.queue:
				n := uint64(1)
				if it.sum {
					n = it.ev.Count
				}
				l.closed.Add(n)
				l.lost.total.Add(n)
			default:
				drained = true
			}
		}
		select {
		case <-l.archDone:
		case <-ctx.Done():
			l.closeErr = errors.Join(l.closeErr, ctx.Err())
		}
	})
	return l.closeErr
}

// LastSeq is the seq of the last line completely written to the file.
func (l *Log) LastSeq() uint64 { return l.written.Load() }

// Dir is where the log is.
func (l *Log) Dir() string { return l.opts.Dir }

func (l *Log) control(ctx context.Context, k ctlKind) error {
	return l.controlWith(ctx, ctlReq{kind: k})
}

func (l *Log) controlWith(ctx context.Context, r ctlReq) error {
	r.reply = make(chan error, 1)
	select {
	case l.ctl <- r:
	case <-l.done:
		return errLogClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-r.reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// run is the writer.
func (l *Log) run() {
	defer close(l.done)
	tick := time.NewTicker(l.opts.SyncInterval)
	defer tick.Stop()
	var sweep <-chan time.Time
	if l.coal != nil {
		t := time.NewTicker(l.opts.CoalesceInterval)
		defer t.Stop()
		sweep = t.C
	}
	// Lines are written (and copied to the journal) writeDelay after the
	// first of a batch, not one write per event: a busy daemon records
	// tens of thousands of events a second, and Record never waits for
	// the write anyway (nor is a line durable before the next sync).
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	var written <-chan time.Time
	later := func() {
		switch {
		case len(l.buf) >= writeBatch:
			l.autoWrite()
		case written == nil:
			delay.Reset(writeDelay)
			written = delay.C
		}
	}
	for {
		select {
		case it := <-l.queue:
			l.append(it)
			l.drain(256)
			later()
		case <-written:
			written = nil
			l.autoWrite()
		case <-sweep:
			l.drain(-1)
			l.summarize(false)
			later()
		case <-tick.C:
			l.noteLost()
			l.autoWrite()
			now := l.opts.Now()
			if l.sinceCP > 0 && now.Sub(l.firstAt) >= l.opts.CheckpointInterval && l.signF.ready(now) {
				l.autoCheckpoint()
			} else if l.syncF.ready(now) {
				l.sync()
			}
		case r := <-l.ctl:
			l.drain(-1)
			var err error
			switch r.kind {
			case ctlFlush:
				l.summarize(false)
				l.noteLost()
				if err = l.writeOut(); err == nil && l.lost.pending.Load() > 0 {
					l.noteLost() // writing works again
					err = l.writeOut()
				}
			case ctlCheckpoint:
				l.summarize(false)
				l.noteLost()
				err = l.checkpoint()
			case ctlAppend:
				err = l.appendDurable(r.events)
			case ctlPrune:
				for _, ev := range r.events {
					l.appendEvent(ev, l.opts.Now())
				}
				err = l.checkpoint()
			case ctlClose:
				l.summarize(true)
				l.writeOut() // so that the lost events can be told, if it works again
				l.noteLost()
				if l.sinceCP > 0 || !l.lastCP {
					err = l.checkpoint()
				}
				// Whatever happened to the checkpoint, the events go to disk.
				err = errors.Join(err, l.writeOut(), l.sync())
				if n := l.closed.Load(); n > 0 {
					l.log.Error("audit: events recorded after close were not written", "events", n)
				}
				if n := l.lost.pending.Load(); n > 0 {
					l.log.Error("audit: events were lost and could not be recorded as lost", "events", n)
				}
				err = errors.Join(err, l.f.Close())
				l.synced.Close()
				r.reply <- err
				return
			}
			r.reply <- err
		}
	}
}

// writeDelay is how long lines wait to be written with the next ones, and
// writeBatch how many bytes of them are written at once without waiting.
const (
	writeDelay = 2 * time.Millisecond
	writeBatch = 64 << 10
)

// drain appends queued events without waiting: at most n (n < 0: all
// that are queued).
func (l *Log) drain(n int) {
	for i := 0; n < 0 || i < n; i++ {
		select {
		case it := <-l.queue:
			l.append(it)
		default:
			return
		}
	}
}

// summarize appends the lines of coalesced denials whose interval has
// ended (all: every one counted so far).
func (l *Log) summarize(all bool) {
	if l.coal == nil {
		return
	}
	now := l.opts.Now()
	for _, ev := range l.coal.sweep(now, all) {
		l.append(item{ev: ev, at: now, sum: true})
	}
}

// append assigns the next seq to an event recorded with Record and
// encodes it into buf, unless too much already waits to be written (then
// it is lost, and counted).
func (l *Log) append(it item) {
	l.noteLost()
	if len(l.buf) > l.opts.maxPending {
		l.lost.addItem(&it, lostWriteFailed)
		return
	}
	l.appendEvent(it.ev, it.at)
}

// appendEvent encodes an event into buf; a checkpoint follows every
// CheckpointEvery events (unless signing is failing and waits to be
// tried again).
func (l *Log) appendEvent(ev Event, at time.Time) {
	l.appendEntry(Entry{Type: TypeEvent, Event: ev}, at.UTC().Format(time.RFC3339Nano))
	if l.sinceCP == 0 {
		l.firstAt = l.opts.Now()
	}
	l.sinceCP++
	if l.sinceCP >= l.opts.CheckpointEvery {
		l.autoCheckpoint()
	}
}

// autoCheckpoint writes a checkpoint unless signing or writing is failing
// and waits to be tried again.
func (l *Log) autoCheckpoint() {
	if now := l.opts.Now(); l.signF.ready(now) && l.writeF.ready(now) && l.syncF.ready(now) {
		l.checkpoint()
	}
}

// noteLost appends the ActionLost entry for the events lost so far, once
// writing works.
func (l *Log) noteLost() {
	if l.lost.pending.Load() == 0 || l.writeF.failing || len(l.buf) > l.opts.maxPending {
		return
	}
	n, first, last, why := l.lost.take()
	if n == 0 {
		return
	}
	l.appendEvent(Event{Action: ActionLost, Outcome: OutcomeFailed, Reason: why.String(),
		Target: map[string]string{
			TargetEvents: strconv.FormatUint(n, 10),
			TargetFirst:  first.UTC().Format(time.RFC3339Nano),
			TargetLast:   last.UTC().Format(time.RFC3339Nano),
		}}, l.opts.Now())
}

// appendDurable is Append in the writer.
func (l *Log) appendDurable(events []Event) error {
	want := events[len(events)-1].Change
	i := 0
	for i < len(events) && events[i].Change <= l.change {
		i++
	}
	if add := events[i:]; len(add) > 0 {
		if len(l.buf) > l.opts.maxPending {
			if err := l.writeOut(); err != nil {
				return fmt.Errorf("audit: append: %d bytes of the log wait to be written: %w (%w)", len(l.buf), errBehind, err)
			}
		}
		l.noteLost()
		now := l.opts.Now()
		for _, ev := range add {
			l.appendEvent(ev, now)
		}
	}
	if err := l.writeOut(); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	if got := l.durable.Load(); got < want {
		// Only a bug gets here.
		return fmt.Errorf("audit: append: change %d is not durable (the log has %d)", want, got)
	}
	return nil
}

// errLogClosed: the writer has stopped.
var errLogClosed = errors.New("audit: the log is closed")

// errBehind: writing the log fails and too much waits already.
var errBehind = errors.New("writing the log is failing")

// appendEntry chains e, at time at, after the last line and encodes it
// into buf. It returns the line (valid until the next call).
func (l *Log) appendEntry(e Entry, at string) []byte {
	e.Seq = l.seq + 1
	e.Time = at
	e.Prev = l.head
	l.enc.Reset()
	if err := encodeEntry(&l.enc, &e); err != nil {
		// Only a programming error gets here (every field encodes).
		l.log.Error("audit: cannot encode an entry", "action", e.Action, "err", err)
		return nil
	}
	line := l.enc.Bytes()
	h := lineHash(line[:len(line)-1])
	l.seq, l.head = e.Seq, hex.EncodeToString(h[:])
	l.change = max(l.change, e.Change)
	l.buf = append(l.buf, line...)
	l.bufSeq = l.seq
	l.lastCP = e.Type == TypeCheckpoint
	if l.opts.Journal != nil {
		l.jbuf = append(l.jbuf, line...)
		if _, ok := l.opts.Journal.(EntryJournal); ok {
			l.jents = append(l.jents, e)
		}
	}
	return line[:len(line)-1]
}

// autoWrite writes buf unless writing is failing and waits to be tried
// again.
func (l *Log) autoWrite() {
	if l.writeF.ready(l.opts.Now()) {
		l.writeOut()
	}
}

// writeOut writes buf to the file. A failed or short write keeps what is
// left for the next try, so a line is never torn for good.
func (l *Log) writeOut() error {
	// The journal copy goes first and whatever happens to the file: it is
	// the copy that outlives a failing disk.
	if len(l.jbuf) > 0 {
		if ej, ok := l.opts.Journal.(EntryJournal); ok {
			ej.CopyEntries(l.jbuf, l.jents)
		} else {
			l.opts.Journal.Copy(l.jbuf)
		}
		l.jbuf = l.jbuf[:0]
		clear(l.jents) // their targets and principals go
		l.jents = l.jents[:0]
	}
	if len(l.buf) == 0 {
		return nil
	}
	n, err := l.f.Write(l.buf)
	l.size += int64(n)
	if n > 0 {
		l.unsynced = true
	}
	l.buf = l.buf[:copy(l.buf, l.buf[n:])]
	if err != nil {
		l.writeF.fail(l.log, l.opts.Now(), err, "pending_bytes", len(l.buf))
		return fmt.Errorf("audit: write: %w", err)
	}
	l.writeF.ok(l.log)
	l.written.Store(l.bufSeq)
	l.wChange = l.change
	l.marksMu.Lock()
	if n := len(l.marks); n == 0 || l.size-l.marks[n-1].offset >= markEvery {
		l.marks = append(l.marks, mark{seq: l.bufSeq + 1, offset: l.size})
	}
	l.marksMu.Unlock()
	return nil
}

// sync makes what is written durable.
func (l *Log) sync() error {
	if l.unsynced {
		err := l.f.Sync()
		if err == nil {
			// ext4 may have said yes with its journal aborted
			// (internal/durable).
			err = l.synced.Confirm()
		}
		if err != nil {
			l.syncF.fail(l.log, l.opts.Now(), err)
			return fmt.Errorf("audit: sync: %w", err)
		}
		l.syncF.ok(l.log)
		l.unsynced = false
	}
	// Every line up to the last complete write is on disk now.
	l.durable.Store(l.wChange)
	return nil
}

// checkpoint signs the chain head, writes and syncs the checkpoint line,
// records it in head and rotates audit.log when it is full.
func (l *Log) checkpoint() error {
	if err := l.writeOut(); err != nil {
		return err
	}
	seq, prev := l.seq+1, l.head
	now := l.opts.Now()
	at := now.UTC().Format(time.RFC3339Nano)
	ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
	defer cancel()
	sig, kid, err := l.opts.Signer.Sign(ctx, checkpointDigest(seq, at, prev))
	if err == nil && (len(sig) == 0 || len(sig) > maxSigLen || kid == "") {
		err = fmt.Errorf("the signer returned a %d-byte signature and kid %q", len(sig), kid)
	}
	if err != nil {
		l.signF.fail(l.log, now, err, "seq", seq)
		return fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	l.signF.ok(l.log)
	l.sinceCP = 0
	line := bytes.Clone(l.appendEntry(Entry{Type: TypeCheckpoint, Event: Event{Change: l.change}, KID: kid, Sig: b64.EncodeToString(sig)}, at))
	if err := l.writeOut(); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	if err := writeHead(l.opts.Dir, line); err != nil {
		l.headF.fail(l.log, now, err, "seq", seq)
		return err
	}
	l.headF.ok(l.log)
	l.cpAt.Store(now.UnixNano())
	if l.size >= l.opts.MaxFileSize {
		return l.rotate()
	}
	return nil
}

// rotate renames the full audit.log after its first seq and starts a new
// one. Readers hold files for reading while they list and open files.
func (l *Log) rotate() error {
	l.files.Lock()
	defer l.files.Unlock()
	dir := l.opts.Dir
	cur := filepath.Join(dir, currentName)
	rotated := filepath.Join(dir, rotatedName(l.firstSeq))
	// After a rotation that failed half-way, the file written is already
	// the rotated one: only a new audit.log is missing.
	renamed := l.active == cur
	if renamed {
		if err := os.Rename(cur, rotated); err != nil {
			l.rotateF.fail(l.log, l.opts.Now(), err)
			return fmt.Errorf("audit: rotate: %w", err)
		}
	}
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		l.rotateF.fail(l.log, l.opts.Now(), err)
		if renamed && os.Rename(rotated, cur) != nil {
			// Keep appending to the renamed file: the chain does not
			// care, and the next rotation starts audit.log.
			l.active = rotated
		}
		return fmt.Errorf("audit: rotate: %w", err)
	}
	l.rotateF.ok(l.log)
	l.f.Close()
	l.f, l.size, l.firstSeq, l.active = l.opts.wrapFile(f), 0, l.seq+1, cur
	l.marksMu.Lock()
	l.marks = nil
	l.marksMu.Unlock()
	if err := syncDir(dir); err != nil {
		l.log.Warn("audit: syncing the audit directory failed", "err", err)
	}
	l.kickArchiver()
	return nil
}
