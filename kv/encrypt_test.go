package kv

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

func openWith(t testing.TB, dir string, key []byte, rotation time.Duration) (*Store, error) {
	t.Helper()
	s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key, EncryptionKeyRotation: rotation})
	if err == nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	return s, err
}

// grepDir returns the files under dir that contain needle.
func grepDir(t *testing.T, dir string, needle []byte) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, needle) {
			hits = append(hits, filepath.Base(path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

// TestEncryptionAtRest writes records with a distinctive name, index value
// and id, and greps every file of the store for them: found in an
// unencrypted store (so the grep can see stored data), absent from an
// encrypted one, before and after compaction into tables.
func TestEncryptionAtRest(t *testing.T) {
	for _, encrypted := range []bool{false, true} {
		t.Run(fmt.Sprintf("encrypted=%v", encrypted), func(t *testing.T) {
			dir := t.TempDir()
			var key []byte
			if encrypted {
				key = newKey(t)
			}
			s, err := openWith(t, dir, key, 0)
			if err != nil {
				t.Fatal(err)
			}
			name, email, id := "NAMECANARY-7f3a9c", "EMAILCANARY-2b8e@example.com", "IDCANARY-44d1"
			if err := put(t, s, "users", id, user{Name: name, Email: email}, Index{Name: "email", Value: email, Unique: true}); err != nil {
				t.Fatal(err)
			}
			// Enough records to make Badger flush a memtable into a table.
			for i := range 2000 {
				if err := put(t, s, "filler", fmt.Sprintf("%06d", i), user{Name: name, N: i}); err != nil {
					t.Fatal(err)
				}
			}
			if err := s.Close(); err != nil {
				t.Fatal(err)
			}
			for _, needle := range []string{name, email, id, "users", "filler"} {
				hits := grepDir(t, dir, []byte(needle))
				switch {
				case encrypted && len(hits) > 0:
					t.Errorf("%q in the clear in %v", needle, hits)
				case !encrypted && len(hits) == 0 && needle != "filler":
					t.Errorf("%q not found in an unencrypted store: the grep does not see stored data", needle)
				}
			}
			s2, err := openWith(t, dir, key, 0)
			if err != nil {
				t.Fatalf("reopen: %v", err)
			}
			if u, err := get(t, s2, "users", id); err != nil || u.Email != email {
				t.Fatalf("after reopen: %+v, %v", u, err)
			}
		})
	}
}

// TestEncryptionKeyMismatch: a store opens only with the key it was made
// with; anything else is ErrKeyMismatch and leaves the store intact.
func TestEncryptionKeyMismatch(t *testing.T) {
	encDir, plainDir := t.TempDir(), t.TempDir()
	key := newKey(t)
	for _, d := range []struct {
		dir string
		key []byte
	}{{encDir, key}, {plainDir, nil}} {
		s, err := openWith(t, d.dir, d.key, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := put(t, s, "t", "a", user{Name: "kept"}); err != nil {
			t.Fatal(err)
		}
		s.Close()
	}
	for _, c := range []struct {
		name string
		dir  string
		key  []byte
	}{
		{"other key", encDir, newKey(t)},
		{"no key", encDir, nil},
		{"key on an unencrypted store", plainDir, newKey(t)},
	} {
		t.Run(c.name, func(t *testing.T) {
			s, err := openWith(t, c.dir, c.key, 0)
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			if !errors.Is(err, ErrKeyMismatch) {
				t.Fatalf("err = %v, want ErrKeyMismatch", err)
			}
		})
	}
	t.Run("bad key length", func(t *testing.T) {
		if s, err := openWith(t, t.TempDir(), make([]byte, 20), 0); err == nil {
			s.Close()
			t.Fatal("Open with a 20-byte key succeeded")
		}
	})
	s, err := openWith(t, encDir, key, 0)
	if err != nil {
		t.Fatalf("right key after failed attempts: %v", err)
	}
	if u, err := get(t, s, "t", "a"); err != nil || u.Name != "kept" {
		t.Fatalf("get = %+v, %v", u, err)
	}
}

// TestEncryptionKeyCopied: Open copies the key, so the caller may clear its
// slice at once; Badger keeps sealing new data keys with the copy (here a
// new one at every open, with rotation forced) and the store reopens.
func TestEncryptionKeyCopied(t *testing.T) {
	dir := t.TempDir()
	key := newKey(t)
	saved := bytes.Clone(key)
	for round := range 3 {
		k := bytes.Clone(saved)
		s, err := openWith(t, dir, k, time.Nanosecond)
		if err != nil {
			t.Fatalf("round %d: open: %v", round, err)
		}
		clear(k)
		for i := range 50 {
			if err := put(t, s, "t", fmt.Sprintf("%d-%03d", round, i), user{N: i}); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	clear(key)
	s, err := openWith(t, dir, saved, 0)
	if err != nil {
		t.Fatalf("final open: %v", err)
	}
	var n int
	err = s.View(context.Background(), func(tx *Txn) error {
		var err error
		n, err = tx.Count("t", Query{})
		return err
	})
	if err != nil || n != 150 {
		t.Fatalf("count = %d, %v; want 150", n, err)
	}
}
