package daemon

import (
	"bufio"
	"crypto/aes"
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
)

// A backup file is
//
//	magic      "coffer-backup\n"
//	uint32     length of the header (big endian)
//	header     JSON BackupHeader, in the clear
//	chunks     until the final one:
//	  uint32   bit 31: final chunk; bits 0-30: length of the sealed chunk
//	  sealed   AES-256-GCM of up to ChunkSize bytes of the store's backup stream
//
// under a fresh random backup key that the header carries sealed by the
// HSM KEK. Chunk i is sealed with the nonce i (8 bytes, big endian) || final
// flag (1 byte) || 3 zero bytes, and the SHA-256 of magic, length and header
// as additional data: a changed header, a chunk that is modified, moved,
// dropped or copied from another backup, and a file cut short or extended
// after its final chunk all fail to read.
const (
	backupMagic      = "coffer-backup\n"
	BackupFormat     = 1
	backupKeyAAD     = "coffer/backup-key/v1"
	backupKeySize    = 32
	backupChunkSize  = 64 << 10
	maxBackupChunk   = 1 << 20
	maxBackupHeader  = 64 << 10
	chunkFinalFlag   = 1 << 31
	chunkOverhead    = 16 // GCM tag
	backupNonceFinal = 8  // index of the final flag in the nonce
)

// ErrBadBackup is returned (wrapped) for a file that is not a complete,
// intact coffer backup.
var ErrBadBackup = errors.New("not an intact coffer backup")

// ErrBackupFormat is returned (wrapped) for an intact backup in a format
// this coffer does not read (made by a newer one).
var ErrBackupFormat = errors.New("unsupported backup format")

// BackupHeader describes a backup. It is stored in the clear and
// authenticated by every chunk.
type BackupHeader struct {
	Format        int         `json:"format"`
	CreatedAt     time.Time   `json:"created_at"`
	CofferVersion string      `json:"coffer_version,omitempty"`
	TokenLabel    string      `json:"token_label"` // the HSM token whose KEK sealed the key
	KEKLabel      string      `json:"kek_label"`
	ChunkSize     int         `json:"chunk_size"`
	SealedKey     *hsm.Sealed `json:"sealed_key"`
}

func badBackup(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrBadBackup, fmt.Sprintf(format, args...))
}

// writeBackupHeader writes magic, length and header, and returns the
// digest the chunks are bound to.
func writeBackupHeader(w io.Writer, h BackupHeader) ([]byte, error) {
	hb, err := json.Marshal(h)
	if err != nil {
		return nil, fmt.Errorf("encode backup header: %w", err)
	}
	buf := make([]byte, 0, len(backupMagic)+4+len(hb))
	buf = append(buf, backupMagic...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(hb)))
	buf = append(buf, hb...)
	if _, err := w.Write(buf); err != nil {
		return nil, err
	}
	d := sha256.Sum256(buf)
	return d[:], nil
}

// ReadBackupHeader reads and checks the header at the start of r and
// returns it with the digest its chunks are bound to.
func ReadBackupHeader(r io.Reader) (BackupHeader, []byte, error) {
	var h BackupHeader
	pre := make([]byte, len(backupMagic)+4)
	if _, err := io.ReadFull(r, pre); err != nil {
		return h, nil, badBackup("too short for a header")
	}
	if string(pre[:len(backupMagic)]) != backupMagic {
		return h, nil, badBackup("it does not start with %q", backupMagic[:len(backupMagic)-1])
	}
	n := binary.BigEndian.Uint32(pre[len(backupMagic):])
	if n == 0 || n > maxBackupHeader {
		return h, nil, badBackup("header length %d", n)
	}
	hb := make([]byte, n)
	if _, err := io.ReadFull(r, hb); err != nil {
		return h, nil, badBackup("the header is cut short")
	}
	if err := json.Unmarshal(hb, &h); err != nil {
		return h, nil, badBackup("the header is not valid JSON")
	}
	switch {
	case h.Format <= 0:
		return h, nil, badBackup("the header has no format")
	case h.Format != BackupFormat:
		return h, nil, fmt.Errorf("%w: backup format %d; this coffer reads format %d", ErrBackupFormat, h.Format, BackupFormat)
	case h.SealedKey == nil:
		return h, nil, badBackup("the header carries no sealed key")
	case h.KEKLabel != h.SealedKey.KEK:
		return h, nil, badBackup("the header names KEK %q but its key is sealed by %q", h.KEKLabel, h.SealedKey.KEK)
	case h.ChunkSize <= 0 || h.ChunkSize > maxBackupChunk:
		return h, nil, badBackup("chunk size %d", h.ChunkSize)
	}
	d := sha256.New()
	d.Write(pre)
	d.Write(hb)
	return h, d.Sum(nil), nil
}

func chunkNonce(seq uint64, final bool) []byte {
	n := make([]byte, 12)
	binary.BigEndian.PutUint64(n, seq)
	if final {
		n[backupNonceFinal] = 1
	}
	return n
}

func newBackupAEAD(key []byte) (cipher.AEAD, error) {
	b, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("backup cipher: %w", err)
	}
	return cipher.NewGCM(b)
}

// chunkWriter seals what is written to it in chunks; Close writes the
// final chunk. Not safe for concurrent use.
type chunkWriter struct {
	w      io.Writer
	aead   cipher.AEAD
	aad    []byte
	size   int
	buf    []byte
	out    []byte
	seq    uint64
	closed bool
}

