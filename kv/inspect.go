package kv

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/pb"
	"github.com/dgraph-io/badger/v4/y"
	"google.golang.org/protobuf/proto"

	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
	"github.com/coffer-hsm/coffer/internal/diskspace"
)

// Before Badger opens a store, Open checks its files, because Badger
// itself takes damage badly: without a MANIFEST it starts an empty store
// and deletes every table file; with a truncated one it deletes the tables
// it no longer lists; a damaged table footer or a truncated table panics
// in a goroutine of its own (a stack dump, and no way to recover); a
// damaged write-ahead log entry ends the replay there, silently dropping
// every later entry; a missing KEYREGISTRY leaves encrypted files without
// their keys. inspect refuses each of these with a *DamagedError naming
// the file. What Badger is about to change it keeps in KeptDir until the
// witness says nothing was lost: a hard link to every table file that
// Badger deletes as unreferenced, and copies of the MANIFEST and of every
// write-ahead log that Badger replays (and truncates, and deletes once
// flushed).

// ErrDamaged: the store's files are damaged or incomplete (the error is a
// *DamagedError).
var ErrDamaged = errors.New("the store is damaged or incomplete")

// DamagedError names the damaged file and what is wrong with it, in one
// line.
type DamagedError struct {
	Dir     string
	File    string // relative to Dir; "" for the store as a whole
	Problem string
}

func (e *DamagedError) Error() string {
	if e.File == "" {
		return fmt.Sprintf("kv: store %s %s", e.Dir, e.Problem)
	}
	return fmt.Sprintf("kv: store %s: %s %s", e.Dir, e.File, e.Problem)
}

func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// KeptDir is the directory, inside the store's, where Open keeps what
// Badger's open changes (see inspect): removed once the store proved
// whole, kept when it did not.
const KeptDir = "kept"

const (
	tableExt        = ".sst"
	walHeaderSize   = 20      // a write-ahead log's key id and IV
	walMaxKey       = 1 << 16 // Badger's bound on an entry's key
	walEntryMaxHead = 22      // meta, user meta, three uvarints
)

// inspection is what inspect found.
type inspection struct {
	fresh  bool                // nothing stored yet
	tables map[uint64]struct{} // listed by the MANIFEST
	// keptTables and keptLogs are what was put in KeptDir this time:
	// links to tables the MANIFEST does not list; copies of the MANIFEST
	// and the write-ahead logs.
	keptTables, keptLogs []string
	// torn names a write-ahead log whose replay stops before its data
	// ends (within the slack a torn write may leave), saying where: the
	// suspect when the witness finds commits missing.
	torn, tornAt string
	// files are the store's files before Badger opened it, with their
	// sizes (rollback).
	files map[string]int64
}

