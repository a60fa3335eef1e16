package daemon

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
)

const testChunk = 64 // small chunks, so a short stream has many

// testBackup is one backup file in memory, with where its chunks are.
type testBackup struct {
	file   []byte
	key    []byte
	body   int   // offset of the first chunk
	chunks []int // offset of each chunk's length word
}

func makeBackup(t testing.TB, payload []byte) testBackup {
	t.Helper()
	key := make([]byte, backupKeySize)
	rand.Read(key)
	h := BackupHeader{
		Format: BackupFormat, CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
		TokenLabel: "tok", KEKLabel: "kek-1", ChunkSize: testChunk,
		SealedKey: &hsm.Sealed{KEK: "kek-1", Ciphertext: []byte("sealed")},
	}
	var buf bytes.Buffer
	digest, err := writeBackupHeader(&buf, h)
	if err != nil {
		t.Fatal(err)
	}
	body := buf.Len()
	cw, err := newChunkWriter(&buf, key, digest, testChunk)
	if err != nil {
		t.Fatal(err)
	}
	// write in odd pieces, to cross chunk boundaries inside one Write
	for p := payload; len(p) > 0; {
		n := min(len(p), 37)
		if _, err := cw.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := cw.Close(); err != nil {
		t.Fatal(err)
	}
	b := testBackup{file: buf.Bytes(), key: key, body: body}
	for off := body; off < len(b.file); {
		b.chunks = append(b.chunks, off)
		w := binary.BigEndian.Uint32(b.file[off:])
		off += 4 + int(w&^chunkFinalFlag)
	}
	return b
}

// read opens file with key and returns the stream it carries.
func readBackup(file, key []byte) ([]byte, error) {
	r := bytes.NewReader(file)
	h, digest, err := ReadBackupHeader(r)
	if err != nil {
		return nil, err
	}
	cr, err := newChunkReader(r, h, digest, key)
	if err != nil {
		return nil, err
	}
	defer cr.Close()
	return io.ReadAll(cr)
}

func TestBackupFormatRoundTrip(t *testing.T) {
	for _, n := range []int{0, 1, testChunk - 1, testChunk, testChunk + 1, 5*testChunk + 3} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			payload := make([]byte, n)
			rand.Read(payload)
			b := makeBackup(t, payload)
			got, err := readBackup(b.file, b.key)
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if !bytes.Equal(got, payload) {
				t.Fatalf("read %d bytes, want the %d written", len(got), n)
			}
			if want := n/testChunk + 1; len(b.chunks) != want {
				t.Errorf("%d chunks, want %d (the last one final, maybe empty)", len(b.chunks), want)
			}
			sum, err := CheckBackupFile(bytes.NewReader(b.file))
			if err != nil {
				t.Fatalf("CheckBackupFile: %v", err)
			}
			if sum.Chunks != len(b.chunks) || sum.Bytes != int64(len(b.file)) || sum.Header.KEKLabel != "kek-1" {
				t.Errorf("summary %+v", sum)
			}
			if bytes.Contains(b.file, payload[:min(n, 16)]) && n >= 16 {
				t.Errorf("the payload is in the clear in the file")
			}
		})
	}
}

