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
)

// Defaults of Options.
const (
	DefaultCheckpointEvery    = 10000
	DefaultCheckpointInterval = 10 * time.Second
	DefaultSyncInterval       = time.Second
	DefaultMaxFileSize        = 64 << 20
	DefaultQueue              = 8192
	// maxPending bounds the bytes kept in memory while writes fail;
	// events beyond it are counted and reported as ActionDropped.
	maxPending = 32 << 20
	// signTimeout bounds one checkpoint signature.
	signTimeout = 10 * time.Second
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
	// MaxFileSize: audit.log is rotated after the first checkpoint past it.
	MaxFileSize int64
	// Queue is how many events may wait for the writer before Record
	// blocks.
	Queue int
	// Now is the clock (tests).
	Now func() time.Time
}

// Log is an open audit log. Record is safe for concurrent use; one
// goroutine writes.
type Log struct {
	opts     Options
	log      *slog.Logger
	queue    chan item
	ctl      chan ctlReq
	closing  chan struct{} // closed when Close starts: Record stops queueing
	done     chan struct{} // closed when the writer has stopped
	once     sync.Once
	closeErr error

	// files is held for writing while audit.log is renamed and replaced,
	// and for reading while readers list and open the files.
	files sync.RWMutex

	written atomic.Uint64 // the last seq completely written to the file

	// marks index audit.log for readers: where the line with seq starts.
	marksMu sync.Mutex
	marks   []mark
	lost    atomic.Uint64 // events dropped after Close began

	// The writer goroutine's own state.
	f        *os.File
	size     int64
	firstSeq uint64 // of audit.log
	seq      uint64 // last seq assigned
	head     string // hex hash of the last line
	buf      []byte // encoded lines not yet written
	jbuf     []byte // lines not yet copied to the journal
	bufSeq   uint64 // the last seq in buf
	enc      bytes.Buffer
	sinceCP  int
	firstAt  time.Time // of the first event since the last checkpoint
	unsynced bool
	lastCP   bool // the last line is a checkpoint
	failing  bool
	dropped  uint64
}

// mark says that the line with seq starts at offset in audit.log.
type mark struct {
	seq    uint64
	offset int64
}

// markEvery is how many bytes of audit.log go between two marks.
const markEvery = 256 << 10

type item struct {
	ev Event
	at time.Time
}

type ctlKind int

const (
	ctlFlush ctlKind = iota
	ctlCheckpoint
	ctlClose
)

