package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
	"github.com/coffer-hsm/coffer/internal/diskspace"
	"github.com/coffer-hsm/coffer/internal/durable"
)

var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists") // unique index clash
	ErrClosed   = errors.New("store closed")
	// ErrKeyMismatch: the store was created with another encryption key
	// (or none, or was opened without its key).
	ErrKeyMismatch = errors.New("encryption key does not match the store")
	// ErrTxnTooBig: one request wrote more than fits in one transaction
	// (see Store.Update); callers that write in batches make them smaller.
	ErrTxnTooBig = badger.ErrTxnTooBig
)

// Options configures Open.
type Options struct {
	Dir        string        // badger dir, created 0700
	Logger     *slog.Logger  // nil = slog.Default(); badger's own lines at WARNING and above only
	GCInterval time.Duration // value-log GC timer; 0 = 5 minutes; negative = off

	// EncryptionKey, when set, encrypts everything Badger writes (tables,
	// value log, memtable WAL) with AES-CTR under data keys that Badger
	// keeps in its KEYREGISTRY file, itself encrypted with this key. It must
	// be 16, 24 or 32 bytes. Open copies it: the caller may clear its slice
	// once Open returns; the Store clears its copy on Close. A store must
	// always be opened with the key it was created with.
	EncryptionKey []byte
	// EncryptionKeyRotation is how old Badger's current data key may get
	// before it makes a new one; 0 = 7 days.
	EncryptionKeyRotation time.Duration
	// MemTableSize is Badger's memtable size; 0 = the default (see
	// BadgerOptions). A transaction may write at most 15% of it, so tests
	// set it small to reach that limit.
	MemTableSize int64

	// Witness is the path of the store's witness file (witness.go),
	// outside Dir: Open refuses a store holding fewer commits than it
	// records, and keeps it up to date. "" = no witness.
	Witness string
	// MustExist says that a store is known to have existed in Dir (its key
	// file is there): Open refuses to start an empty store in its place.
	MustExist bool
	// ExtraReserve is added to the room the store keeps free on its
	// filesystem (see Health): for other files there that must not run
	// out (the audit log's). Negative turns the space checks off.
	ExtraReserve int64
}

const (
	defaultGCInterval = 5 * time.Minute
	gcDiscardRatio    = 0.5
	maxGCRuns         = 100 // per tick; a safety cap on rewriting value-log files

	defaultKeyRotation = 7 * 24 * time.Hour
)

// Store is an open Badger database. It is safe for concurrent use.
type Store struct {
	db     *badger.DB
	dir    string
	synced *durable.Checker // confirms the commits' fsyncs (committer only)
	log    *slog.Logger
	encKey []byte // Badger uses it until Close (to seal new data keys); cleared then

	// mu is held for reading by every transaction and for writing by Close,
	// so Close waits for in-flight transactions and nothing touches a closed DB.
	mu     sync.RWMutex
	closed bool

	// Update requests for the committer goroutine (batch.go).
	writes     chan *writeReq
	stopCommit chan struct{}
	commitDone chan struct{}

	// gate is held by the committer for each batch and by Load, so that
	// Load writes with no Update running.
	gate sync.Mutex

	stopGC chan struct{}
	gcDone chan struct{}

	onCommit func(Commit) // see OnCommit

	// Health, space and witness (health.go, watch.go, witness.go).
	opts         Options // as given, for a reopen (EncryptionKey cleared: see encKey)
	bopts        badger.Options
	blog         *badgerLogger
	health       atomic.Pointer[Health]
	stateMu      sync.Mutex // serialises health changes
	isLost       bool       // under mu: db is gone (see lost)
	quota        bool
	extraReserve int64
	spaceMu      sync.Mutex   // serialises checkSpace
	reserve      atomic.Int64 // the room kept free, as of the last check
	avail        atomic.Int64 // the room at the last check
	written      atomic.Int64 // bytes committed since then (an estimate)
	walSpan      int64        // preallocated bytes of each write-ahead log; 0 = off
	nextMemFid   int          // the write-ahead log prepareWAL readies (watcher only)
	commits      atomic.Uint64
	witness      string
	witnessed    atomic.Uint64 // the count the witness file holds
	kick         chan struct{}
	lostCh       chan struct{} // closed by lost
	stopWatch    chan struct{}
	watchDone    chan struct{}
	stopOnce     sync.Once
	spaceLog     logEvery
	probeLog     logEvery
	walLog       logEvery
	witnessLog   logEvery
}