// TestBackupFormatTamper changes a backup in every way that matters; each
// must fail to read with ErrBadBackup, never yield a short stream quietly.
func TestBackupFormatTamper(t *testing.T) {
	payload := make([]byte, 4*testChunk+10) // 5 chunks
	rand.Read(payload)
	b := makeBackup(t, payload)
	other := makeBackup(t, payload)
	if len(b.chunks) != 5 {
		t.Fatalf("%d chunks", len(b.chunks))
	}
	chunk := func(f []byte, i int) []byte { // the frame of chunk i, length word included
		end := len(f)
		if i+1 < len(b.chunks) {
			end = b.chunks[i+1]
		}
		return f[b.chunks[i]:end]
	}
	cp := func() []byte { return bytes.Clone(b.file) }
	join := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

	cases := []struct {
		name  string
		file  []byte
		check bool // CheckBackupFile (framing only) must also refuse it
		want  string
	}{
		{"header field changed", func() []byte {
			f := cp()
			i := bytes.Index(f, []byte("2026-01-02"))
			f[i+3] = '7'
			return f
		}(), false, "chunk 0 does not authenticate"},
		{"chunk bit flipped", func() []byte { f := cp(); f[b.chunks[2]+10] ^= 1; return f }(), false, "chunk 2 does not authenticate"},
		{"chunks swapped", join(b.file[:b.chunks[1]], chunk(b.file, 2), chunk(b.file, 1), b.file[b.chunks[3]:]), false, "chunk 1 does not authenticate"},
		{"chunk dropped", join(b.file[:b.chunks[1]], b.file[b.chunks[2]:]), false, "chunk 1 does not authenticate"},
		{"chunk duplicated", join(b.file[:b.chunks[2]], chunk(b.file, 1), b.file[b.chunks[2]:]), false, "chunk 2 does not authenticate"},
		{"chunk from another backup", join(b.file[:b.chunks[1]], chunk(other.file, 1), b.file[b.chunks[2]:]), false, "chunk 1 does not authenticate"},
		{"final chunk dropped", b.file[:b.chunks[4]], true, "ends before its last chunk"},
		{"cut inside a chunk", b.file[:b.chunks[3]+20], true, "cut short"},
		{"cut inside a length word", b.file[:b.chunks[3]+2], true, "ends before its last chunk"},
		{"cut inside the header", b.file[:b.body-3], true, "header is cut short"},
		{"data after the final chunk", join(b.file, []byte{0}), true, "data follows its last chunk"},
		{"a second final chunk appended", join(b.file, chunk(b.file, 4)), true, "data follows its last chunk"},
		{"final flag cleared", func() []byte { f := cp(); f[b.chunks[4]] &^= 0x80; return f }(), false, "chunk 4 does not authenticate"},
		{"final flag set early", func() []byte { f := cp(); f[b.chunks[1]] |= 0x80; return f }(), false, "chunk 1 does not authenticate"},
		{"oversized length", func() []byte { f := cp(); binary.BigEndian.PutUint32(f[b.chunks[1]:], 1<<30); return f }(), true, "chunk 1 has length"},
		{"not a backup", []byte("hello, this is not a coffer backup at all"), true, "does not start with"},
		{"empty file", nil, true, "too short"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := readBackup(c.file, b.key)
			if err == nil {
				t.Fatalf("read succeeded with %d bytes", len(got))
			}
			if !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want ErrBadBackup with %q", err, c.want)
			}
			_, cerr := CheckBackupFile(bytes.NewReader(c.file))
			if c.check && cerr == nil {
				t.Errorf("CheckBackupFile accepted it")
			}
		})
	}

	t.Run("every truncation", func(t *testing.T) {
		for n := 0; n < len(b.file); n++ {
			if _, err := readBackup(b.file[:n], b.key); !errors.Is(err, ErrBadBackup) {
				t.Fatalf("cut at %d of %d: err = %v", n, len(b.file), err)
			}
			if _, err := CheckBackupFile(bytes.NewReader(b.file[:n])); !errors.Is(err, ErrBadBackup) {
				t.Fatalf("CheckBackupFile cut at %d: err = %v", n, err)
			}
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		if _, err := readBackup(b.file, other.key); !errors.Is(err, ErrBadBackup) {
			t.Fatalf("err = %v", err)
		}
	})
}

func TestBackupHeaderChecks(t *testing.T) {
	good := BackupHeader{Format: BackupFormat, KEKLabel: "k", ChunkSize: testChunk, SealedKey: &hsm.Sealed{KEK: "k"}}
	for _, c := range []struct {
		name string
		edit func(*BackupHeader)
		want string
	}{
		{"future format", func(h *BackupHeader) { h.Format = 2 }, "backup format 2; this coffer reads format 1"},
		{"no sealed key", func(h *BackupHeader) { h.SealedKey = nil }, "no sealed key"},
		{"KEK labels differ", func(h *BackupHeader) { h.KEKLabel = "other" }, `names KEK "other"`},
		{"chunk size 0", func(h *BackupHeader) { h.ChunkSize = 0 }, "chunk size 0"},
		{"chunk size huge", func(h *BackupHeader) { h.ChunkSize = 1 << 30 }, "chunk size"},
	} {
		t.Run(c.name, func(t *testing.T) {
			h := good
			c.edit(&h)
			var buf bytes.Buffer
			if _, err := writeBackupHeader(&buf, h); err != nil {
				t.Fatal(err)
			}
			_, _, err := ReadBackupHeader(&buf)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
		})
	}
}