type ctlReq struct {
	kind  ctlKind
	reply chan error
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
	if opts.Queue <= 0 {
		opts.Queue = DefaultQueue
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("audit: create %s: %w", opts.Dir, err)
	}
	l := &Log{
		opts:    opts,
		log:     opts.Logger,
		queue:   make(chan item, opts.Queue),
		ctl:     make(chan ctlReq),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
		head:    genesis,
	}
	notes, err := l.resume()
	if err != nil {
		return nil, err
	}
	f, err := os.OpenFile(filepath.Join(opts.Dir, currentName), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	l.f, l.size = f, st.Size()
	if l.size == 0 {
		l.firstSeq = l.seq + 1
	}
	l.written.Store(l.seq)
	for _, ev := range notes {
		l.append(item{ev: ev, at: opts.Now()})
	}
	l.writeOut()
	go l.run()
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
		l.lastCP = bytes.Contains(t.lastLine, []byte(`"type":"`+TypeCheckpoint+`"`))
	}
	if n := len(files); n > 0 && filepath.Base(files[n-1].path) == currentName {
		l.firstSeq = files[n-1].firstSeq
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

// Record queues e. It blocks only while the queue is full (the writer is
// behind), so no event is lost; after Close it drops e.
func (l *Log) Record(e Event) {
	it := item{ev: e, at: l.opts.Now()}
	select {
	case <-l.closing:
		l.lost.Add(1)
		return
	default:
	}
	select {
	case l.queue <- it:
	case <-l.closing:
		l.lost.Add(1)
	}
}

// Flush waits until every event recorded before it is written to the file
// (not necessarily synced).
func (l *Log) Flush(ctx context.Context) error { return l.control(ctx, ctlFlush) }

// Checkpoint writes a checkpoint now (after the events recorded before it)
// and syncs the file.
func (l *Log) Checkpoint(ctx context.Context) error { return l.control(ctx, ctlCheckpoint) }

// Close writes the queued events and a last checkpoint, syncs and closes
// the file. Later calls return the first result.
func (l *Log) Close(ctx context.Context) error {
	l.once.Do(func() {
		close(l.closing)
		l.closeErr = l.control(ctx, ctlClose)
	})
	return l.closeErr
}

// LastSeq is the seq of the last line completely written to the file.
func (l *Log) LastSeq() uint64 { return l.written.Load() }

// Dir is where the log is.
func (l *Log) Dir() string { return l.opts.Dir }

func (l *Log) control(ctx context.Context, k ctlKind) error {
	r := ctlReq{kind: k, reply: make(chan error, 1)}
	select {
	case l.ctl <- r:
	case <-l.done:
		return errors.New("audit: the log is closed")
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
	// Lines are written (and copied to the journal) writeDelay after the
	// first of a batch, not one write per event: a busy daemon records
	// tens of thousands of events a second, and Record never waits for
	// the write anyway (nor is a line durable before the next sync).
	delay := time.NewTimer(time.Hour)
	delay.Stop()
	var written <-chan time.Time
	for {
		select {
		case it := <-l.queue:
			l.append(it)
			l.drain(256)
			switch {
			case len(l.buf) >= writeBatch:
				l.writeOut()
			case written == nil:
				delay.Reset(writeDelay)
				written = delay.C
			}
		case <-written:
			written = nil
			l.writeOut()
		case <-tick.C:
			l.writeOut()
			if l.sinceCP > 0 && l.opts.Now().Sub(l.firstAt) >= l.opts.CheckpointInterval {
				l.checkpoint()
			} else {
				l.sync()
			}
		case r := <-l.ctl:
			l.drain(-1)
			var err error
			switch r.kind {
			case ctlFlush:
				err = l.writeOut()
			case ctlCheckpoint:
				err = l.checkpoint()
			case ctlClose:
				if l.sinceCP > 0 || !l.lastCP {
					err = l.checkpoint()
				}
				if l.lost.Load() > 0 {
					l.log.Error("audit: events recorded after close were not written", "events", l.lost.Load())
				}
				err = errors.Join(err, l.f.Close())
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

// append assigns the next seq to an event and encodes it into buf; a
// checkpoint follows every CheckpointEvery events.
func (l *Log) append(it item) {
	if l.dropped > 0 && !l.failing {
		n := l.dropped
		l.dropped = 0
		l.appendEntry(Entry{Type: TypeEvent, Event: Event{Action: ActionDropped, Outcome: OutcomeFailed,
			Reason: "writing the audit log failed; events were lost", Target: map[string]string{"events": strconv.FormatUint(n, 10)}}}, l.opts.Now().UTC().Format(time.RFC3339Nano))
	}
	if len(l.buf) > maxPending {
		l.dropped++
		return
	}
	l.appendEntry(Entry{Type: TypeEvent, Event: it.ev}, it.at.UTC().Format(time.RFC3339Nano))
	if l.sinceCP == 0 {
		l.firstAt = l.opts.Now()
	}
	l.sinceCP++
	if l.sinceCP >= l.opts.CheckpointEvery {
		l.checkpoint()
	}
}

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
	l.buf = append(l.buf, line...)
	l.bufSeq = l.seq
	l.lastCP = e.Type == TypeCheckpoint
	if l.opts.Journal != nil {
		l.jbuf = append(l.jbuf, line...)
	}
	return line[:len(line)-1]
}

// writeOut writes buf to the file. A failed or short write keeps what is
// left for the next try, so a line is never torn for good.
func (l *Log) writeOut() error {
	// The journal copy goes first and whatever happens to the file: it is
	// the copy that outlives a failing disk.
	if len(l.jbuf) > 0 {
		l.opts.Journal.Copy(l.jbuf)
		l.jbuf = l.jbuf[:0]
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
		if !l.failing {
			l.log.Error("audit: writing the log failed; retrying", "err", err)
		}
		l.failing = true
		return fmt.Errorf("audit: write: %w", err)
	}
	if l.failing {
		l.log.Info("audit: writing the log works again")
	}
	l.failing = false
	l.written.Store(l.bufSeq)
	l.marksMu.Lock()
	if n := len(l.marks); n == 0 || l.size-l.marks[n-1].offset >= markEvery {
		l.marks = append(l.marks, mark{seq: l.bufSeq + 1, offset: l.size})
	}
	l.marksMu.Unlock()
	return nil
}

func (l *Log) sync() error {
	if !l.unsynced {
		return nil
	}
	if err := l.f.Sync(); err != nil {
		l.log.Error("audit: syncing the log failed", "err", err)
		return fmt.Errorf("audit: sync: %w", err)
	}
	l.unsynced = false
	return nil
}

// checkpoint signs the chain head, writes and syncs the checkpoint line,
// records it in head and rotates audit.log when it is full.
func (l *Log) checkpoint() error {
	if err := l.writeOut(); err != nil {
		return err
	}
	seq, prev := l.seq+1, l.head
	at := l.opts.Now().UTC().Format(time.RFC3339Nano)
	ctx, cancel := context.WithTimeout(context.Background(), signTimeout)
	defer cancel()
	sig, kid, err := l.opts.Signer.Sign(ctx, checkpointDigest(seq, at, prev))
	if err == nil && (len(sig) == 0 || len(sig) > maxSigLen || kid == "") {
		err = fmt.Errorf("the signer returned a %d-byte signature and kid %q", len(sig), kid)
	}
	if err != nil {
		l.firstAt = l.opts.Now() // retry after another interval
		l.log.Error("audit: cannot sign a checkpoint", "seq", seq, "err", err)
		return fmt.Errorf("audit: sign checkpoint: %w", err)
	}
	l.sinceCP = 0
	line := bytes.Clone(l.appendEntry(Entry{Type: TypeCheckpoint, KID: kid, Sig: b64.EncodeToString(sig)}, at))
	if err := l.writeOut(); err != nil {
		return err
	}
	if err := l.sync(); err != nil {
		return err
	}
	if err := writeHead(l.opts.Dir, line); err != nil {
		l.log.Error("audit: cannot record the checkpoint", "seq", seq, "err", err)
		return err
	}
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
	old := filepath.Join(dir, currentName)
	if err := os.Rename(old, filepath.Join(dir, rotatedName(l.firstSeq))); err != nil {
		l.log.Error("audit: cannot rotate the log", "err", err)
		return fmt.Errorf("audit: rotate: %w", err)
	}
	f, err := os.OpenFile(old, os.O_WRONLY|os.O_APPEND|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		// Keep appending to the renamed file: the chain does not care.
		l.log.Error("audit: cannot start a new log file", "err", err)
		return fmt.Errorf("audit: rotate: %w", err)
	}
	l.f.Close()
	l.f, l.size, l.firstSeq = f, 0, l.seq+1
	l.marksMu.Lock()
	l.marks = nil
	l.marksMu.Unlock()
	if err := syncDir(dir); err != nil {
		l.log.Warn("audit: syncing the audit directory failed", "err", err)
	}
	return nil
}
