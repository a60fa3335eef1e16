package kv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dgraph-io/badger/v4"

	"github.com/coffer-hsm/coffer/internal/diskspace"
)

// The watcher is one goroutine per store. Every spaceCheckEvery it reads
// the free space of the store's filesystem (statfs: the write path never
// does, it only adds what each commit wrote to an estimate, and asks for a
// check when the estimate reaches the reserve), makes sure the next
// write-ahead log file is preallocated, and writes the witness file when
// commits were made. After a failed write it probes the directory, backing
// off from probeFirst to probeMax, and reopens the store once a probe
// succeeds.

// Reserve sizes (see reserveFor).
const (
	// compactSlack bounds the room a compaction may take beyond the
	// tables it replaces, for a store larger than that: Badger writes a
	// compaction's new tables before it deletes the old ones, and its
	// largest compaction (level 0 into the base level) rewrites every
	// level-0 table (memtable-sized) with the base level's overlap.
	resumeMarginDiv = 32 // writes resume at reserve + reserve/32
)

// reserveFor is the room the store keeps free on its filesystem: what
// Badger writes after the last write it accepted before it can stop
// (flushing every memtable into a table: NumMemtables of them), what a
// compaction rewrites (at most the tables it reads: the smaller of the
// store's tables and level 0 plus the base level), two transactions in
// flight (the value log's head and the estimate's lag), plus extra (the
// caller's: the audit log's next file). lsm is the size of the store's
// tables.
func reserveFor(o badger.Options, lsm, extra int64) int64 {
	maxBatch := 15 * o.MemTableSize / 100
	flushes := int64(o.NumMemtables) * o.MemTableSize
	compaction := min(lsm, int64(o.NumLevelZeroTables)*o.MemTableSize+o.BaseLevelSize)
	return flushes + compaction + 2*maxBatch + extra
}

// walSpan is how much of each write-ahead log (memtable) file is
// preallocated: Badger moves to a new memtable once its log reaches
// MemTableSize, so a log holds at most that, one transaction (at most 15%
// of it) and the zeroed header after the last entry. The file itself is
// twice MemTableSize, sparse.
func walSpan(o badger.Options) int64 {
	return o.MemTableSize + 2*(15*o.MemTableSize/100) + 1<<20
}

const memFileExt = ".mem"

func memPath(dir string, fid int) string {
	return filepath.Join(dir, fmt.Sprintf("%05d%s", fid, memFileExt))
}

// memFids lists the fids of dir's write-ahead log files, ascending, with
// their sizes.
func memFids(dir string) ([]int, map[int]int64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	var fids []int
	sizes := make(map[int]int64)
	for _, e := range entries {
		name := e.Name()
		if !strings.HasSuffix(name, memFileExt) {
			continue
		}
		fid, err := strconv.Atoi(strings.TrimSuffix(name, memFileExt))
		if err != nil {
			continue
		}
		info, err := e.Info()
		if err != nil {
			continue
		}
		fids = append(fids, fid)
		sizes[fid] = info.Size()
	}
	sort.Ints(fids)
	return fids, sizes, nil
}

// startWAL preallocates the log Badger writes now (the highest fid) and
// readies the next; called after Badger opened.
func (s *Store) startWAL() error {
	if s.walSpan <= 0 {
		return nil
	}
	fids, _, err := memFids(s.dir)
	if err != nil {
		return fmt.Errorf("kv: list write-ahead logs: %w", err)
	}
	if len(fids) == 0 {
		return nil // in-memory or not yet created: prepareWAL finds it
	}
	active := fids[len(fids)-1]
	s.nextMemFid = active + 1
	if err := diskspace.PreallocateFile(memPath(s.dir, active), 0, s.walSpan, true); err != nil && !errors.Is(err, diskspace.ErrUnsupported) {
		return err
	}
	return s.prepareWAL()
}

// prepareWAL makes sure the write-ahead log file Badger will move to next
// exists, empty, with its blocks allocated beyond its end (Badger extends
// it over them: its writes through the mapping need no new block), and
// that a file Badger moved to is allocated. An error matching ENOSPC means
// the next memtable could not be backed.
func (s *Store) prepareWAL() error {
	if s.walSpan <= 0 || s.nextMemFid == 0 {
		return nil
	}
	for range 16 { // a bound, not an expected count
		next := memPath(s.dir, s.nextMemFid)
		fi, err := os.Stat(next)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			f, err := os.OpenFile(next, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
			if errors.Is(err, fs.ErrExist) {
				continue // Badger made it meanwhile
			}
			if err != nil {
				return fmt.Errorf("kv: prepare write-ahead log: %w", err)
			}
			err = diskspace.Preallocate(f, 0, s.walSpan, true)
			f.Close()
			if errors.Is(err, diskspace.ErrUnsupported) {
				s.walSpan = 0 // not on this filesystem: the reserve is all there is
				os.Remove(next)
				return nil
			}
			if err != nil {
				os.Remove(next)
				return err
			}
			return nil
		case err != nil:
			return fmt.Errorf("kv: prepare write-ahead log: %w", err)
		case fi.Size() == 0:
			return nil // ready, not in use yet
		default:
			// Badger moved to it. It was ours, preallocated (or Badger
			// won the race to create it): make sure, and ready the next.
			if err := diskspace.PreallocateFile(next, 0, s.walSpan, true); err != nil && !errors.Is(err, diskspace.ErrUnsupported) {
				return err
			}
			s.nextMemFid++
		}
	}
	return nil
}