// checksumMode is when Badger verifies table checksums (see
// BadgerOptions); the benchmarks compare the others.
var checksumMode = options.OnTableRead

// BadgerOptions are the options coffer opens Badger with (without
// encryption, which Open adds from Options.EncryptionKey). Exported for
// the benchmark's kv-sync ceiling, which measures raw Badger commits on
// the same settings.
func BadgerOptions(dir string, logger *slog.Logger) badger.Options {
	opts := badger.DefaultOptions(dir).
		// An acknowledged write must survive kill -9: fsync every commit.
		WithSyncWrites(true).
		// Only the committer writes (batch.go), one transaction after
		// another: there are no conflicts to detect.
		WithDetectConflicts(false).
		// Not WithLoggingLevel: it replaces the logger with Badger's stderr one.
		WithLogger(newBadgerLogger(logger)).
		// Sized for a small edge host holding a metadata set of megabytes,
		// not the multi-GiB defaults. Table sizes bound memory as much as
		// the caches do: every table build (a memtable flush, each of a
		// compaction's parallel sub-compactions) holds the whole table,
		// and with encryption its ciphertext too, in an allocator that
		// Badger keeps pooled (up to 8) after the build, grown to the
		// largest table it built. With 2 MiB tables doubling per level that
		// pool held ~150 MiB after a write burst; flat 1 MiB tables keep
		// the compactions' share to a few MiB each. The memtable stays at
		// 16 MiB: a transaction may write 15% of it (2.4 MiB, about 26,000
		// entries: revoking a credential deletes all its sessions at once),
		// and at 8 MiB the extra flushes cost writes a quarter of their rate.
		WithMemTableSize(16 << 20).
		WithBaseTableSize(1 << 20).
		WithNumMemtables(2).
		WithBlockCacheSize(16 << 20).
		// With encryption, a table's index (block offsets, bloom filter)
		// is decrypted again whenever it is not in this cache, and every
		// point read consults the index of each table it probes. It must
		// hold all of them: about 1.5 MiB per 100,000 credentials. Only
		// what exists takes memory.
		WithIndexCacheSize(64 << 20).
		WithValueLogFileSize(64 << 20).
		WithNumVersionsToKeep(1).
		WithNumCompactors(2).
		// Sealed payloads do not compress, and an uncompressed store keeps
		// the leak checks (grepping the files for plaintext) meaningful.
		WithCompression(options.None).
		// Our records are small JSON documents (well under 64 KiB). Keeping
		// them inside the LSM tree means one read per Get, no value-log
		// indirection, and almost nothing for value-log GC to rewrite; the
		// value log then serves only as the write-ahead log. Must stay below
		// 15% of MemTableSize (Badger's max batch size).
		WithValueThreshold(64 << 10).
		// Verify every table's blocks against their checksums when it is
		// opened (at start, and each table a flush or compaction writes):
		// a flipped bit stops the start with the table named, instead of
		// serving what it changed. Badger checks a table's index at every
		// open anyway. Checking blocks on each read too costs reads more
		// (README, Performance) and turns a damaged block into a key that
		// seems absent rather than an error, so it is off.
		WithChecksumVerificationMode(checksumMode)
	opts.TableSizeMultiplier = 1 // no With method
	return opts
}

