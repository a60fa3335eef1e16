package audit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/klauspost/compress/gzip"
)

const (
	currentName = "audit.log"
	headName    = "head"
	// maxLine bounds one line when reading; the log writes far shorter ones.
	maxLine = 1 << 20
)

// rotatedName is the name a full audit.log gets: its first seq.
func rotatedName(firstSeq uint64) string {
	return fmt.Sprintf("audit-%020d.log", firstSeq)
}

// gzSuffix ends the name of an archived (compressed) rotated file.
const gzSuffix = ".gz"

// logFile is one file of the log.
type logFile struct {
	path     string
	firstSeq uint64 // from the name (rotated) or the first line (current); 0: unknown or empty
	gz       bool   // archived: gzip-compressed
}

// parseRotated reads a rotated file's name: its first seq and whether it
// is archived.
func parseRotated(name string) (seq uint64, gz, ok bool) {
	num, ok := strings.CutPrefix(name, "audit-")
	if !ok {
		return 0, false, false
	}
	num, gz = strings.CutSuffix(num, gzSuffix)
	num, ok = strings.CutSuffix(num, ".log")
	n, err := strconv.ParseUint(num, 10, 64)
	if !ok || err != nil || len(num) != 20 {
		return 0, false, false
	}
	return n, gz, true
}

// listFiles returns the log's files in order: rotated ones by first seq
// (archived or not: while a file is being archived both may exist, and the
// uncompressed one is listed), then audit.log if it exists.
func listFiles(dir string) ([]logFile, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read audit directory: %w", err)
	}
	bySeq := map[uint64]logFile{}
	for _, e := range ents {
		n, gz, ok := parseRotated(e.Name())
		if !ok || !e.Type().IsRegular() {
			continue
		}
		if prev, dup := bySeq[n]; dup && !prev.gz {
			continue
		}
		bySeq[n] = logFile{path: filepath.Join(dir, e.Name()), firstSeq: n, gz: gz}
	}
	out := make([]logFile, 0, len(bySeq)+1)
	for _, f := range bySeq {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].firstSeq < out[j].firstSeq })
	cur := filepath.Join(dir, currentName)
	if _, err := os.Stat(cur); err == nil {
		first, err := firstSeqOf(cur)
		if err != nil {
			return nil, err
		}
		out = append(out, logFile{path: cur, firstSeq: first})
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return out, nil
}

// firstSeqOf reads the seq of a file's first line; 0 when it is empty or
// the line is not one the log wrote.
func firstSeqOf(path string) (uint64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	buf := make([]byte, 64)
	n, err := io.ReadFull(f, buf)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return 0, fmt.Errorf("audit log: %w", err)
	}
	seq, _ := peekSeq(buf[:n])
	return seq, nil
}

// lineReader reads the lines of a sequence of open files, in order,
// archived ones decompressed.
type lineReader struct {
	files []*os.File
	names []string
	gz    []bool
	i     int
	br    *bufio.Reader
	// live: an incomplete last line of the last file is being written,
	// not torn; stop before it.
	live bool
}

// openFiles opens files (in order) for reading. The caller closes the
// reader.
func openFiles(files []logFile, live bool) (*lineReader, error) {
	lr := &lineReader{live: live}
	for _, f := range files {
		fh, err := os.Open(f.path)
		if err != nil {
			lr.Close()
			return nil, fmt.Errorf("audit log: %w", err)
		}
		lr.files = append(lr.files, fh)
		lr.names = append(lr.names, filepath.Base(f.path))
		lr.gz = append(lr.gz, f.gz)
	}
	return lr, nil
}

// Close closes every file.
func (lr *lineReader) Close() {
	for _, f := range lr.files {
		f.Close()
	}
	lr.files = nil
}

// errTorn is an incomplete last line.
var errTorn = errors.New("incomplete last line")

// errLong is a line over maxLine.
var errLong = errors.New("line too long")

// next returns the next line without its newline (valid until the next
// call), or io.EOF. A file that does not end in a newline gives errTorn
// (unless live and it is the last file, which ends the reading).
func (lr *lineReader) next() ([]byte, error) {
	for lr.i < len(lr.files) {
		if lr.br == nil {
			var r io.Reader = lr.files[lr.i]
			if lr.gz[lr.i] {
				zr, err := gzip.NewReader(r)
				if err != nil {
					return nil, fmt.Errorf("audit log %s: %w", lr.names[lr.i], err)
				}
				r = zr
			}
			lr.br = bufio.NewReaderSize(r, 64<<10)
		}
		line, err := lr.br.ReadSlice('\n')
		if err == nil {
			return line[:len(line)-1], nil
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			return lr.readLong(line)
		}
		if !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("audit log %s: %w", lr.names[lr.i], err)
		}
		if len(line) > 0 {
			if lr.live && lr.i == len(lr.files)-1 {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("audit log %s: %w", lr.names[lr.i], errTorn)
		}
		lr.i++
		lr.br = nil
	}
	return nil, io.EOF
}