// dropPreparedWAL removes the prepared log file if Badger never used it
// (an empty .mem file stops Badger's Open).
func (s *Store) dropPreparedWAL() {
	if s.nextMemFid == 0 {
		return
	}
	p := memPath(s.dir, s.nextMemFid)
	if fi, err := os.Stat(p); err == nil && fi.Size() == 0 {
		os.Remove(p)
	}
}

// checkSpace reads the filesystem's room and moves the store in or out of
// StateFull. It runs on the watcher, or on the committer when its
// estimate reaches the reserve.
func (s *Store) checkSpace() {
	if !s.quota {
		return
	}
	s.spaceMu.Lock()
	defer s.spaceMu.Unlock()
	s.written.Store(0) // what is written from now on counts on top of this reading
	sp, err := spaceOf(s.dir)
	if err != nil {
		logRepeated(s.log, &s.spaceLog, slog.LevelWarn, "kv: cannot read the free space of the store's filesystem", "dir", s.dir, "err", err)
		return
	}
	s.avail.Store(sp.Avail)
	lsm, _ := s.db.Size()
	reserve := reserveFor(s.bopts, lsm, s.extraReserve)
	s.reserve.Store(reserve)
	state := s.health.Load().State
	switch {
	case sp.Avail < reserve:
		s.setHealth(StateFull, &FullError{Dir: s.dir, Avail: sp.Avail, Reserve: reserve})
	case state == StateFull && sp.Avail >= reserve+reserve/resumeMarginDiv:
		s.setHealth(StateOK, nil)
	}
}

// wrote adds a commit's bytes to the estimate and checks the space when
// the estimate reaches the reserve.
func (s *Store) wrote(n int64) {
	if !s.quota {
		return
	}
	if s.written.Add(n) > s.avail.Load()-s.reserve.Load() {
		s.checkSpace()
	}
}

// watch is the watcher goroutine.
func (s *Store) watch() {
	defer close(s.watchDone)
	t := time.NewTicker(spaceCheckEvery)
	defer t.Stop()
	var lastWitness time.Time
	backoff := probeFirst
	var nextProbe time.Time
	for {
		select {
		case <-s.stopWatch:
			return
		case <-t.C:
		case <-s.kick:
		}
		switch s.health.Load().State {
		case StateFailed:
			if time.Now().Before(nextProbe) {
				continue
			}
			err := probeWritable(s.dir)
			if err == nil {
				// Reopening replays the write-ahead log into tables:
				// only with the room for it (else the reopen fails and
				// the store is lost).
				err = s.roomToOpen()
			}
			if err != nil {
				logRepeated(s.log, &s.probeLog, slog.LevelWarn, "kv: the store's directory is still not writable", "dir", s.dir, "err", err, "next_try_in", backoff.String())
				nextProbe = time.Now().Add(backoff)
				backoff = min(2*backoff, probeMax)
				continue
			}
			backoff, nextProbe = probeFirst, time.Time{}
			s.reopen()
			continue
		case StateLost:
			continue
		}
		s.checkSpace()
		if err := s.prepareWAL(); err != nil {
			if diskspace.IsFull(err) {
				s.setHealth(StateFull, &FullError{Dir: s.dir, Avail: s.avail.Load(), Reserve: s.reserve.Load()})
			} else {
				logRepeated(s.log, &s.walLog, slog.LevelWarn, "kv: cannot prepare the next write-ahead log", "dir", s.dir, "err", err)
			}
		}
		if s.witness != "" && time.Since(lastWitness) >= witnessEvery {
			lastWitness = time.Now()
			s.updateWitness()
		}
	}
}

// reopen closes Badger and opens it again after storage failed and
// became writable again. Everything waits meanwhile.
func (s *Store) reopen() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	s.gate.Lock()
	defer s.gate.Unlock()
	closed := make(chan error, 1)
	db := s.db
	go func() { closed <- db.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			s.log.Warn("kv: closing the store for a reopen", "dir", s.dir, "err", err)
		}
	case <-time.After(reopenTimeout):
		s.lost(fmt.Errorf("closing the store for a reopen did not finish within %s", reopenTimeout))
		return
	}
	// The committer is idle (no Update holds mu): the sync check opens
	// its witness again, on whatever filesystem the directory is now.
	s.synced.Close()
	ctx, cancel := context.WithTimeout(context.Background(), reopenTimeout)
	defer cancel()
	ndb, err := s.openDB(ctx)
	if err != nil {
		s.lost(err)
		return
	}
	s.db = ndb
	s.stateMu.Lock()
	s.health.Store(&Health{State: StateOK, Since: time.Now()})
	s.stateMu.Unlock()
	s.log.Info("kv: reopened the store after a failed write; it accepts writes again", "dir", s.dir, "commits", s.commits.Load())
}

// lost marks the store lost; the caller holds mu for writing.
func (s *Store) lost(err error) {
	s.isLost = true
	s.db = nil
	s.setHealth(StateLost, &FailedError{Dir: s.dir, Err: err})
	close(s.lostCh)
}

// Lost is closed when the store stops serving for good: it could not be
// reopened after a failed write. Its owner should exit, to be started
// again once the filesystem is repaired.
func (s *Store) Lost() <-chan struct{} { return s.lostCh }
