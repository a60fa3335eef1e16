package atomicfile

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// entries lists the names in dir (temporary files included).
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func wantFile(t *testing.T, path, content string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	if string(b) != content {
		t.Errorf("%s = %q, want %q", path, b, content)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != perm {
		t.Errorf("%s mode %v, want %v", path, fi.Mode().Perm(), perm)
	}
}

func TestWrite(t *testing.T) {
	tests := []struct {
		name     string
		existing string // "" = no file before
		data     string
		perm     os.FileMode
	}{
		{"new file", "", "hello\n", 0o600},
		{"replaces", "old content that is longer", "new", 0o640},
		{"empty data", "x", "", 0o600},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "f")
			if tc.existing != "" {
				if err := os.WriteFile(path, []byte(tc.existing), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			if err := Write(path, []byte(tc.data), tc.perm); err != nil {
				t.Fatalf("Write: %v", err)
			}
			wantFile(t, path, tc.data, tc.perm)
			if got := entries(t, dir); len(got) != 1 {
				t.Errorf("directory holds %v, want only f (no temporary file left)", got)
			}
		})
	}
}

func TestWriteErrors(t *testing.T) {
	dir := t.TempDir()
	if err := Write(filepath.Join(dir, "missing", "f"), []byte("x"), 0o600); err == nil || !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Write into a missing directory: %v, want ErrNotExist", err)
	}
	// a directory in the way is not replaced
	if err := os.Mkdir(filepath.Join(dir, "d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := Write(filepath.Join(dir, "d"), []byte("x"), 0o600); err == nil {
		t.Errorf("Write over a directory succeeded")
	}
	if got := entries(t, dir); len(got) != 1 || got[0] != "d" {
		t.Errorf("directory holds %v after failed writes, want only d", got)
	}
}

func TestCreate(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pin")
	if err := Create(path, []byte("first"), 0o600); err != nil {
		t.Fatalf("Create: %v", err)
	}
	wantFile(t, path, "first", 0o600)
	err := Create(path, []byte("second"), 0o644)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create: %v, want fs.ErrExist", err)
	}
	wantFile(t, path, "first", 0o600)
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v, want only pin", got)
	}
}

// TestCreateRace: of many concurrent creators exactly one wins and the file
// holds its data whole.
func TestCreateRace(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pin")
	const n = 16
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = Create(path, []byte(fmt.Sprintf("writer %02d", i)), 0o600) })
	}
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("writers %d and %d both created the file", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, fs.ErrExist):
			t.Errorf("writer %d: %v", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer created the file")
	}
	wantFile(t, path, fmt.Sprintf("writer %02d", winner), 0o600)
	if got := entries(t, dir); len(got) != 1 {
		t.Errorf("directory holds %v, want only pin", got)
	}
}

func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	deep := filepath.Join(root, "a", "b", "c")
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Fatalf("MkdirAll: %v", err)
	}
	for _, p := range []string{filepath.Join(root, "a"), filepath.Join(root, "a", "b"), deep} {
		fi, err := os.Stat(p)
		if err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Errorf("%s: %v %v, want a 0700 directory", p, fi, err)
		}
	}
	if err := MkdirAll(deep, 0o700); err != nil {
		t.Errorf("MkdirAll of an existing directory: %v", err)
	}
	file := filepath.Join(root, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := MkdirAll(filepath.Join(file, "sub"), 0o700); err == nil {
		t.Errorf("MkdirAll under a regular file succeeded")
	}
	if err := MkdirAll(file, 0o700); err == nil {
		t.Errorf("MkdirAll of a regular file succeeded")
	}
}