// readLong finishes a line longer than the reader's buffer.
func (lr *lineReader) readLong(start []byte) ([]byte, error) {
	buf := append([]byte(nil), start...)
	for len(buf) <= maxLine {
		more, err := lr.br.ReadSlice('\n')
		buf = append(buf, more...)
		switch {
		case err == nil:
			return buf[:len(buf)-1], nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if lr.live && lr.i == len(lr.files)-1 {
				return nil, io.EOF
			}
			return nil, fmt.Errorf("audit log %s: %w", lr.names[lr.i], errTorn)
		default:
			return nil, fmt.Errorf("audit log %s: %w", lr.names[lr.i], err)
		}
	}
	return nil, fmt.Errorf("audit log %s: %w", lr.names[lr.i], errLong)
}

// tail is what Open needs of the end of the log.
type tail struct {
	lastLine []byte // the last complete line; nil: the log is empty
	seq      uint64 // its seq (inferred when it does not parse)
	torn     int64  // bytes after the last newline of the last file
	tornPath string
}

// readTail finds the last complete line of the log and any torn bytes
// after it.
func readTail(files []logFile) (tail, error) {
	var t tail
	for i := len(files) - 1; i >= 0; i-- {
		var (
			data [][]byte
			torn int64
			err  error
		)
		if files[i].gz {
			data, err = lastLinesGz(files[i].path, 64)
		} else {
			data, torn, err = lastLines(files[i].path, 64)
		}
		if err != nil {
			return t, err
		}
		if i == len(files)-1 && torn > 0 {
			t.torn, t.tornPath = torn, files[i].path
		}
		if len(data) == 0 {
			continue
		}
		t.lastLine = data[len(data)-1]
		// The last line may not parse (edited): count back to one that does.
		for back := 0; back < len(data); back++ {
			if seq, ok := peekSeq(data[len(data)-1-back]); ok {
				t.seq = seq + uint64(back)
				return t, nil
			}
		}
		t.seq = files[i].firstSeq + uint64(len(data)) - 1
		return t, nil
	}
	return t, nil
}

// lastLines returns up to n complete lines from the end of the file at
// path and the number of bytes after its last newline.
func lastLines(path string, n int) ([][]byte, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, 0, fmt.Errorf("audit log: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, 0, fmt.Errorf("audit log: %w", err)
	}
	size := st.Size()
	for window := int64(64 << 10); ; window *= 2 {
		window = min(window, size)
		buf := make([]byte, window)
		if _, err := f.ReadAt(buf, size-window); err != nil && !errors.Is(err, io.EOF) {
			return nil, 0, fmt.Errorf("audit log: %w", err)
		}
		end := bytes.LastIndexByte(buf, '\n') + 1 // 0: no newline in the window
		var lines [][]byte
		if end > 0 {
			lines = bytes.Split(buf[:end-1], []byte("\n"))
			if window < size {
				lines = lines[1:] // may start in the middle of a line
			}
		}
		if len(lines) >= n || window == size {
			if len(lines) > n {
				lines = lines[len(lines)-n:]
			}
			return lines, int64(len(buf) - end), nil
		}
	}
}

// lastLinesGz returns up to n lines from the end of an archived file,
// which is read whole (it cannot be read backwards). It ends in a
// newline, as the archiver only compresses whole files.
func lastLinesGz(path string, n int) ([][]byte, error) {
	ring := make([][]byte, 0, n)
	next := 0
	err := eachLine(logFile{path: path, gz: true}, func(line []byte) bool {
		if len(ring) < n {
			ring = append(ring, bytes.Clone(line))
		} else {
			ring[next] = append(ring[next][:0], line...)
		}
		next = (next + 1) % n
		return true
	})
	if err != nil {
		return nil, err
	}
	if len(ring) == n {
		ring = append(ring[next:], ring[:next]...)
	}
	return ring, nil
}

// eachLine calls fn with every line of a file, in order, until fn
// returns false. A file that ends in the middle of a line is an error.
func eachLine(f logFile, fn func(line []byte) bool) error {
	lr, err := openFiles([]logFile{f}, false)
	if err != nil {
		return err
	}
	defer lr.Close()
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if !fn(line) {
			return nil
		}
	}
}

// readHead reads the head file: a copy of the last checkpoint line. nil
// when there is none.
func readHead(dir string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(dir, headName))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit head: %w", err)
	}
	return bytes.TrimSuffix(b, []byte("\n")), nil
}

// writeHead replaces the head file atomically and durably.
func writeHead(dir string, line []byte) error {
	tmp := filepath.Join(dir, headName+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("audit head: %w", err)
	}
	_, err = f.Write(append(line[:len(line):len(line)], '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(dir, headName))
	}
	if err == nil {
		err = syncDir(dir)
	}
	if err != nil {
		return fmt.Errorf("audit head: %w", err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// findLine returns the line with the given seq (a copy), or nil when the
// log has none.
func findLine(files []logFile, seq uint64) ([]byte, error) {
	lr, err := openFiles(files[startFile(files, seq):], false)
	if err != nil {
		return nil, err
	}
	defer lr.Close()
	for {
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		if s, ok := peekSeq(line); ok && s == seq {
			return append([]byte(nil), line...), nil
		}
	}
}

// startFile is the index of the file that holds seq, by the files' first
// seqs (0 when unknown).
func startFile(files []logFile, seq uint64) int {
	start := 0
	for i, f := range files {
		if f.firstSeq != 0 && f.firstSeq <= seq {
			start = i
		}
	}
	return start
}
