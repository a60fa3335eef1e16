package hsm

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
)

// TestDevPIN: the dev PIN file is created whole (0600, 32 hex digits and a
// newline), kept on later calls, shared by concurrent creators, and leaves
// no temporary file behind; a torn (empty) file is an error, not a new PIN.
func TestDevPIN(t *testing.T) {
	tests := []struct {
		name     string
		file     bool   // a file exists before the call
		existing string // its content
		wantErr  string
	}{
		{name: "created when missing"},
		{name: "kept when present", file: true, existing: "0123456789abcdef0123456789abcdef\n"},
		{name: "empty file is an error", file: true, wantErr: "is empty"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "hsm-pin")
			if tc.file {
				if err := os.WriteFile(path, []byte(tc.existing), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			pin, err := devPIN(path)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("devPIN: %v, want an error with %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("devPIN: %v", err)
			}
			b, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if string(b) != pin+"\n" || !regexp.MustCompile(`^[0-9a-f]{32}$`).MatchString(pin) {
				t.Errorf("PIN file holds %d bytes, returned PIN %d chars; want 32 hex digits and a newline", len(b), len(pin))
			}
			if tc.file && pin+"\n" != tc.existing {
				t.Errorf("an existing PIN was replaced")
			}
			if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
				t.Errorf("PIN file mode: %v %v, want 0600", fi, err)
			}
			again, err := devPIN(path)
			if err != nil || again != pin {
				t.Errorf("second devPIN returned another PIN (err %v)", err)
			}
			if es, _ := os.ReadDir(dir); len(es) != 1 {
				t.Errorf("directory holds %d entries, want only hsm-pin", len(es))
			}
		})
	}
}

func TestDevPINConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "hsm-pin")
	const n = 8
	pins := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { pins[i], errs[i] = devPIN(path) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || pins[i] != pins[0] {
			t.Errorf("creator %d: err %v, same PIN as creator 0: %v", i, errs[i], pins[i] == pins[0])
		}
	}
}