// inspect checks dir's files before Badger opens them. existed says that a
// store is known to have been here (its key or witness file exists);
// encrypted that it is encrypted at rest. walSlack is how much data may
// follow a write-ahead log's last valid entry and still be the torn tail
// of a transaction never acknowledged.
func inspect(dir string, existed, encrypted bool, walSlack int64) (*inspection, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		if existed {
			return nil, &DamagedError{Dir: dir, Problem: "is missing, but a store existed there (its key or witness file is still in the state directory)"}
		}
		return &inspection{fresh: true}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("kv: inspect store %s: %w", dir, err)
	}
	var (
		haveManifest, haveRegistry bool
		tableFiles                 = map[uint64]string{}
		mems                       []string
	)
	for _, e := range entries {
		name := e.Name()
		switch {
		case name == badger.ManifestFilename:
			haveManifest = true
		case name == badger.KeyRegistryFileName:
			haveRegistry = true
		case strings.HasPrefix(name, probePrefix):
			os.Remove(filepath.Join(dir, name)) // a probe a crash left
		case strings.HasSuffix(name, tableExt):
			id, err := strconv.ParseUint(strings.TrimSuffix(name, tableExt), 10, 64)
			if err == nil {
				tableFiles[id] = name
			}
		case strings.HasSuffix(name, memFileExt):
			mems = append(mems, name)
		}
	}
	sort.Strings(mems)
	// An empty write-ahead log (the one prepareWAL readies, or one whose
	// creation a crash interrupted) stops Badger's Open: it holds nothing.
	var liveMems []string
	for _, name := range mems {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Size() == 0 {
			if err := os.Remove(p); err != nil {
				return nil, fmt.Errorf("kv: inspect store %s: %w", dir, err)
			}
			continue
		}
		liveMems = append(liveMems, name)
	}
	if !haveManifest && len(tableFiles) == 0 && len(liveMems) == 0 {
		if existed {
			return nil, &DamagedError{Dir: dir, Problem: "holds no store files (no MANIFEST, no tables, no write-ahead log), but a store existed there (its key or witness file is still in the state directory)"}
		}
		return &inspection{fresh: true}, nil
	}
	if !haveManifest {
		return nil, &DamagedError{Dir: dir, File: badger.ManifestFilename, Problem: fmt.Sprintf(
			"is missing while %d table files and %d write-ahead logs are there: without it Badger would open an empty store and delete them", len(tableFiles), len(liveMems))}
	}
	mf, err := readManifest(dir)
	if err != nil {
		return nil, err
	}
	in := &inspection{tables: make(map[uint64]struct{}, len(mf.Tables)), files: map[string]int64{}}
	for _, e := range entries {
		if fi, err := os.Stat(filepath.Join(dir, e.Name())); err == nil && fi.Mode().IsRegular() {
			in.files[e.Name()] = fi.Size()
		}
	}
	var missing []uint64
	for id := range mf.Tables {
		in.tables[id] = struct{}{}
		if _, ok := tableFiles[id]; !ok {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return nil, &DamagedError{Dir: dir, File: tableName(missing[0]), Problem: fmt.Sprintf(
			"is listed in MANIFEST but missing (%d of the %d tables it lists are)", len(missing), len(mf.Tables))}
	}
	if encrypted && !haveRegistry {
		return nil, &DamagedError{Dir: dir, File: badger.KeyRegistryFileName, Problem: "is missing: it holds the keys that encrypt the store's tables and logs"}
	}
	ids := make([]uint64, 0, len(mf.Tables))
	for id := range mf.Tables {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		if problem := checkTableFooter(filepath.Join(dir, tableName(id))); problem != "" {
			return nil, &DamagedError{Dir: dir, File: tableName(id), Problem: problem}
		}
	}
	walEnds := make(map[string]int64, len(liveMems))
	for _, name := range liveMems {
		problem, stop, end, err := scanWAL(filepath.Join(dir, name), walSlack)
		if err != nil {
			return nil, fmt.Errorf("kv: inspect store %s: %w", dir, err)
		}
		if problem != "" {
			return nil, &DamagedError{Dir: dir, File: name, Problem: problem}
		}
		walEnds[name] = end
		if end > stop && in.torn == "" {
			in.torn, in.tornAt = name, walDamage(stop, end)
		}
	}
	// Tables the MANIFEST does not list: a flush or compaction that a
	// crash interrupted leaves some, and Badger deletes them. So would a
	// lost or truncated MANIFEST: keep links until the store proves whole.
	var orphans []uint64
	for id := range tableFiles {
		if _, ok := in.tables[id]; !ok {
			orphans = append(orphans, id)
		}
	}
	slices.Sort(orphans)
	if len(orphans) == 0 && len(liveMems) == 0 {
		return in, nil // a clean store: Badger changes nothing it needs
	}
	keep := filepath.Join(dir, KeptDir)
	if err := os.MkdirAll(keep, 0o700); err != nil {
		return nil, fmt.Errorf("kv: inspect store %s: %w", dir, err)
	}
	for _, id := range orphans {
		name := tableFiles[id]
		err := os.Link(filepath.Join(dir, name), filepath.Join(keep, name))
		if errors.Is(err, fs.ErrExist) {
			continue // kept by an earlier refused start: not ours to remove
		}
		if err != nil {
			return nil, fmt.Errorf("kv: inspect store %s: keep unreferenced table %s: %w", dir, name, err)
		}
		in.keptTables = append(in.keptTables, name)
	}
	logs := append([]string{badger.ManifestFilename}, liveMems...)
	for _, name := range logs {
		n := int64(-1) // all of the MANIFEST
		if end, ok := walEnds[name]; ok {
			n = end // a log up to its data, not its zeroed rest
		}
		copied, err := copyPrefix(filepath.Join(dir, name), filepath.Join(keep, name), n)
		if err != nil {
			return nil, fmt.Errorf("kv: inspect store %s: keep a copy of %s: %w", dir, name, err)
		}
		if copied {
			in.keptLogs = append(in.keptLogs, name)
		}
	}
	return in, nil
}

