package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/klauspost/compress/gzip"
)

// ReasonPruned is the reason of an ActionPruned entry.
const ReasonPruned = "a rotated file was deleted to keep the audit directory within its size budget"

// archiveLevel is the gzip level of archived files: JSON lines compress
// about tenfold even at the fastest level, and the daemon's CPU is better
// spent on requests. The writer is klauspost/compress's gzip (a module
// Badger already brings): the same format, written 1.6 times as fast as
// compress/gzip's at this level (642 against 404 MB/s on audit-like lines
// here). After a write burst, archiving the rotated files was an eighth
// of the daemon's CPU while it served reads (bench, reads after writes).
const archiveLevel = gzip.BestSpeed

// Waits between the archiver's tries after a failure.
const (
	archiveRetryMin = time.Second
	archiveRetryMax = time.Minute
)

// kickArchiver asks the archiver for a pass (without waiting).
func (l *Log) kickArchiver() {
	select {
	case l.kick <- struct{}{}:
	default:
	}
}

// archive is the archiver goroutine: after each rotation (and at Open) it
// compresses the rotated files and deletes the oldest ones over
// MaxTotalSize. It stops when Close starts; what is left is done at the
// next Open.
func (l *Log) archive() {
	defer close(l.archDone)
	f := fault{what: "archive or prune the rotated audit files", min: archiveRetryMin, max: archiveRetryMax}
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	for {
		select {
		case <-l.closing:
			return
		case <-l.kick:
		case <-retry.C:
		}
		if err := l.archiveOnce(); err != nil {
			if errors.Is(err, errClosing) {
				return
			}
			f.fail(l.log, l.opts.Now(), err)
			retry.Reset(f.wait)
			continue
		}
		f.ok(l.log)
	}
}

// errClosing stops the archiver in the middle of a file.
var errClosing = errors.New("the log is closing")

// archiveOnce compresses every rotated file that is not yet, then prunes.
func (l *Log) archiveOnce() error {
	l.archMu.Lock()
	defer l.archMu.Unlock()
	dir := l.opts.Dir
	l.files.RLock()
	files, err := listFiles(dir)
	active := l.active
	l.files.RUnlock()
	if err != nil {
		return err
	}
	for _, f := range files {
		if f.gz || f.path == active || filepath.Base(f.path) == currentName {
			continue
		}
		if err := l.compress(f); err != nil {
			return err
		}
	}
	if l.opts.MaxTotalSize < 0 {
		return nil
	}
	return l.prune()
}

// compress replaces a rotated file by its archive: written to a temporary
// file, synced, renamed into place and the directory synced, and only
// then the uncompressed file removed.
func (l *Log) compress(f logFile) error {
	dst := f.path + gzSuffix
	if _, err := os.Stat(dst); err == nil {
		return l.removeFiles(f.path) // archived before a crash or an error
	}
	src, err := os.Open(f.path)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	defer src.Close()
	st, err := src.Stat()
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	tmp := dst + ".tmp"
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("archive: %w", err)
	}
	out, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("archive: %w", err)
	}
	zw, _ := gzip.NewWriterLevel(out, archiveLevel)
	zw.Name = filepath.Base(f.path)
	n, err := io.Copy(zw, &stopReader{r: src, stop: l.closing, pace: archivePace})
	if err == nil && n != st.Size() {
		err = fmt.Errorf("%s: read %d of %d bytes", f.path, n, st.Size())
	}
	if cerr := zw.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = out.Sync()
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, dst)
	}
	if err == nil {
		err = syncDir(l.opts.Dir)
	}
	if err != nil {
		os.Remove(tmp)
		if errors.Is(err, errClosing) {
			return err
		}
		return fmt.Errorf("archive %s: %w", filepath.Base(f.path), err)
	}
	return l.removeFiles(f.path)
}

// stopReader stops a copy when the log closes.
type stopReader struct {
	r    io.Reader
	stop <-chan struct{}
	// pace: before each read after the first, wait pace times as long as
	// the caller worked on the previous one (compressing it), so that the
	// archiver takes at most 1/(1+pace) of a CPU. A rotated file can wait;
	// the requests served meanwhile cannot (at full speed a 64 MiB file
	// took a core for about half a second, an eighth of a 2-core host's
	// capacity for a read scenario's whole measurement).
	pace     int
	returned time.Time
}