// Open opens (creating if needed) the Badger store in opts.Dir and starts
// the value-log GC loop and the watcher (watch.go). A store another
// process has open is refused with ErrLocked (naming that process's pid
// when its pid file tells). A store whose previous process died without
// closing it is recovered by Badger's replay of its write-ahead log, and
// Open logs one warning saying so. A store whose files are damaged or
// incomplete (inspect.go), or that holds fewer commits than its witness
// records, is refused with a *DamagedError naming the file; Badger never
// gets to delete a table file of such a store. A filesystem with too
// little room to open the store is refused with an error matching ErrFull.
func Open(ctx context.Context, opts Options) (*Store, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kv: open: %w", err)
	}
	if opts.Dir == "" {
		return nil, errors.New("kv: open: Options.Dir is empty")
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	s := &Store{
		dir:          opts.Dir,
		synced:       durable.NewChecker(opts.Dir),
		log:          logger,
		witness:      opts.Witness,
		quota:        opts.ExtraReserve >= 0,
		extraReserve: max(opts.ExtraReserve, 0),
		blog:         newBadgerLogger(logger),
		stopGC:       make(chan struct{}),
		gcDone:       make(chan struct{}),
		kick:         make(chan struct{}, 1),
		lostCh:       make(chan struct{}),
		stopWatch:    make(chan struct{}),
		watchDone:    make(chan struct{}),

		writes:     make(chan *writeReq, maxBatch),
		stopCommit: make(chan struct{}),
		commitDone: make(chan struct{}),
	}
	s.health.Store(&Health{State: StateOK, Since: time.Now()})
	for _, l := range []*logEvery{&s.spaceLog, &s.probeLog, &s.walLog, &s.witnessLog} {
		*l = logEvery{min: time.Minute, max: 10 * time.Minute}
	}
	bopts := BadgerOptions(opts.Dir, logger).WithLogger(s.blog)
	if opts.MemTableSize > 0 {
		bopts = bopts.WithMemTableSize(opts.MemTableSize)
	}
	if len(opts.EncryptionKey) > 0 {
		// Badger needs the index cache (set above) when encryption is on.
		s.encKey = bytes.Clone(opts.EncryptionKey)
		rotation := opts.EncryptionKeyRotation
		if rotation <= 0 {
			rotation = defaultKeyRotation
		}
		bopts = bopts.WithEncryptionKey(s.encKey).WithEncryptionKeyRotationDuration(rotation)
	}
	s.bopts = bopts
	s.walSpan = walSpan(bopts)
	s.opts = opts
	s.opts.EncryptionKey = nil
	s.opts.Logger = logger

	db, err := s.openDB(ctx)
	if err != nil {
		clear(s.encKey)
		return nil, err
	}
	s.db = db
	if err := s.startWAL(); err != nil {
		s.abandon()
		if diskspace.IsFull(err) {
			return nil, fmt.Errorf("kv: open store %s: preallocating its write-ahead log: %w", s.dir, ErrFull)
		}
		return nil, fmt.Errorf("kv: open store %s: %w", s.dir, err)
	}
	if err := s.synced.Prepare(); err != nil {
		logger.Warn("kv: the check that each commit's sync held is weaker or not ready (internal/durable)", "dir", s.dir, "err", err)
	}
	s.checkSpace()
	if s.witness != "" {
		if err := writeWitness(s.witness, s.commits.Load()); err != nil {
			logger.Warn("kv: cannot write the store's witness file", "path", s.witness, "err", err)
		} else {
			s.witnessed.Store(s.commits.Load())
		}
	}

	go s.commitLoop()
	go s.watch()
	interval := opts.GCInterval
	if interval == 0 {
		interval = defaultGCInterval
	}
	if interval > 0 {
		go s.gcLoop(interval)
	} else {
		close(s.gcDone)
	}
	return s, nil
}

