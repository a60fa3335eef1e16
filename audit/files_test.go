package audit

import (
	"compress/gzip"
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestListFiles(t *testing.T) {
	seq := func(n uint64) string { return rotatedName(n) }
	tests := []struct {
		name  string
		files []string
		want  []string // base names, in order
	}{
		{"rotated, archived and current", []string{seq(9) + gzSuffix, seq(1) + gzSuffix, seq(20), currentName},
			[]string{seq(1) + gzSuffix, seq(9) + gzSuffix, seq(20), currentName}},
		{"both forms of one file: the uncompressed one", []string{seq(1), seq(1) + gzSuffix, seq(7) + gzSuffix},
			[]string{seq(1), seq(7) + gzSuffix}},
		{"not log files", []string{"audit-1.log", seq(3) + ".gz.tmp", seq(4) + ".bak", "head", "head.tmp", "audit.log.gz", seq(5) + gzSuffix},
			[]string{seq(5) + gzSuffix}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, name := range tt.files {
				if err := os.WriteFile(filepath.Join(dir, name), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			files, err := listFiles(dir)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, f := range files {
				got = append(got, filepath.Base(f.path))
				if f.gz != strings.HasSuffix(f.path, gzSuffix) {
					t.Errorf("%s: gz %v", f.path, f.gz)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Fatalf("files %v, want %v", got, tt.want)
			}
		})
	}
}

// gzipFile replaces a rotated file by its archived form, as the archiver
// does.
func gzipFile(t testing.TB, path string) {
	t.Helper()
	in, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	out, err := os.Create(path + gzSuffix)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(out)
	if _, err := io.Copy(zw, in); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := out.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
}

// Archived files are read like the others: by Open, the readers and
// verification.
func TestReadArchivedFiles(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 4, 600)
	for i := range 20 {
		l.Record(event(i))
	}
	closeLog(t, l)
	files, err := listFiles(dir)
	if err != nil || len(files) < 3 {
		t.Fatalf("files %+v, %v", files, err)
	}
	for _, f := range files[:len(files)-1] {
		gzipFile(t, f.path)
	}
	rep := verifyDir(t, dir, s.keys())
	if !rep.OK || rep.FirstSeq != 1 {
		t.Fatalf("verify %+v", rep)
	}
	one, err := VerifyFile(context.Background(), files[1].path+gzSuffix, s.keys())
	if err != nil || !one.OK || one.FirstSeq != files[1].firstSeq {
		t.Fatalf("VerifyFile(%s) = %+v, %v", files[1].path+gzSuffix, one, err)
	}
	// An empty audit.log (as right after a rotation): Open finds the end
	// of the chain in an archive.
	if err := os.Truncate(filepath.Join(dir, currentName), 0); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, headName)); err != nil {
		t.Fatal(err)
	}
	last, err := listFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	prevLast := last[len(last)-2]
	l = openLog(t, dir, s, 4, 600)
	l.Record(event(100))
	page, lastSeq, err := l.Entries(context.Background(), 0, MaxEntries)
	closeLog(t, l)
	if err != nil || uint64(len(page)) != lastSeq || !prevLast.gz {
		t.Fatalf("%d entries, last %d, %v; %+v", len(page), lastSeq, err, prevLast)
	}
	for i, raw := range page {
		if seq, _ := peekSeq(raw); seq != uint64(i+1) {
			t.Fatalf("entry %d has seq %d", i, seq)
		}
	}
	if rep := verifyDir(t, dir, s.keys()); !rep.OK {
		t.Fatalf("after a restart: %+v", rep)
	}
}
