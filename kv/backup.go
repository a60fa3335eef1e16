package kv

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/dgraph-io/badger/v4"
)

// loadPendingWrites bounds the batches Load has in flight.
const loadPendingWrites = 16

// Backup writes a consistent snapshot of the whole store to w, in Badger's
// backup format (length-prefixed protobuf KV lists), in the clear: the
// caller encrypts it. Writes go on while it runs; the snapshot is the store
// as of the moment Backup starts. Close waits for a running Backup.
func (s *Store) Backup(ctx context.Context, w io.Writer) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv: backup: %w", err)
	}
	stream := s.db.NewStream()
	// Each stream goroutine reads in its own transaction; with one there
	// is one transaction, so one read timestamp for the whole backup.
	stream.NumGo = 1
	stream.LogPrefix = "kv.Backup"
	cw := &ctxWriter{ctx: ctx, w: w}
	if _, err := stream.Backup(cw, 0); err != nil {
		// Badger reports its own cancellation rather than why it stopped.
		if cw.err != nil {
			err = cw.err
		}
		return fmt.Errorf("kv: backup %s: %w", s.dir, err)
	}
	return nil
}

// Load reads a backup written by Backup from r into the store, which must
// be empty and must not be in use by anything else meanwhile (Updates wait).
// A failed Load leaves the store partly written: load into a fresh store
// and throw it away on error.
func (s *Store) Load(ctx context.Context, r io.Reader) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	s.gate.Lock()
	defer s.gate.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv: load: %w", err)
	}
	if err := s.refuseWrites(); err != nil {
		return err // Load writes
	}
	empty, err := s.empty()
	if err != nil {
		return err
	}
	if !empty {
		return fmt.Errorf("kv: load into %s: the store is not empty", s.dir)
	}
	if err := s.db.Load(ctxReader{ctx: ctx, r: r}, loadPendingWrites); err != nil {
		if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
			return fmt.Errorf("kv: load into %s: %w", s.dir, ctx.Err())
		}
		return fmt.Errorf("kv: load into %s: %w", s.dir, err)
	}
	// The backup's commit counter is the store's now.
	n, err := readCommits(s.db)
	if err != nil {
		return err
	}
	s.commits.Store(n)
	return nil
}

// empty reports whether the store holds no key at all.
func (s *Store) empty() (bool, error) {
	empty := true
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		it.Rewind()
		empty = !it.Valid()
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("kv: read %s: %w", s.dir, err)
	}
	return empty, nil
}

// ctxWriter stops a Badger stream (which takes no context) when ctx ends,
// and keeps the first error. Badger's Send calls are serial.
type ctxWriter struct {
	ctx context.Context
	w   io.Writer
	err error
}

func (c *ctxWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	if c.err = c.ctx.Err(); c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.err = err
	return n, err
}

// ctxReader stops a Badger load when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
