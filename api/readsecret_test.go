package api

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

// recordingReader hands out its data in small reads and keeps every buffer
// it was asked to fill, to check afterwards that the outgrown ones were
// cleared.
type recordingReader struct {
	r    io.Reader
	bufs [][]byte
}

func (rr *recordingReader) Read(p []byte) (int, error) {
	rr.bufs = append(rr.bufs, p[:cap(p)])
	return rr.r.Read(p)
}

func TestReadSecret(t *testing.T) {
	secret := strings.Repeat("s3cret!", 1000) // 7000 bytes: several growths from 512
	for _, tt := range []struct {
		name string
		hint int64
	}{
		{"no hint", -1},
		{"exact hint", int64(len(secret))},
		{"short hint", 10},
	} {
		t.Run(tt.name, func(t *testing.T) {
			rr := &recordingReader{r: iotest.HalfReader(strings.NewReader(secret))}
			got, err := ReadSecret(rr, tt.hint)
			if err != nil || string(got) != secret {
				t.Fatalf("ReadSecret = %d bytes, %v", len(got), err)
			}
			// Every buffer read into that is not got's own array holds
			// nothing any more.
			for _, b := range rr.bufs {
				if &b[len(b)-1] == &got[:cap(got)][cap(got)-1] {
					continue
				}
				if bytes.ContainsFunc(b, func(r rune) bool { return r != 0 }) {
					t.Fatalf("an outgrown buffer of %d bytes still holds data", len(b))
				}
			}
			if tt.hint == int64(len(secret)) && cap(got) != len(secret)+1 {
				t.Errorf("with an exact hint: cap %d, want one allocation of %d", cap(got), len(secret)+1)
			}
		})
	}
	boom := errors.New("boom")
	got, err := ReadSecret(io.MultiReader(strings.NewReader("part"), iotest.ErrReader(boom)), -1)
	if !errors.Is(err, boom) || string(got) != "part" {
		t.Fatalf("ReadSecret = %q, %v", got, err)
	}
}