// openDB checks the store's files (inspect.go) and the room to open it,
// opens Badger, checks that every table opened and that the store holds
// at least the commits its witness records, and reads the commit counter.
func (s *Store) openDB(ctx context.Context) (*badger.DB, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("kv: open: %w", err)
	}
	dir := s.dir
	var wit *witnessFile
	if s.witness != "" {
		var err error
		if wit, err = readWitness(s.witness); err != nil {
			return nil, err
		}
	}
	existed := s.opts.MustExist || (wit != nil && wit.Commits > 0)
	in, err := inspect(dir, existed, len(s.encKey) > 0, 15*s.bopts.MemTableSize/100+64<<10)
	if err != nil {
		return nil, err
	}
	if err := atomicfile.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("kv: open: create store dir: %w", err)
	}
	if err := s.roomToOpen(); err != nil {
		return nil, err
	}
	prevPID, unclean := lockHolder(dir)

	s.blog.takeIgnored()
	db, err := openBadger(s.bopts)
	if err != nil {
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("kv: open store %s: %w", dir, ErrKeyMismatch)
		}
		if errors.Is(err, badger.ErrInvalidEncryptionKey) {
			return nil, fmt.Errorf("kv: open store %s: the encryption key must be 16, 24 or 32 bytes", dir)
		}
		// Badger flattens the flock error into a string; match its text.
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, lockedError(dir)
		}
		return nil, openError(dir, err)
	}
	refuse := func(err error) (*badger.DB, error) {
		if cerr := db.Close(); cerr != nil {
			s.log.Warn("kv: closing a refused store", "dir", dir, "err", cerr)
		}
		if in.files != nil {
			if rerr := in.rollback(dir); rerr != nil {
				s.log.Warn("kv: could not put the refused store's files back as they were; the originals are in "+filepath.Join(dir, KeptDir), "dir", dir, "err", rerr)
			}
		}
		return nil, err
	}
	if ignored := s.blog.takeIgnored(); len(ignored) > 0 {
		return refuse(&DamagedError{Dir: dir, File: filepath.Base(ignored[0]), Problem: fmt.Sprintf(
			"is damaged: it fails its checksum (%d tables do)", len(ignored))})
	}
	if unclean {
		s.log.Warn("kv: the store was not closed cleanly (its previous process died holding it); recovered it from the write-ahead log",
			"dir", dir, "previous_pid", prevPID)
	}
	// Badger creates the write-ahead log file of its first memtable in Open
	// without syncing the directory: sync it, so that the writes
	// acknowledged from now on do not depend on a directory entry that a
	// power loss could drop.
	if err := atomicfile.SyncDir(dir); err != nil {
		return refuse(fmt.Errorf("kv: open store %s: %w", dir, err))
	}
	commits, err := readCommits(db)
	if err != nil {
		return refuse(fmt.Errorf("kv: open store %s: %w", dir, err))
	}
	if wit != nil && commits < wit.Commits {
		problem := fmt.Sprintf("holds %d commits, but its witness %s recorded %d on %s: %d committed changes are missing (a lost or truncated MANIFEST, lost tables, or a damaged write-ahead log)",
			commits, s.witness, wit.Commits, wit.WrittenAt.Format(time.RFC3339), wit.Commits-commits)

		damaged := &DamagedError{Dir: dir, Problem: problem}
		if in.torn != "" {
			damaged.File, damaged.Problem = in.torn, in.tornAt+"; the store "+problem
		}
		return refuse(damaged)
	}
	if len(in.keptTables)+len(in.keptLogs) > 0 {
		keep := filepath.Join(dir, KeptDir)
		for _, name := range append(in.keptTables, in.keptLogs...) {
			os.Remove(filepath.Join(keep, name))
		}
		os.Remove(keep) // only if empty: an earlier start's kept files stay
		if len(in.keptTables) > 0 {
			s.log.Info("kv: removed table files that a flush or compaction left when the process died", "dir", dir, "files", len(in.keptTables))
		}
	}
	s.commits.Store(commits)
	return db, nil
}

// openBadger is badger.Open, with a panic on this goroutine (Badger
// asserts instead of failing on some damage) turned into an error.
func openBadger(o badger.Options) (db *badger.DB, err error) {
	defer func() {
		if v := recover(); v != nil {
			db, err = nil, fmt.Errorf("badger panicked opening the store: %v", v)
		}
	}()
	return badger.Open(o)
}

// roomToOpen refuses to open when the filesystem cannot hold what opening
// writes: the tables Badger flushes the replayed write-ahead logs into and
// a new log. Badger writes tables through a mapping, so a full filesystem
// would crash it (SIGBUS) instead of failing.
func (s *Store) roomToOpen() error {
	if !s.quota {
		return nil
	}
	fids, sizes, err := memFids(s.dir)
	if err != nil {
		return fmt.Errorf("kv: open store %s: %w", s.dir, err)
	}
	need := s.walSpan + 1<<20
	for _, fid := range fids {
		need += min(sizes[fid], s.walSpan)
	}
	sp, err := spaceOf(s.dir)
	if err != nil {
		return nil // not knowing is no reason to refuse
	}
	s.avail.Store(sp.Avail)
	if sp.Avail < need {
		return fmt.Errorf("kv: open store %s: its filesystem has %s free, and opening it needs %s (to replay %d write-ahead logs into tables and start a new one): %w",
			s.dir, diskspace.Bytes(sp.Avail), diskspace.Bytes(need), len(fids), ErrFull)
	}
	return nil
}

