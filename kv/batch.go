package kv

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync/atomic"

	"github.com/dgraph-io/badger/v4"
)

// Group commit. Every Update is a request to one committer goroutine, which
// takes the requests waiting (at most maxBatch), runs their fns one after
// another in one Badger transaction and commits it once: one fsync for the
// batch instead of one per Update, and no conflicts, since nothing else
// writes. Each fn writes to a write set of its own, merged into the batch
// when fn returns nil and dropped when it fails or panics; a fn reads the
// writes of the successful fns before it. Updates are thus serializable in
// the order the committer runs them, and an Update returns nil only after
// the commit holding its writes is synced.
//
// Badger refuses a transaction beyond MaxBatchCount entries or MaxBatchSize
// bytes (ErrTxnTooBig). The committer counts what each request adds and,
// before a request would take the batch past either, commits the requests
// before it and starts a new transaction with that request's writes: its fn
// read exactly the state just committed, so it need not run again. A request
// whose own writes exceed the limits fails in fn, at the write, as it would
// in a Badger transaction of its own.

// maxBatch bounds the requests of one batch, and so the wait of the last.
const maxBatch = 128

// writeReq is one Update waiting for the committer.
type writeReq struct {
	ctx   context.Context
	fn    func(tx *Txn) error
	state atomic.Int32 // reqQueued, then reqTaken by the committer or reqAbandoned by Update
	done  chan result  // buffered: the committer never waits for the caller
}

const (
	reqQueued int32 = iota
	reqTaken
	reqAbandoned
)

// result is what Update returns, or the panic it re-raises.
type result struct {
	err      error
	panicked bool
	panicVal any
}

// Update runs fn in a read-write transaction and commits it. fn sees the
// writes of every Update acknowledged before it was called and of those
// committed with it; when Update returns nil the writes are synced to disk.
// An error (or a panic) from fn leaves no write behind and is returned (or
// re-raised) as is. While the store refuses writes (see Health), an
// Update whose fn writes returns why (an error matching ErrFull or
// ErrFailed) and leaves nothing behind; one whose fn only reads succeeds.
//
// fn runs on the committer goroutine, one fn at a time, between others in
// the same batch: it must be quick and do no I/O of its own (no HSM calls,
// no network), take no lock that a caller of Update may hold, and touch
// nothing outside tx but its caller's variables, which it may set (Update's
// return orders those writes before the caller's reads). fn must not call
// Update or View. If ctx ends before fn has started, fn does not run and
// Update returns ctx's error; once fn has started, Update waits for the
// commit.
func (s *Store) Update(ctx context.Context, fn func(tx *Txn) error) error {
	if err := s.acquire(); err != nil {
		return err
	}
	defer s.mu.RUnlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("kv: update: %w", err)
	}
	r := &writeReq{ctx: ctx, fn: fn, done: make(chan result, 1)}
	select {
	case s.writes <- r:
	case <-ctx.Done():
		return fmt.Errorf("kv: update: %w", ctx.Err())
	}
	var res result
	select {
	case res = <-r.done:
	case <-ctx.Done():
		if r.state.CompareAndSwap(reqQueued, reqAbandoned) {
			return fmt.Errorf("kv: update: %w", ctx.Err())
		}
		res = <-r.done // fn has started: its outcome stands
	}
	if res.panicked {
		panic(res.panicVal)
	}
	return res.err
}

// commitLoop is the committer goroutine: it runs until stopCommit closes.
func (s *Store) commitLoop() {
	defer close(s.commitDone)
	reqs := make([]*writeReq, 0, maxBatch)
	for {
		var first *writeReq
		select {
		case <-s.stopCommit:
			return
		case first = <-s.writes:
		}
		reqs = append(reqs[:0], first)
	drain:
		for len(reqs) < maxBatch {
			select {
			case r := <-s.writes:
				reqs = append(reqs, r)
			default:
				break drain
			}
		}
		s.gate.Lock()
		s.runBatch(reqs)
		s.gate.Unlock()
		clear(reqs)
	}
}

// member is a request whose answer waits for the commit of its group.
type member struct {
	req *writeReq
	err error // fn's error; nil if its writes are in the group
}

// group is one Badger transaction of a batch: the snapshot the fns read and
// the merged writes of those that succeeded.
type group struct {
	btx     *badger.Txn
	ws      *writeSet
	members []member
	touched Commit // the tables its members wrote records of
}

func (s *Store) newGroup(lim limits) *group {
	return &group{btx: s.db.NewTransaction(true), ws: newWriteSet(lim)}
}

// counterCost is what the commit counter (witness.go) costs in each
// transaction, kept free of the requests' writes.
var counterCost = (&writeSet{lim: limits{valueThreshold: 1 << 30}}).cost(commitsKey, op{val: make([]byte, 8)})