func newChunkWriter(w io.Writer, key, aad []byte, size int) (*chunkWriter, error) {
	aead, err := newBackupAEAD(key)
	if err != nil {
		return nil, err
	}
	return &chunkWriter{w: w, aead: aead, aad: aad, size: size, buf: make([]byte, 0, size)}, nil
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	if c.closed {
		return 0, errors.New("backup: write after close")
	}
	n := len(p)
	for len(p) > 0 {
		k := min(len(p), c.size-len(c.buf))
		c.buf = append(c.buf, p[:k]...)
		p = p[k:]
		if len(c.buf) == c.size {
			if err := c.flush(false); err != nil {
				return 0, err
			}
		}
	}
	return n, nil
}

// Close writes the final chunk (possibly empty) and clears the buffer.
func (c *chunkWriter) Close() error {
	if c.closed {
		return nil
	}
	err := c.flush(true)
	c.closed = true
	clear(c.buf[:cap(c.buf)])
	return err
}

// abort drops what is buffered without writing a final chunk.
func (c *chunkWriter) abort() {
	c.closed = true
	clear(c.buf[:cap(c.buf)])
}

func (c *chunkWriter) flush(final bool) error {
	sealed := c.aead.Seal(c.out[:0], chunkNonce(c.seq, final), c.buf, c.aad)
	c.out = sealed
	word := uint32(len(sealed))
	if final {
		word |= chunkFinalFlag
	}
	if err := binary.Write(c.w, binary.BigEndian, word); err != nil {
		return err
	}
	if _, err := c.w.Write(sealed); err != nil {
		return err
	}
	c.seq++
	clear(c.buf)
	c.buf = c.buf[:0]
	return nil
}

// readChunkFrame reads one chunk's frame: the sealed bytes and the final
// flag. The end of r before a final chunk is a cut-short backup.
func readChunkFrame(r io.Reader, size int, seq uint64, into []byte) ([]byte, bool, error) {
	var word [4]byte
	if _, err := io.ReadFull(r, word[:]); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, false, badBackup("it ends before its last chunk (cut short after %d chunks)", seq)
		}
		return nil, false, err
	}
	w := binary.BigEndian.Uint32(word[:])
	final := w&chunkFinalFlag != 0
	n := int(w &^ chunkFinalFlag)
	if n < chunkOverhead || n > size+chunkOverhead {
		return nil, false, badBackup("chunk %d has length %d", seq, n)
	}
	if cap(into) < n {
		into = make([]byte, n)
	}
	into = into[:n]
	if _, err := io.ReadFull(r, into); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, false, badBackup("it ends inside chunk %d (cut short)", seq)
		}
		return nil, false, err
	}
	return into, final, nil
}

// expectEnd checks that nothing follows the final chunk.
func expectEnd(r io.Reader) error {
	var b [1]byte
	n, err := r.Read(b[:])
	for n == 0 && err == nil {
		n, err = r.Read(b[:])
	}
	if n > 0 {
		return badBackup("data follows its last chunk")
	}
	if errors.Is(err, io.EOF) {
		return nil
	}
	return err
}

// chunkReader opens the chunks of a backup and reads the stream they
// carry. It returns io.EOF only after the final chunk authenticated and
// nothing followed it.
type chunkReader struct {
	r     io.Reader
	aead  cipher.AEAD
	aad   []byte
	size  int
	seq   uint64
	frame []byte
	plain []byte
	rest  []byte
	done  bool
	err   error
}

func newChunkReader(r io.Reader, h BackupHeader, digest, key []byte) (*chunkReader, error) {
	aead, err := newBackupAEAD(key)
	if err != nil {
		return nil, err
	}
	return &chunkReader{r: r, aead: aead, aad: digest, size: h.ChunkSize}, nil
}

func (c *chunkReader) Read(p []byte) (int, error) {
	for len(c.rest) == 0 {
		if c.err != nil {
			return 0, c.err
		}
		if c.done {
			c.err = expectEnd(c.r)
			if c.err == nil {
				c.err = io.EOF
			}
			continue
		}
		c.err = c.next()
	}
	n := copy(p, c.rest)
	c.rest = c.rest[n:]
	return n, nil
}

// next opens the next chunk into c.rest.
func (c *chunkReader) next() error {
	frame, final, err := readChunkFrame(c.r, c.size, c.seq, c.frame)
	if err != nil {
		return err
	}
	c.frame = frame
	clear(c.plain)
	plain, err := c.aead.Open(c.plain[:0], chunkNonce(c.seq, final), frame, c.aad)
	if err != nil {
		return badBackup("chunk %d does not authenticate (changed, moved, or from another backup)", c.seq)
	}
	c.plain, c.rest = plain, plain
	c.seq++
	c.done = final
	return nil
}

// complete reports whether the final chunk was read and checked.
func (c *chunkReader) complete() bool { return errors.Is(c.err, io.EOF) }

// Close clears the plaintext buffer.
func (c *chunkReader) Close() { clear(c.plain[:cap(c.plain)]) }

// BackupSummary is what CheckBackupFile can tell without the key.
type BackupSummary struct {
	Header BackupHeader
	Chunks int
	Bytes  int64
}

// CheckBackupFile reads a whole backup without opening it: the header, and
// every chunk's frame up to the final one, with nothing after it. A backup
// that passes is complete; whether its chunks authenticate only the HSM
// that holds its KEK can tell (coffer restore).
func CheckBackupFile(r io.Reader) (BackupSummary, error) {
	var s BackupSummary
	cr := &countingReader{r: bufio.NewReaderSize(r, 64<<10)}
	h, _, err := ReadBackupHeader(cr)
	if err != nil {
		return s, err
	}
	s.Header = h
	var frame []byte
	for seq := uint64(0); ; seq++ {
		var final bool
		frame, final, err = readChunkFrame(cr, h.ChunkSize, seq, frame)
		if err != nil {
			return s, err
		}
		s.Chunks++
		if final {
			break
		}
	}
	if err := expectEnd(cr); err != nil {
		return s, err
	}
	s.Bytes = cr.n
	return s, nil
}

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}