// archivePace is stopReader's pace for archives.
const archivePace = 3

func (s *stopReader) Read(p []byte) (int, error) {
	if s.pace > 0 && !s.returned.IsZero() {
		t := time.NewTimer(time.Duration(s.pace) * time.Since(s.returned))
		select {
		case <-s.stop:
			t.Stop()
			return 0, errClosing
		case <-t.C:
		}
	}
	select {
	case <-s.stop:
		return 0, errClosing
	default:
	}
	n, err := s.r.Read(p)
	s.returned = time.Now()
	return n, err
}

// removeFiles removes files (missing ones are fine) while no reader lists
// or opens files, and syncs the directory.
func (l *Log) removeFiles(paths ...string) error {
	l.files.Lock()
	var err error
	for _, p := range paths {
		if rerr := os.Remove(p); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
			err = errors.Join(err, rerr)
		}
	}
	l.files.Unlock()
	if serr := syncDir(l.opts.Dir); err == nil {
		err = serr
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// prune deletes the oldest rotated files while the log files are over
// MaxTotalSize. Each file is first recorded by an ActionPruned entry
// naming its entries and the hash the next one continues from, and a
// checkpoint signs the records: a file is deleted only after that.
// (One record per file: a crash in the middle of the deletions leaves a
// log whose start a record accounts for.)
func (l *Log) prune() error {
	l.files.RLock()
	files, err := listFiles(l.opts.Dir)
	active := l.active
	l.files.RUnlock()
	if err != nil {
		return err
	}
	var total int64
	sizes := make([]int64, len(files))
	for i, f := range files {
		st, err := os.Stat(f.path)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		sizes[i] = st.Size()
		total += st.Size()
	}
	var (
		del    []string
		events []Event
	)
	for i := 0; total > l.opts.MaxTotalSize && i+1 < len(files); i++ {
		f := files[i]
		if f.path == active || filepath.Base(f.path) == currentName {
			break
		}
		last, prev, err := boundary(files[i], files[i+1])
		if err != nil {
			return err
		}
		events = append(events, Event{Action: ActionPruned, Outcome: OutcomeOK, Reason: ReasonPruned,
			Target: map[string]string{
				TargetFirstSeq: strconv.FormatUint(f.firstSeq, 10),
				TargetLastSeq:  strconv.FormatUint(last, 10),
				TargetPrev:     prev,
				TargetFile:     filepath.Base(f.path),
			}})
		// Both forms, in case a crash left the uncompressed one too.
		plain := filepath.Join(l.opts.Dir, rotatedName(f.firstSeq))
		del = append(del, plain, plain+gzSuffix)
		total -= sizes[i]
	}
	if len(events) == 0 {
		return nil
	}
	if err := l.controlWith(context.Background(), ctlReq{kind: ctlPrune, events: events}); err != nil {
		if errors.Is(err, errLogClosed) {
			return errClosing
		}
		return fmt.Errorf("record the files to prune: %w", err)
	}
	return l.removeFiles(del...)
}

// boundary is the last seq of file f and the hash of its last line: from
// the first line of the file after it, or (when that is still empty) from
// f's own last line.
func boundary(f, next logFile) (last uint64, prev string, err error) {
	if next.firstSeq > f.firstSeq {
		var e struct {
			Seq  uint64 `json:"seq"`
			Prev string `json:"prev"`
		}
		err := eachLine(next, func(line []byte) bool {
			if jsonErr := json.Unmarshal(line, &e); jsonErr != nil {
				e.Seq = 0
			}
			return false
		})
		if err == nil && e.Seq == next.firstSeq && len(e.Prev) == 2*hashSize {
			return e.Seq - 1, e.Prev, nil
		}
	}
	var lines [][]byte
	if f.gz {
		lines, err = lastLinesGz(f.path, 1)
	} else {
		lines, _, err = lastLines(f.path, 1)
	}
	if err != nil {
		return 0, "", err
	}
	if len(lines) == 0 {
		return 0, "", fmt.Errorf("audit: %s is empty", f.path)
	}
	seq, ok := peekSeq(lines[0])
	if !ok || seq < f.firstSeq {
		return 0, "", fmt.Errorf("audit: the last line of %s is not an entry", f.path)
	}
	h := lineHash(lines[0])
	return seq, hex.EncodeToString(h[:]), nil
}