// runBatch runs reqs in order, in as few Badger transactions as fit, and
// answers each.
func (s *Store) runBatch(reqs []*writeReq) {
	opts := s.db.Opts() // VLogPercentile is 0: the value threshold is fixed
	lim := limits{maxCount: s.db.MaxBatchCount() - 1, maxSize: s.db.MaxBatchSize() - counterCost, valueThreshold: opts.ValueThreshold}
	var g *group
	for _, r := range reqs {
		if !r.state.CompareAndSwap(reqQueued, reqTaken) {
			continue // its Update has returned ctx's error
		}
		if err := r.ctx.Err(); err != nil {
			r.done <- result{err: fmt.Errorf("kv: update: %w", err)}
			continue
		}
		if g == nil {
			g = s.newGroup(lim)
		}
		tx := &Txn{txn: g.btx, w: newWriteSet(lim), below: g.ws, maxValue: opts.ValueLogFileSize}
		res := s.call(r.fn, tx)
		switch {
		case res.panicked:
			r.done <- res
		case res.err != nil || tx.w.count == 0:
			// Nothing to write. If fn read only committed state, its
			// answer stands now; if it read an earlier request's writes,
			// it waits for them to be committed.
			if !tx.sawBelow {
				r.done <- res
				continue
			}
			g.members = append(g.members, member{req: r, err: res.err})
		default:
			if count, size := g.ws.mergedCost(tx.w); !lim.fits(count, size) {
				// tx.w fits alone (Txn.write checked), not with the
				// group: commit the group, then this request's writes go
				// first in a new transaction, whose snapshot is what fn
				// read.
				err := s.commitGroup(g)
				g = s.newGroup(lim)
				if err != nil {
					r.done <- result{err: err} // fn read writes that were not committed
					continue
				}
			}
			g.ws.merge(tx.w)
			g.touched.merge(tx.touched)
			g.members = append(g.members, member{req: r})
		}
	}
	if g != nil {
		_ = s.commitGroup(g)
	}
}

// call runs fn, turning a panic into a result the caller re-raises.
func (s *Store) call(fn func(tx *Txn) error, tx *Txn) (res result) {
	defer func() {
		tx.done = true
		if v := recover(); v != nil {
			s.log.Error("kv: update function panicked; re-raised in its caller", "stack", string(debug.Stack()))
			res = result{panicked: true, panicVal: v}
		}
	}()
	return result{err: fn(tx)}
}

// commitGroup writes g's merged writes in its transaction, with the
// commit counter, commits (one fsync) and answers its members: with their
// own result once the commit is synced, or all with the commit's error.
// A failed commit stops all writes (health.go).
func (s *Store) commitGroup(g *group) error {
	defer discard(g.btx)
	var err error
	if g.ws.count > 0 {
		if err = s.refuseWrites(); err == nil {
			n := s.commits.Load() + 1
			if err = s.write(g.btx, g.ws, n); err == nil {
				s.commits.Store(n)
				s.wrote(g.ws.size + walEntryMaxHead*g.ws.count)
			} else {
				if !errors.Is(err, badger.ErrTxnTooBig) {
					s.fail(err)
				}
				err = fmt.Errorf("kv: commit: %w", err)
			}
		}
	}
	if err == nil && s.onCommit != nil && (len(g.touched.Changed) > 0 || len(g.touched.Created) > 0) {
		// Before any member's Update returns: whoever reads after an
		// acknowledged write finds the caches told already.
		s.onCommit(g.touched)
	}
	for _, m := range g.members {
		res := result{err: m.err}
		if err != nil {
			res.err = err
		}
		m.req.done <- res
	}
	return err
}

// commit is Badger's Commit; tests replace it to make commits fail.
var commit = (*badger.Txn).Commit

// write applies ws and the commit counter n to btx and commits it. A
// panic in Badger becomes an error.
func (s *Store) write(btx *badger.Txn, ws *writeSet, n uint64) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("badger panicked committing: %v", v)
		}
	}()
	if err := applyWrites(btx, ws); err != nil {
		return err
	}
	if err := btx.Set([]byte(commitsKey), encodeCommits(n)); err != nil {
		return err
	}
	if err := commit(btx); err != nil {
		return err
	}
	// Badger's fsync said yes; make sure ext4 had not aborted its journal
	// under it (internal/durable).
	return s.synced.Confirm()
}

func applyWrites(btx *badger.Txn, ws *writeSet) error {
	for _, k := range ws.keys {
		o := ws.ops[k]
		var err error
		if o.del {
			err = btx.Delete([]byte(k))
		} else {
			err = btx.Set([]byte(k), o.val)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
