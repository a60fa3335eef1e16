package daemon

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestRemoveLeftovers fills a state directory with what interrupted
// restores, writes and backups leave, and checks which go: all of them
// once the restore is known finished, none while its marker says it is
// not, and one log line for each removed.
func TestRemoveLeftovers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		marker    bool
		want      []string
		wantLines int
	}{
		{"after a finished restore", false, []string{"audit", "data", "store.key", "store.witness"}, 4},
		{"while a restore is unfinished", true, []string{
			".backup.partial-1", ".replaced-2", ".restore-1", ".store.key.tmp-9", "audit", "data", restoreMarkerName, "store.key", "store.witness",
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, d := range []string{".restore-1", ".replaced-2/data", "data", "audit"} {
				if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
					t.Fatal(err)
				}
			}
			files := []string{".store.key.tmp-9", ".backup.partial-1", "store.key", "store.witness", ".replaced-2/data/MANIFEST"}
			if tc.marker {
				files = append(files, restoreMarkerName)
			}
			for _, f := range files {
				if err := os.WriteFile(filepath.Join(dir, f), []byte("x"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			var buf bytes.Buffer
			if err := removeLeftovers(dir, slog.New(slog.NewTextHandler(&buf, nil))); err != nil {
				t.Fatal(err)
			}
			if got := entries(t, dir); !slices.Equal(got, tc.want) {
				t.Errorf("left %v, want %v", got, tc.want)
			}
			if n := strings.Count(buf.String(), "removed a leftover"); n != tc.wantLines {
				t.Errorf("%d lines logged, want %d:\n%s", n, tc.wantLines, buf.String())
			}
		})
	}
}
