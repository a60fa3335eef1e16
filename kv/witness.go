package kv

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
)

// The witness: what a complete store must contain, kept outside it.
//
// Every commit also writes the key commitsKey: the number of commits the
// store has made since it was created (a batch of Updates is one commit).
// The witness file, outside Badger's directory, records that the store
// exists and a number of commits it made:
//
//	{"format":1,"commits":1234,"written_at":"2026-05-01T12:00:00Z"}
//
// written atomically (internal/atomicfile) when the store opens, every
// witnessEvery while commits are made, and at Close. Open refuses a store
// that holds fewer commits than its witness records: one that lost its
// MANIFEST or part of it, tables, or write-ahead log entries, which Badger
// would otherwise open as if nothing were missing.
//
// The witness is a lower bound: it trails the store by at most
// witnessEvery plus one write of the file (seconds), because writing it at
// each commit would add fsyncs to every write. A loss confined to the
// commits of those last seconds is not seen by this check; the
// write-ahead log scan at Open (inspect.go) sees damage with acknowledged
// entries after it, and a loss of anything older is always seen. A witness
// behind the store is never wrong: the store only ever has more.

const (
	witnessFormat = 1
	// commitsKey holds the commit counter: 8 bytes, big-endian. Its "m/"
	// prefix is outside the record and index key spaces (keys.go).
	commitsKey = "m/commits"
)

// witnessFile is the JSON of the witness file.
type witnessFile struct {
	Format    int       `json:"format"`
	Commits   uint64    `json:"commits"`
	WrittenAt time.Time `json:"written_at"`
}

// readWitness reads path; (nil, nil) when it does not exist.
func readWitness(path string) (*witnessFile, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kv: read witness %s: %w", path, err)
	}
	var w witnessFile
	if err := json.Unmarshal(b, &w); err != nil {
		return nil, fmt.Errorf("kv: witness %s is not a store witness (%v)", path, err)
	}
	if w.Format != witnessFormat {
		return nil, fmt.Errorf("kv: witness %s has format %d; this coffer reads format %d", path, w.Format, witnessFormat)
	}
	return &w, nil
}

// writeWitness records commits in path.
func writeWitness(path string, commits uint64) error {
	b, err := json.Marshal(witnessFile{Format: witnessFormat, Commits: commits, WrittenAt: time.Now().UTC().Truncate(time.Second)})
	if err != nil {
		return err
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("kv: write witness: %w", err)
	}
	return nil
}

// updateWitness writes the witness when commits were made since it was
// last written. A failure (a full or read-only filesystem) is logged,
// rate-limited: the witness on disk stays a valid lower bound.
func (s *Store) updateWitness() {
	c := s.commits.Load()
	if c == s.witnessed.Load() {
		return
	}
	if err := writeWitness(s.witness, c); err != nil {
		logRepeated(s.log, &s.witnessLog, slog.LevelWarn, "kv: cannot update the store's witness file (it keeps recording an older count, still a valid lower bound)", "path", s.witness, "err", err)
		return
	}
	s.witnessed.Store(c)
}

// readCommits reads the commit counter of db (0 in a store without one).
func readCommits(db *badger.DB) (uint64, error) {
	var n uint64
	err := db.View(func(txn *badger.Txn) error {
		item, err := txn.Get([]byte(commitsKey))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return item.Value(func(v []byte) error {
			if len(v) != 8 {
				return fmt.Errorf("commit counter of %d bytes, want 8", len(v))
			}
			n = binary.BigEndian.Uint64(v)
			return nil
		})
	})
	if err != nil {
		return 0, fmt.Errorf("kv: read commit counter: %w", err)
	}
	return n, nil
}

func encodeCommits(n uint64) []byte {
	return binary.BigEndian.AppendUint64(make([]byte, 0, 8), n)
}

// Commits returns the number of commits the store has made since it was
// created.
func (s *Store) Commits() uint64 { return s.commits.Load() }
