package kv

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Syncing what a commit wrote. Badger with SyncWrites syncs two files at
// every commit: the memtable's write-ahead log and the value log's current
// file, the second even when the commit put nothing in it (values under
// ValueThreshold stay in the LSM tree: all but the largest secrets). On
// ext4 every fsync ends in a flush of the device's write cache, so each
// commit waited for two device flushes. The store opens Badger without
// SyncWrites and syncs itself (LogSync): the write-ahead log at every
// commit, the value log only after a commit that put a value in it. On
// this 2-core machine (ext4 on a virtual disk) that took raw Badger
// commits of 16 writers from 3.5–4.3k/s to 5.2–5.5k/s, p50 from 3.5–4.4
// to 2.7 ms; Updates of small records (BenchmarkUpdateWriters, three
// alternating runs each) from 15.6–20.6k/s to 18.4–22.4k/s at 16 writers
// and from 35–37k/s to 39–42k/s at 64. The daemon's write requests spend
// their time on CPU (HTTP, HSM, JSON), not waiting for the disk: they did
// not move measurably.
//
// Badger writes both logs through shared mappings; fdatasync on a
// descriptor of the same file writes back the pages dirtied through them
// (Linux keeps one page cache per file). Everything else Badger writes —
// tables, MANIFEST, KEYREGISTRY, a new log file's directory entry — it
// syncs whatever SyncWrites says. What Badger writes on its own through
// the logs is its value-log GC's rewrite, which then deletes the file it
// rewrote: runGC keeps an iterator open across it (Badger defers the
// deletion while one is), syncs every log, and only then lets go.

// LogSync syncs the logs of the Badger store in dir (opened with
// BadgerOptions). It is safe for concurrent use.
type LogSync struct {
	dir string

	mu  sync.Mutex
	fid int      // the write-ahead log Badger writes now; 0: not found yet
	f   *os.File // open on it
}

// NewLogSync returns a LogSync for the store in dir; it finds the logs at
// its first Sync.
func NewLogSync(dir string) *LogSync { return &LogSync{dir: dir} }

// Sync makes what the last commit wrote durable: the write-ahead log
// Badger writes now (and any it moved past since the last Sync), and with
// valueLog the value log's two newest files (a commit moves to a new one
// at most once: a transaction is far smaller than a value-log file). Call
// it after Commit returns, before the commit is acknowledged.
func (l *LogSync) Sync(valueLog bool) error {
	if err := l.syncWAL(); err != nil {
		return err
	}
	if !valueLog {
		return nil
	}
	return l.syncNewest(".vlog", 2)
}

// syncWAL syncs the write-ahead log Badger writes now. Badger numbers its
// logs in order and moves to the next one before a write that would not
// fit: a log whose successor has content is behind, and is synced before
// the successor (the last commit may have gone to either).
func (l *LogSync) syncWAL() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		if err := l.find(); err != nil {
			return err
		}
	}
	for {
		fi, err := os.Stat(memPath(l.dir, l.fid+1))
		if errors.Is(err, fs.ErrNotExist) || err == nil && fi.Size() == 0 {
			break // no successor, or one prepared (watch.go) but not yet used
		}
		if err != nil {
			return fmt.Errorf("kv: sync the write-ahead log: %w", err)
		}
		if err := fdatasync(l.f); err != nil {
			return fmt.Errorf("kv: sync the write-ahead log %s: %w", l.f.Name(), err)
		}
		if err := l.open(l.fid + 1); err != nil {
			return err
		}
	}
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("kv: sync the write-ahead log %s: %w", l.f.Name(), err)
	}
	return nil
}

// find opens the newest write-ahead log with content (an empty one is
// prepared for Badger's next move, watch.go); the caller holds mu.
func (l *LogSync) find() error {
	fids, sizes, err := memFids(l.dir)
	if err != nil {
		return fmt.Errorf("kv: find the write-ahead log: %w", err)
	}
	for i := len(fids) - 1; i >= 0; i-- {
		if sizes[fids[i]] > 0 {
			return l.open(fids[i])
		}
	}
	return fmt.Errorf("kv: find the write-ahead log: none in %s", l.dir)
}

// open makes fid the log in use; the caller holds mu.
func (l *LogSync) open(fid int) error {
	f, err := os.Open(memPath(l.dir, fid))
	if err != nil {
		return fmt.Errorf("kv: open the write-ahead log: %w", err)
	}
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.fid = f, fid
	return nil
}

// SyncAll syncs every write-ahead and value log in the directory: after
// writes Badger made in bulk (a backup's Load, the value-log GC).
func (l *LogSync) SyncAll() error {
	if err := l.syncNewest(memFileExt, -1); err != nil {
		return err
	}
	return l.syncNewest(".vlog", -1)
}

// syncNewest syncs the n newest files with the extension ext (all, for n
// < 0), oldest first.
func (l *LogSync) syncNewest(ext string, n int) error {
	entries, err := os.ReadDir(l.dir)
	if err != nil {
		return fmt.Errorf("kv: sync the logs: %w", err)
	}
	var fids []int
	for _, e := range entries {
		if base, ok := strings.CutSuffix(e.Name(), ext); ok {
			if fid, err := strconv.Atoi(base); err == nil {
				fids = append(fids, fid)
			}
		}
	}
	sort.Ints(fids)
	if n >= 0 && len(fids) > n {
		fids = fids[len(fids)-n:]
	}
	for _, fid := range fids {
		p := filepath.Join(l.dir, fmt.Sprintf("%06d%s", fid, ext))
		if ext == memFileExt {
			p = memPath(l.dir, fid)
		}
		f, err := os.Open(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue // Badger removed it meanwhile (flushed, or collected)
		}
		if err != nil {
			return fmt.Errorf("kv: sync the logs: %w", err)
		}
		err = fdatasync(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("kv: sync %s: %w", p, err)
		}
	}
	return nil
}

// Close releases the open log; a later Sync finds the logs again (after
// the store reopened Badger).
func (l *LogSync) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f != nil {
		l.f.Close()
	}
	l.f, l.fid = nil, 0
}

func fdatasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if err != unix.EINTR {
			return err
		}
	}
}
