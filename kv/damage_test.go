package kv

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4/y"
)

const damageRecords = 1500

// damagePayload is a record's filler: large enough that a 1 MiB memtable
// flushes into several tables.
var damagePayload = strings.Repeat("p", 700)

// writeRecords puts records from..to-1 in table "d", one Update each.
func writeRecords(t *testing.T, s *Store, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		err := s.Update(context.Background(), func(tx *Txn) error {
			return tx.Put("d", fmt.Sprintf("%06d", i), user{Name: damagePayload, N: i})
		})
		if err != nil {
			t.Fatalf("write record %d: %v", i, err)
		}
	}
}

// storeWithTables makes an encrypted store in dir, with its witness at
// wit, whose records all went to table files (small memtables, and Close
// flushes the last one).
func storeWithTables(t *testing.T, dir, wit string, key []byte) {
	t.Helper()
	s, err := Open(context.Background(), Options{Dir: dir, Witness: wit, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key, MemTableSize: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	writeRecords(t, s, 0, damageRecords)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

// crashImage makes an encrypted store in src with its witness, writes
// records without closing it, waits for the witness to record them, and
// copies its files to dst as a kill -9 would leave them (the writes are
// synced; the page cache holds them). It returns dst's witness path.
func crashImage(t *testing.T, src, dst string, key []byte) string {
	t.Helper()
	fastProbes(t)
	wit := filepath.Join(t.TempDir(), "src.witness")
	s, err := Open(context.Background(), Options{Dir: src, Witness: wit, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	writeRecords(t, s, 0, damageRecords)
	deadline := time.Now().Add(10 * time.Second)
	for {
		w, err := readWitness(wit)
		if err != nil {
			t.Fatal(err)
		}
		if w != nil && w.Commits == s.Commits() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("witness %+v, want %d commits", w, s.Commits())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := os.MkdirAll(dst, 0o700); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == lockFileName {
			continue
		}
		copyFile(t, filepath.Join(src, e.Name()), filepath.Join(dst, e.Name()))
	}
	dstWit := filepath.Join(t.TempDir(), "dst.witness")
	copyFile(t, wit, dstWit)
	return dstWit
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// files lists dir's regular files (not LOCK) with their sizes.
func files(t *testing.T, dir string) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return out
	}
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == lockFileName {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = fi.Size()
	}
	return out
}

// walEnd returns the offset after the last sound entry of a write-ahead
// log.
func walEnd(t *testing.T, path string) int64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, _ := f.Stat()
	r := bufio.NewReader(io.NewSectionReader(f, walHeaderSize, fi.Size()-walHeaderSize))
	off := int64(walHeaderSize)
	var head bytes.Buffer
	crc := crc32.New(y.CastagnoliCrcTable)
	for {
		n, ok := nextWALEntry(r, &head, crc, fi.Size()-off)
		if !ok {
			return off
		}
		off += n
	}
}

// largest returns the name of the largest file of dir ending in ext.
func largest(t *testing.T, dir, ext string) string {
	t.Helper()
	best, size := "", int64(-1)
	for name, n := range files(t, dir) {
		if strings.HasSuffix(name, ext) && n > size {
			best, size = name, n
		}
	}
	if best == "" {
		t.Fatalf("no %s file in %s", ext, dir)
	}
	return best
}

func flipByte(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b [1]byte
	if _, err := f.ReadAt(b[:], off); err != nil {
		t.Fatal(err)
	}
	b[0] ^= 0x5a
	if _, err := f.WriteAt(b[:], off); err != nil {
		t.Fatal(err)
	}
}

// TestOpenDamaged damages a store's files the ways disks, power cuts and
// people do, and checks that Open refuses each with one line naming the
// file (never a panic), and that nothing was deleted: every file is still
// there with its size, or kept in UnreferencedDir.
func TestOpenDamaged(t *testing.T) {
	key := newKey(t)
	for _, tc := range []struct {
		name     string
		crash    bool // a kill -9 image (write-ahead log with data), else a closed store with tables
		damage   func(t *testing.T, dir, wit string)
		wantFile string // "" = the store as a whole; "*.sst"/"*.mem" = the damaged one
		wantMsg  string
	}{
		{"MANIFEST removed", false, func(t *testing.T, dir, _ string) {
			os.Remove(filepath.Join(dir, "MANIFEST"))
		}, "MANIFEST", "is missing while"},
		{"MANIFEST truncated to its header", false, func(t *testing.T, dir, _ string) {
			os.Truncate(filepath.Join(dir, "MANIFEST"), 8)
		}, "", "committed changes are missing"},
		{"MANIFEST damaged", false, func(t *testing.T, dir, _ string) {
			flipByte(t, filepath.Join(dir, "MANIFEST"), 20)
		}, "MANIFEST", "is damaged"},
		{"KEYREGISTRY removed", false, func(t *testing.T, dir, _ string) {
			os.Remove(filepath.Join(dir, "KEYREGISTRY"))
		}, "KEYREGISTRY", "is missing"},
		{"table footer flipped", false, func(t *testing.T, dir, _ string) {
			p := filepath.Join(dir, largest(t, dir, ".sst"))
			fi, _ := os.Stat(p)
			flipByte(t, p, fi.Size()-2)
		}, "*.sst", "footer"},
		{"table index flipped", false, func(t *testing.T, dir, _ string) {
			p := filepath.Join(dir, largest(t, dir, ".sst"))
			fi, _ := os.Stat(p)
			flipByte(t, p, fi.Size()-200)
		}, "*.sst", "is damaged"},
		{"table truncated", false, func(t *testing.T, dir, _ string) {
			p := filepath.Join(dir, largest(t, dir, ".sst"))
			fi, _ := os.Stat(p)
			os.Truncate(p, fi.Size()/2)
		}, "*.sst", "truncated"},
		{"table block bit flipped", false, func(t *testing.T, dir, _ string) {
			flipByte(t, filepath.Join(dir, largest(t, dir, ".sst")), 100)
		}, "*.sst", "fails its checksum"},
		{"table file removed", false, func(t *testing.T, dir, _ string) {
			os.Remove(filepath.Join(dir, largest(t, dir, ".sst")))
		}, "*.sst", "is listed in MANIFEST but missing"},
		{"witness ahead of the store", false, func(t *testing.T, _, wit string) {
			w, err := readWitness(wit)
			if err != nil || w == nil {
				t.Fatalf("witness: %v %v", w, err)
			}
			if err := writeWitness(wit, w.Commits+40); err != nil {
				t.Fatal(err)
			}
		}, "", "40 committed changes are missing"},
		{"store directory emptied", false, func(t *testing.T, dir, _ string) {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}, "", "holds no store files"},
		{"write-ahead log damaged mid-way", true, func(t *testing.T, dir, _ string) {
			p := filepath.Join(dir, largest(t, dir, ".mem"))
			flipByte(t, p, walEnd(t, p)/3)
		}, "*.mem", "is damaged at offset"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			var wit string
			if tc.crash {
				wit = crashImage(t, filepath.Join(t.TempDir(), "src"), dir, key)
			} else {
				wit = filepath.Join(t.TempDir(), "store.witness")
				storeWithTables(t, dir, wit, key)
			}
			tc.damage(t, dir, wit)
			before := files(t, dir)
			s, err := Open(context.Background(), Options{Dir: dir, Witness: wit, MustExist: true, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
			if err == nil {
				s.Close()
				t.Fatal("Open of a damaged store succeeded")
			}
			var de *DamagedError
			if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) {
				t.Fatalf("Open: %v (%T), want a *DamagedError", err, err)
			}
			switch {
			case strings.HasPrefix(tc.wantFile, "*"):
				if !strings.HasSuffix(de.File, tc.wantFile[1:]) {
					t.Errorf("damaged file %q, want a %s file", de.File, tc.wantFile[1:])
				}
			case de.File != tc.wantFile:
				t.Errorf("damaged file %q, want %q", de.File, tc.wantFile)
			}
			msg := err.Error()
			t.Log(msg)
			if !strings.Contains(msg, tc.wantMsg) || strings.Contains(msg, "\n") || !strings.Contains(msg, dir) {
				t.Errorf("error %q: want one line naming %s and saying %q", msg, dir, tc.wantMsg)
			}
			after, kept := files(t, dir), files(t, filepath.Join(dir, KeptDir))
			for name, size := range before {
				switch got, ok := after[name]; {
				case strings.HasSuffix(name, ".mem") && size == 0:
				case ok && got == size:
				case strings.HasSuffix(name, ".vlog"):
					// Badger trims the value log's zeroed tail.
				case kept[name] > 0:
				default:
					t.Errorf("file %s (%d bytes) is now %d bytes (present %v) and not kept in %s", name, size, got, ok, KeptDir)
				}
			}
		})
	}
}

// TestOpenAfterCrashKeepsEverything opens a kill -9 image as is, and one
// whose write-ahead log has a torn tail (junk after its last entry, as a
// power cut mid-write leaves): both open with every record, the first
// commit count, and no file kept aside.
func TestOpenAfterCrashKeepsEverything(t *testing.T) {
	key := newKey(t)
	for _, torn := range []bool{false, true} {
		t.Run(fmt.Sprintf("torn=%v", torn), func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			wit := crashImage(t, filepath.Join(t.TempDir(), "src"), dir, key)
			if torn {
				// A power cut mid-write: the start of an entry whose
				// end never reached the disk, a hole, and a page of
				// the same transaction that did.
				p := filepath.Join(dir, largest(t, dir, ".mem"))
				b, err := os.ReadFile(p)
				if err != nil {
					t.Fatal(err)
				}
				end := walEnd(t, p)
				entry := bytes.Clone(b[walHeaderSize : walHeaderSize+1000])
				f, err := os.OpenFile(p, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(entry[:600], end); err != nil {
					t.Fatal(err)
				}
				if _, err := f.WriteAt(entry, end+8192); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			s, err := Open(context.Background(), Options{Dir: dir, Witness: wit, MustExist: true, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if n := count(t, s, "d", Query{}); n != damageRecords {
				t.Errorf("%d records, want %d", n, damageRecords)
			}
			if s.Commits() < damageRecords {
				t.Errorf("Commits %d, want at least %d", s.Commits(), damageRecords)
			}
			if _, err := os.Stat(filepath.Join(dir, KeptDir)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after a sound open: %v", KeptDir, err)
			}
		})
	}
}

// TestUnreferencedTablesKept gives a store a table file its MANIFEST does
// not list, as a crash mid-compaction leaves: a sound store opens and the
// copy kept aside goes; a store that lost commits keeps it.
func TestUnreferencedTablesKept(t *testing.T) {
	key := newKey(t)
	dir := filepath.Join(t.TempDir(), "data")
	wit := filepath.Join(t.TempDir(), "store.witness")
	storeWithTables(t, dir, wit, key)
	orphan := filepath.Join(dir, tableName(999999))
	copyFile(t, filepath.Join(dir, largest(t, dir, ".sst")), orphan)
	s, err := Open(context.Background(), Options{Dir: dir, Witness: wit, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	for _, p := range []string{orphan, filepath.Join(dir, KeptDir)} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a sound open: %v, want it gone", p, err)
		}
	}

	// Now the MANIFEST loses its tables: Badger deletes them as
	// unreferenced, the witness refuses the store, and the rollback puts
	// every file back as it was, again and again.
	if err := os.Truncate(filepath.Join(dir, "MANIFEST"), 8); err != nil {
		t.Fatal(err)
	}
	before := files(t, dir)
	for range 2 {
		_, err = Open(context.Background(), Options{Dir: dir, Witness: wit, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
		if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "1500 committed changes are missing") {
			t.Fatalf("Open after the MANIFEST lost its tables: %v", err)
		}
		after := files(t, dir)
		delete(after, "KEYREGISTRY") // Badger may add a data key
		for name, size := range before {
			if name != "KEYREGISTRY" && !strings.HasSuffix(name, ".vlog") && after[name] != size {
				t.Errorf("file %s: %d bytes after the refusal, %d before", name, after[name], size)
			}
		}
		for name := range after {
			if _, ok := before[name]; !ok && !strings.HasSuffix(name, ".vlog") {
				t.Errorf("file %s appeared", name)
			}
		}
		if _, err := os.Stat(filepath.Join(dir, KeptDir)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after a rollback: %v", KeptDir, err)
		}
	}
}

// TestScanWAL checks the write-ahead log scan on logs made by hand: a
// torn tail within the slack is no damage, data beyond it is.
func TestScanWAL(t *testing.T) {
	entry := func(key, val string) []byte {
		var b bytes.Buffer
		b.WriteByte(0x40) // meta
		b.WriteByte(0)    // user meta
		var buf [10]byte
		for _, n := range []uint64{uint64(len(key)), uint64(len(val)), 0} {
			b.Write(buf[:putUvarint(buf[:], n)])
		}
		b.WriteString(key)
		b.WriteString(val)
		sum := crc32.Checksum(b.Bytes(), y.CastagnoliCrcTable)
		return append(b.Bytes(), byte(sum>>24), byte(sum>>16), byte(sum>>8), byte(sum))
	}
	good := append(entry("k1", "v1"), entry("k2", "v2")...)
	header := make([]byte, walHeaderSize)
	for _, tc := range []struct {
		name    string
		content []byte
		slack   int64
		want    string
	}{
		{"clean", concat(header, good, make([]byte, 4096)), 100, ""},
		{"empty", header, 100, ""},
		{"torn tail within slack", concat(header, good, []byte{0x40, 0, 9, 9}, bytes.Repeat([]byte{7}, 50), make([]byte, 200)), 100, ""},
		{"damage with entries after it", concat(header, entry("k1", "XX"), good[:0], flip(entry("k2", "v2")), good, make([]byte, 200)), 10, "is damaged at offset"},
		{"data past the slack", concat(header, good, make([]byte, 300), []byte{1}), 100, "is damaged at offset 46: the entry there fails its checksum and 301 B of later entries follow it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "00001.mem")
			if err := os.WriteFile(p, tc.content, 0o600); err != nil {
				t.Fatal(err)
			}
			got, _, _, err := scanWAL(p, tc.slack)
			if err != nil {
				t.Fatal(err)
			}
			if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Errorf("scanWAL = %q, want %q", got, tc.want)
			}
		})
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// flip returns b with a byte of its value changed.
func flip(b []byte) []byte {
	b = bytes.Clone(b)
	b[len(b)-6] ^= 1
	return b
}

func putUvarint(buf []byte, n uint64) int {
	i := 0
	for n >= 0x80 {
		buf[i] = byte(n) | 0x80
		n >>= 7
		i++
	}
	buf[i] = byte(n)
	return i + 1
}
