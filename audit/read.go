package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
)

// MaxEntries is the most entries one Entries call returns.
const MaxEntries = 1000

// Entries returns up to limit lines (as written) with a seq after after,
// in order, and the seq of the last line written. Lines that are not valid
// JSON are skipped (Verify reports them).
func (l *Log) Entries(ctx context.Context, after uint64, limit int) ([]json.RawMessage, uint64, error) {
	if limit <= 0 || limit > MaxEntries {
		limit = MaxEntries
	}
	if err := l.Flush(ctx); err != nil {
		return nil, 0, err
	}
	last := l.LastSeq()
	lr, err := l.openForReading(after + 1)
	if err != nil {
		return nil, 0, err
	}
	defer lr.Close()
	out := []json.RawMessage{}
	for len(out) < limit {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, 0, err
		}
		seq, ok := peekSeq(line)
		if !ok || seq <= after || !json.Valid(line) {
			continue
		}
		if seq > last {
			break
		}
		out = append(out, json.RawMessage(append([]byte(nil), line...)))
		if err := ctx.Err(); err != nil {
			return nil, 0, err
		}
	}
	return out, last, nil
}

// Tail returns the last n lines written (at most MaxEntries) and the seq
// of the last one.
func (l *Log) Tail(ctx context.Context, n int) ([]json.RawMessage, uint64, error) {
	if n <= 0 || n > MaxEntries {
		n = MaxEntries
	}
	if err := l.Flush(ctx); err != nil {
		return nil, 0, err
	}
	last := l.LastSeq()
	return l.Entries(ctx, last-min(last, uint64(n)), n)
}

// openForReading opens the files from the one that holds seq on, in
// audit.log from the closest mark before seq. The files stay readable
// even if audit.log is rotated meanwhile.
func (l *Log) openForReading(seq uint64) (*lineReader, error) {
	l.files.RLock()
	defer l.files.RUnlock()
	files, err := listFiles(l.opts.Dir)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	files = files[startFile(files, seq):]
	lr, err := openFiles(files, true)
	if err != nil || len(files) != 1 || filepath.Base(files[0].path) != currentName {
		return lr, err
	}
	l.marksMu.Lock()
	i := sort.Search(len(l.marks), func(i int) bool { return l.marks[i].seq > seq })
	var off int64
	if i > 0 {
		off = l.marks[i-1].offset
	}
	l.marksMu.Unlock()
	if off > 0 {
		if _, err := lr.files[0].Seek(off, io.SeekStart); err != nil {
			lr.Close()
			return nil, fmt.Errorf("audit: %w", err)
		}
	}
	return lr, nil
}

// Verify checks the whole log as it is on disk now (see the package
// Verify), with the keys of opts.Keys.
func (l *Log) Verify(ctx context.Context) (Report, error) {
	if l.opts.Keys == nil {
		return Report{}, errors.New("audit: no verification keys")
	}
	keys, err := l.opts.Keys()
	if err != nil {
		return Report{}, fmt.Errorf("audit: verification keys: %w", err)
	}
	if err := l.Flush(ctx); err != nil {
		return Report{}, err
	}
	l.files.RLock()
	// head first: the checkpoint it names is on disk before head is.
	head, err := readHead(l.opts.Dir)
	var lr *lineReader
	if err == nil {
		var files []logFile
		if files, err = listFiles(l.opts.Dir); err == nil {
			lr, err = openFiles(files, true)
		}
	}
	l.files.RUnlock()
	if err != nil {
		return Report{}, fmt.Errorf("audit: %w", err)
	}
	defer lr.Close()
	return verify(ctx, lr, head, keys, true), nil
}
