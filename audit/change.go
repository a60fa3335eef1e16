package audit

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"

	"github.com/klauspost/compress/gzip"
)

// lineChange is what resume reads of a line: whether it is a checkpoint,
// and its change seq.
func lineChange(line []byte) (change uint64, checkpoint bool) {
	// Most lines carry neither: skip decoding them. (A target key
	// "change" passes this test; the decoding below reads the top-level
	// member only.)
	isCP := bytes.Contains(line, []byte(`"type":"`+TypeCheckpoint+`"`))
	if !isCP && !bytes.Contains(line, []byte(`"change":`)) {
		return 0, false
	}
	var e struct {
		Type   string `json:"type"`
		Change uint64 `json:"change"`
	}
	if json.Unmarshal(line, &e) != nil {
		return 0, false
	}
	return e.Change, e.Type == TypeCheckpoint
}

// lastChange is the highest change seq in the log: that of the last
// checkpoint line (which carries the highest before it) or of an event
// after it. It reads the files back from the end only as far as the last
// checkpoint; a log without one is read whole.
func lastChange(files []logFile) (uint64, error) {
	var best uint64
	for i := len(files) - 1; i >= 0; i-- {
		change, found, err := fileChange(files[i], backChunk)
		if err != nil {
			return 0, err
		}
		best = max(best, change)
		if found {
			return best, nil
		}
	}
	return best, nil
}

// backChunk is how much of a file lastChange reads at a time.
const backChunk = 64 << 10

// fileChange is the highest change seq of a file's lines from its last
// checkpoint line on (found: there is one), or of all of them. Bytes after
// the last newline (a torn line) are not read.
func fileChange(f logFile, chunk int) (change uint64, found bool, err error) {
	fh, err := os.Open(f.path)
	if err != nil {
		return 0, false, fmt.Errorf("audit log: %w", err)
	}
	defer fh.Close()
	if f.gz {
		zr, err := gzip.NewReader(fh)
		if err != nil {
			return 0, false, fmt.Errorf("audit log %s: %w", f.path, err)
		}
		return changeForward(zr)
	}
	st, err := fh.Stat()
	if err != nil {
		return 0, false, fmt.Errorf("audit log: %w", err)
	}
	return changeBack(fh, st.Size(), chunk)
}

// changeBack is fileChange of a file that can be read backwards.
func changeBack(r io.ReaderAt, size int64, chunk int) (change uint64, found bool, err error) {
	err = scanBack(r, size, chunk, func(line []byte) bool {
		c, cp := lineChange(line)
		change = max(change, c)
		found = cp
		return !cp
	})
	return change, found, err
}

// changeForward is fileChange of a file read from its start (an archived
// one, which ends in a newline).
func changeForward(r io.Reader) (change uint64, found bool, err error) {
	br := bufio.NewReaderSize(r, 64<<10)
	for {
		line, err := br.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(line) > 0 {
				return 0, false, fmt.Errorf("audit log: %w", errTorn)
			}
			return change, found, nil
		}
		if err != nil {
			return 0, false, fmt.Errorf("audit log: %w", err)
		}
		if c, cp := lineChange(line[:len(line)-1]); cp {
			change, found = c, true
		} else {
			change = max(change, c)
		}
	}
}

// scanBack calls fn with the complete lines of r (size bytes), the last
// first, until fn returns false. Bytes after the last newline are not a
// line. It reads chunk bytes at a time (more for a longer line).
func scanBack(r io.ReaderAt, size int64, chunk int, fn func(line []byte) bool) error {
	var (
		pos  = size
		rest []byte // the start of the data not yet split: a line that begins before pos
		torn = true // still looking for the last newline
	)
	for pos > 0 {
		n := int64(chunk)
		if n > pos {
			n = pos
		}
		pos -= n
		data := make([]byte, int(n)+len(rest))
		if _, err := r.ReadAt(data[:n], pos); err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("audit log: %w", err)
		}
		copy(data[n:], rest)
		if torn {
			end := bytes.LastIndexByte(data, '\n')
			if end < 0 {
				rest = nil
				continue
			}
			data, torn = data[:end+1], false
		}
		// data ends in a newline; the lines after another newline in it
		// are complete, the first one is only if the file starts there.
		for {
			i := bytes.LastIndexByte(data[:len(data)-1], '\n')
			if i < 0 {
				break
			}
			if !fn(data[i+1 : len(data)-1]) {
				return nil
			}
			data = data[:i+1]
		}
		rest = data
	}
	if len(rest) > 0 {
		fn(rest[:len(rest)-1])
	}
	return nil
}

// LastChangeIn is the highest change seq of the log in dir, read from its
// files without opening the log (for tools that work on a stopped
// daemon's state); 0 when dir holds no log.
func LastChangeIn(dir string) (uint64, error) {
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	files, err := listFiles(dir)
	if err != nil {
		return 0, fmt.Errorf("audit: %w", err)
	}
	return lastChange(files)
}