// Close stops the watcher and the GC loop and closes Badger, waiting for
// in-flight transactions, then records the final commit count in the
// witness. It is idempotent. A store whose writes failed, whose
// filesystem no longer takes a synced write (a probe file, at Close), or
// whose filesystem lacks the room to flush its memtables into tables, is left
// for the process's exit to release without flushing (Badger would hang
// retrying the flush, or crash on a full filesystem): the write-ahead log
// holds every acknowledged write, and the next Open replays it.
func (s *Store) Close() error {
	s.stopOnce.Do(func() {
		// Before mu: a reopen under way, and the GC, take it.
		close(s.stopWatch)
		<-s.watchDone
		close(s.stopGC)
		<-s.gcDone
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	// No Update is in flight (each holds mu): the committer is idle or
	// skipping abandoned requests.
	close(s.stopCommit)
	<-s.commitDone
	s.synced.Close()
	defer clear(s.encKey)
	if s.isLost {
		return nil
	}
	if reason := s.unsafeToFlush(); reason != "" {
		s.log.Warn("kv: not closing the store cleanly: "+reason+"; the write-ahead log holds every acknowledged write and the next start replays it", "dir", s.dir)
		return nil
	}
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("kv: close store %s: %w", s.dir, err)
	}
	s.dropPreparedWAL()
	if s.witness != "" {
		if c := s.commits.Load(); c != s.witnessed.Load() {
			if err := writeWitness(s.witness, c); err != nil {
				s.log.Warn("kv: cannot update the store's witness file at close", "path", s.witness, "err", err)
			}
		}
	}
	return nil
}

// unsafeToFlush says why Badger's Close (which flushes the memtables into
// tables) must not run, or "".
func (s *Store) unsafeToFlush() string {
	if h := s.health.Load(); h.State == StateFailed {
		return "its writes failed (" + oneLine(h.Err.Error()) + ")"
	}
	// A filesystem that turned read-only (or fails) since the last
	// commit: Badger's flush would retry for ever, and Close never
	// return. Other errors (too many open files, say) say nothing of the
	// filesystem: the flush goes on.
	if err := probeWritable(s.dir); errors.Is(err, unix.EROFS) || errors.Is(err, unix.EIO) {
		return "its filesystem does not take a synced write (" + oneLine(err.Error()) + ")"
	}
	if !s.quota {
		return ""
	}
	sp, err := spaceOf(s.dir)
	if err != nil {
		return ""
	}
	need := int64(s.bopts.NumMemtables)*s.bopts.MemTableSize + 1<<20
	if sp.Avail < need {
		return fmt.Sprintf("its filesystem has %s free, less than the %s that flushing its memtables may take", diskspace.Bytes(sp.Avail), diskspace.Bytes(need))
	}
	return ""
}

// abandon closes Badger after Open failed past opening it.
func (s *Store) abandon() {
	if err := s.db.Close(); err != nil {
		s.log.Warn("kv: closing the store after a failed open", "dir", s.dir, "err", err)
	}
	clear(s.encKey)
}

// acquire takes the read side of mu; the caller must call s.mu.RUnlock.
func (s *Store) acquire() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("kv: %w", ErrClosed)
	}
	if s.isLost {
		err := s.health.Load().Err
		s.mu.RUnlock()
		return err
	}
	return nil
}

// View runs fn in a read-only snapshot transaction.
func (s *Store) View(ctx context.Context, fn func(tx *Txn) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv: view: %w", err)
	}
	tx := &Txn{db: s.db}
	defer func() {
		tx.done = true // also on panic
		if tx.txn != nil {
			discard(tx.txn)
		}
	}()
	return fn(tx)
}

// discard is Txn.Discard, which panics when an iterator was left open (a
// read that panicked half-way, see guard): the panic that matters is
// that one, already on its way.
func discard(txn *badger.Txn) {
	defer func() { _ = recover() }()
	txn.Discard()
}

// Check is a health probe: it runs a cheap read transaction.
func (s *Store) Check(ctx context.Context) error {
	return s.View(ctx, func(tx *Txn) error {
		_, err := tx.badger().Get([]byte("h/check"))
		if err != nil && !errors.Is(err, badger.ErrKeyNotFound) {
			return fmt.Errorf("kv: check: %w", err)
		}
		return nil
	})
}

func (s *Store) gcLoop(interval time.Duration) {
	defer close(s.gcDone)
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.stopGC:
			return
		case <-t.C:
			s.runGC()
		}
	}
}

// runGC rewrites value-log files until Badger finds nothing worth
// rewriting. It writes: not while writes are refused.
func (s *Store) runGC() {
	if err := s.acquire(); err != nil {
		return
	}
	defer s.mu.RUnlock()
	defer func() {
		if v := recover(); v != nil {
			s.fail(fmt.Errorf("value-log GC panicked: %v", v))
		}
	}()
	for range maxGCRuns {
		if s.refuseWrites() != nil {
			return
		}
		select {
		case <-s.stopGC:
			return
		default:
		}
		err := s.db.RunValueLogGC(gcDiscardRatio)
		switch {
		case err == nil:
			continue
		case errors.Is(err, badger.ErrNoRewrite), errors.Is(err, badger.ErrRejected):
			return
		default:
			s.log.Warn("kv: value-log GC failed", "dir", s.dir, "err", err)
			return
		}
	}
}
