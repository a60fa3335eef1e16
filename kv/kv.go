package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
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
}

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
		WithLogger(badgerLogger{logger}).
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
		WithValueThreshold(64 << 10)
	opts.TableSizeMultiplier = 1 // no With method
	return opts
}

// Open opens (creating if needed) the Badger store in opts.Dir and starts
// the value-log GC loop. A store another process has open is refused with
// ErrLocked (naming that process's pid when its pid file tells). A store
// whose previous process died without closing it is recovered by Badger's
// replay of its write-ahead log, and Open logs one warning saying so.
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
	if err := atomicfile.MkdirAll(opts.Dir, 0o700); err != nil {
		return nil, fmt.Errorf("kv: open: create store dir: %w", err)
	}
	prevPID, unclean := lockHolder(opts.Dir)

	bopts := BadgerOptions(opts.Dir, logger)
	if opts.MemTableSize > 0 {
		bopts = bopts.WithMemTableSize(opts.MemTableSize)
	}

	var encKey []byte
	if len(opts.EncryptionKey) > 0 {
		// Badger needs the index cache (set above) when encryption is on.
		encKey = bytes.Clone(opts.EncryptionKey)
		rotation := opts.EncryptionKeyRotation
		if rotation <= 0 {
			rotation = defaultKeyRotation
		}
		bopts = bopts.WithEncryptionKey(encKey).WithEncryptionKeyRotationDuration(rotation)
	}

	db, err := badger.Open(bopts)
	if err != nil {
		clear(encKey)
		if errors.Is(err, badger.ErrEncryptionKeyMismatch) {
			return nil, fmt.Errorf("kv: open store %s: %w", opts.Dir, ErrKeyMismatch)
		}
		if errors.Is(err, badger.ErrInvalidEncryptionKey) {
			return nil, fmt.Errorf("kv: open store %s: the encryption key must be 16, 24 or 32 bytes", opts.Dir)
		}
		// Badger flattens the flock error into a string; match its text.
		if strings.Contains(err.Error(), "Cannot acquire directory lock") {
			return nil, lockedError(opts.Dir)
		}
		return nil, fmt.Errorf("kv: open store %s: %w", opts.Dir, err)
	}
	if unclean {
		logger.Warn("kv: the store was not closed cleanly (its previous process died holding it); recovered it from the write-ahead log",
			"dir", opts.Dir, "previous_pid", prevPID)
	}
	// Badger creates the write-ahead log file of its first memtable in Open
	// without syncing the directory: sync it, so that the writes
	// acknowledged from now on do not depend on a directory entry that a
	// power loss could drop.
	if err := atomicfile.SyncDir(opts.Dir); err != nil {
		db.Close()
		return nil, fmt.Errorf("kv: open store %s: %w", opts.Dir, err)
	}

	s := &Store{
		db:     db,
		dir:    opts.Dir,
		log:    logger,
		encKey: encKey,
		stopGC: make(chan struct{}),
		gcDone: make(chan struct{}),

		writes:     make(chan *writeReq, maxBatch),
		stopCommit: make(chan struct{}),
		commitDone: make(chan struct{}),
	}
	go s.commitLoop()
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

// Close stops the GC loop and closes Badger, waiting for in-flight
// transactions. It is idempotent.
func (s *Store) Close() error {
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
	close(s.stopGC)
	<-s.gcDone
	err := s.db.Close()
	clear(s.encKey)
	if err != nil {
		return fmt.Errorf("kv: close store %s: %w", s.dir, err)
	}
	return nil
}

// acquire takes the read side of mu; the caller must call s.mu.RUnlock.
func (s *Store) acquire() error {
	s.mu.RLock()
	if s.closed {
		s.mu.RUnlock()
		return fmt.Errorf("kv: %w", ErrClosed)
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
			tx.txn.Discard()
		}
	}()
	return fn(tx)
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

// runGC rewrites value-log files until Badger finds nothing worth rewriting.
func (s *Store) runGC() {
	for range maxGCRuns {
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

// badgerLogger routes Badger's logging to slog, dropping INFO and DEBUG.
type badgerLogger struct{ l *slog.Logger }

func (b badgerLogger) Errorf(f string, args ...any) {
	b.l.Error(strings.TrimSpace(fmt.Sprintf(f, args...)), "component", "badger")
}

func (b badgerLogger) Warningf(f string, args ...any) {
	b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, args...)), "component", "badger")
}

func (badgerLogger) Infof(string, ...any)  {}
func (badgerLogger) Debugf(string, ...any) {}
