package daemon

import (
	"os"
	"path/filepath"
	"testing"
)

func TestStoreExists(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty")
	full := filepath.Join(dir, "full")
	notDir := filepath.Join(dir, "file")
	for _, d := range []string{empty, full} {
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(full, "MANIFEST"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(notDir, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, dir string
		want      bool
	}{
		{"missing", filepath.Join(dir, "missing"), false},
		{"empty directory", empty, false},
		{"directory with files", full, true},
		{"unreadable (a file)", notDir, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := storeExists(tt.dir); got != tt.want {
				t.Errorf("storeExists(%s) = %v, want %v", tt.dir, got, tt.want)
			}
		})
	}
}
