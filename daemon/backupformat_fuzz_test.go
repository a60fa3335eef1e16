package daemon

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzBackupFile: whatever the bytes, reading a backup never panics, every
// failure is ErrBadBackup (or ErrBackupFormat for a well-formed header of
// another format version), and a file that opens with the key carries
// exactly the stream that was written (chunks cannot be changed, dropped,
// reordered or cut without the read failing).
func FuzzBackupFile(f *testing.F) {
	payload := bytes.Repeat([]byte("record-0123456789/"), 20) // several chunks
	b := makeBackup(f, payload)
	f.Add(b.file)
	f.Add(b.file[:b.body])
	f.Add(b.file[:len(b.file)-1])
	f.Add(append(append([]byte(nil), b.file...), 0))
	f.Add([]byte("coffer-backup\n{}\n"))
	f.Fuzz(func(t *testing.T, file []byte) {
		if _, err := CheckBackupFile(bytes.NewReader(file)); err != nil && !errors.Is(err, ErrBadBackup) && !errors.Is(err, ErrBackupFormat) {
			t.Fatalf("CheckBackupFile: unclassified error %v", err)
		}
		got, err := readBackup(file, b.key)
		if err != nil {
			if !errors.Is(err, ErrBadBackup) && !errors.Is(err, ErrBackupFormat) {
				t.Fatalf("read: unclassified error %v", err)
			}
			return
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("a changed file opened to a different stream (%d bytes)", len(got))
		}
	})
}