// rollback undoes what Badger's open of a refused store did, from what
// inspect kept: the MANIFEST and write-ahead logs as they were (Badger
// truncates the logs it replays and deletes them once flushed), the
// tables it deleted as unreferenced, without the tables and logs this
// open made. The store is then as it was before the start, so that every
// start (and coffer store check) finds the same damage, and the copies
// kept for it go.
func (in *inspection) rollback(dir string) error {
	keep := filepath.Join(dir, KeptDir)
	var errs []error
	for _, name := range in.keptLogs {
		tmp := filepath.Join(dir, "."+name+".rollback")
		if _, err := copyPrefix(filepath.Join(keep, name), tmp, -1); err != nil {
			errs = append(errs, err)
			continue
		}
		// A log was copied up to its data: its zeroed rest comes back as
		// a hole.
		if err := os.Truncate(tmp, in.files[name]); err != nil {
			errs = append(errs, err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	for _, name := range in.keptTables {
		if err := os.Link(filepath.Join(keep, name), filepath.Join(dir, name)); err != nil && !errors.Is(err, fs.ErrExist) {
			errs = append(errs, err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	for _, e := range entries {
		name := e.Name()
		made := strings.HasSuffix(name, tableExt) || strings.HasSuffix(name, memFileExt) || strings.HasSuffix(name, ".vlog")
		if _, was := in.files[name]; made && !was {
			if err := os.Remove(filepath.Join(dir, name)); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if len(errs) == 0 {
		for _, name := range append(in.keptTables, in.keptLogs...) {
			os.Remove(filepath.Join(keep, name))
		}
		os.Remove(keep) // only if empty
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// copyPrefix copies the first n bytes of from (all when n < 0) to a new
// file to, synced. It copies nothing, and reports false, when to exists
// (kept by an earlier refused start: the older copy is the one to keep).
func copyPrefix(from, to string, n int64) (bool, error) {
	src, err := os.Open(from)
	if err != nil {
		return false, err
	}
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	var r io.Reader = src
	if n >= 0 {
		r = io.LimitReader(src, n)
	}
	_, err = io.Copy(dst, r)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(to)
		return false, err
	}
	return true, nil
}

func tableName(id uint64) string { return fmt.Sprintf("%06d%s", id, tableExt) }

// readManifest replays dir's MANIFEST read-only.
func readManifest(dir string) (badger.Manifest, error) {
	f, err := os.Open(filepath.Join(dir, badger.ManifestFilename))
	if err != nil {
		return badger.Manifest{}, fmt.Errorf("kv: read MANIFEST of store %s: %w", dir, err)
	}
	defer f.Close()
	mf, _, err := badger.ReplayManifestFile(f, 0, badger.DefaultOptions(dir))
	if err != nil {
		return badger.Manifest{}, &DamagedError{Dir: dir, File: badger.ManifestFilename, Problem: "is damaged: " + oneLine(err.Error())}
	}
	return mf, nil
}

// checkTableFooter reads a table's footer and index the way Badger does
// when it opens the table, but with every length checked first (Badger
// indexes its mapping with them and panics when they are wrong), and
// verifies the index's checksum. It returns "" for a sound footer, else
// what is wrong.
func checkTableFooter(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return "cannot be read: " + err.Error()
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "cannot be read: " + err.Error()
	}
	size := fi.Size()
	if size < 8 {
		return fmt.Sprintf("is truncated: %d bytes, shorter than a table's footer", size)
	}
	u32 := func(off int64) (int64, bool) {
		var b [4]byte
		if _, err := f.ReadAt(b[:], off); err != nil {
			return 0, false
		}
		return int64(binary.BigEndian.Uint32(b[:])), true
	}
	checksumLen, ok := u32(size - 4)
	if !ok || checksumLen > size-8 {
		return "is damaged or truncated: its footer gives a checksum length past the start of the file"
	}
	raw := make([]byte, checksumLen)
	if _, err := f.ReadAt(raw, size-4-checksumLen); err != nil {
		return "cannot be read: " + err.Error()
	}
	var sum pb.Checksum
	if err := proto.Unmarshal(raw, &sum); err != nil || (sum.Algo != pb.Checksum_CRC32C && sum.Algo != pb.Checksum_XXHash64) {
		return "is damaged or truncated: its footer's checksum does not decode"
	}
	indexEnd := size - 4 - checksumLen
	indexLen, ok := u32(indexEnd - 4)
	if !ok || indexLen > indexEnd-4 {
		return "is damaged or truncated: its footer gives an index length past the start of the file"
	}
	index := make([]byte, indexLen)
	if _, err := f.ReadAt(index, indexEnd-4-indexLen); err != nil {
		return "cannot be read: " + err.Error()
	}
	if err := y.VerifyChecksum(index, &sum); err != nil {
		return "is damaged or truncated: its index fails its checksum"
	}
	return ""
}

// scanWAL reads a write-ahead log's entries and checks each one's CRC,
// as Badger's replay does. Badger ends the replay at the first bad entry
// and truncates the file there. That is right for the torn tail of a
// transaction that was never acknowledged (a crash mid-write), wrong when
// acknowledged entries follow. scanWAL returns what is wrong when data
// lies more than slack bytes past the first bad entry ("" otherwise), and
// where the replay stops and where the log's data ends (past it, the file
// is zeros).
func scanWAL(path string, slack int64) (problem string, stop, end int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, 0, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", 0, 0, err
	}
	size := fi.Size()
	if size <= walHeaderSize {
		return "", size, size, nil
	}
	r := bufio.NewReaderSize(io.NewSectionReader(f, walHeaderSize, size-walHeaderSize), 256<<10)
	off := int64(walHeaderSize)
	var head bytes.Buffer
	crc := crc32.New(y.CastagnoliCrcTable)
	for {
		n, ok := nextWALEntry(r, &head, crc, size-off)
		if !ok {
			break
		}
		off += n
	}
	// off is where the replay stops. Find the data after it.
	last, err := lastNonZero(f, off, size)
	if err != nil {
		return "", 0, 0, err
	}
	if last < off+slack {
		return "", off, max(last+1, off), nil
	}
	return walDamage(off, last+1) + "; Badger would drop them (acknowledged writes) and truncate the file", off, last + 1, nil
}

func walDamage(stop, end int64) string {
	return fmt.Sprintf("is damaged at offset %d: the entry there fails its checksum and %s of later entries follow it", stop, diskspace.Bytes(end-stop))
}

// nextWALEntry reads one entry (header, key and value, CRC) and reports
// its length and whether it is sound.
func nextWALEntry(r *bufio.Reader, head *bytes.Buffer, crc hashWriter, remaining int64) (int64, bool) {
	head.Reset()
	crc.Reset()
	tee := byteTee{r: r, w: head}
	if _, err := tee.ReadByte(); err != nil { // meta
		return 0, false
	}
	if _, err := tee.ReadByte(); err != nil { // user meta
		return 0, false
	}
	klen, err := binary.ReadUvarint(&tee)
	if err != nil || klen > walMaxKey {
		return 0, false
	}
	vlen, err := binary.ReadUvarint(&tee)
	if err != nil {
		return 0, false
	}
	if _, err := binary.ReadUvarint(&tee); err != nil { // expires at
		return 0, false
	}
	body := int64(klen) + int64(vlen)
	total := int64(head.Len()) + body + 4
	if vlen > uint64(remaining) || total > remaining {
		return 0, false
	}
	crc.Write(head.Bytes())
	if _, err := io.CopyN(crc, r, body); err != nil {
		return 0, false
	}
	var want [4]byte
	if _, err := io.ReadFull(r, want[:]); err != nil {
		return 0, false
	}
	if binary.BigEndian.Uint32(want[:]) != crc.Sum32() {
		return 0, false
	}
	if klen == 0 && vlen == 0 {
		return 0, false // Badger's zero entry: the end
	}
	return total, true
}

type hashWriter interface {
	io.Writer
	Reset()
	Sum32() uint32
}

// byteTee is a ByteReader that copies what it reads to w.
type byteTee struct {
	r *bufio.Reader
	w *bytes.Buffer
}

func (t *byteTee) ReadByte() (byte, error) {
	b, err := t.r.ReadByte()
	if err == nil {
		t.w.WriteByte(b)
	}
	return b, err
}

// lastNonZero returns the offset of the last non-zero byte of f in
// [from, to), or -1.
func lastNonZero(f *os.File, from, to int64) (int64, error) {
	// Holes read as zeros: skip them (a log is a sparse file twice its
	// memtable's size).
	if data, err := unix.Seek(int(f.Fd()), from, unix.SEEK_DATA); err == nil && data > from {
		from = min(data, to)
	} else if errors.Is(err, unix.ENXIO) {
		return -1, nil
	}
	buf := make([]byte, 256<<10)
	last := int64(-1)
	for off := from; off < to; {
		n := min(int64(len(buf)), to-off)
		if _, err := f.ReadAt(buf[:n], off); err != nil && !errors.Is(err, io.EOF) {
			return -1, err
		}
		for i := n - 1; i >= 0; i-- {
			if buf[i] != 0 {
				last = off + i
				break
			}
		}
		off += n
	}
	return last, nil
}

// storeFile finds the path of a store file in a Badger error.
var storeFile = regexp.MustCompile(`([^\s"]*/(?:\d+\.(?:sst|mem|vlog)|MANIFEST|KEYREGISTRY))\b`)

// openError turns an error of badger.Open into one line, naming the
// damaged file when Badger says which.
func openError(dir string, err error) error {
	msg := oneLine(err.Error())
	if m := storeFile.FindStringSubmatch(msg); m != nil {
		problem := "cannot be opened: " + msg
		if strings.Contains(msg, y.ErrChecksumMismatch.Error()) {
			problem = "is damaged: it fails its checksum"
		}
		return &DamagedError{Dir: dir, File: filepath.Base(m[1]), Problem: problem}
	}
	return fmt.Errorf("kv: open store %s: %s", dir, msg)
}

// oneLine joins the lines of a message.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
