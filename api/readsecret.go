package api

import (
	"errors"
	"io"
)

// ReadSecret reads r to EOF like io.ReadAll, but clears every buffer it
// outgrows, so that the only copy of what it read is the one it returns.
// sizeHint, when known (a Content-Length, a file size), makes that one
// allocation. On error the returned bytes are what was read so far: the
// caller clears them too.
func ReadSecret(r io.Reader, sizeHint int64) ([]byte, error) {
	size := 512
	if sizeHint >= 0 && sizeHint < 1<<30 {
		size = max(int(sizeHint)+1, size) // +1: room to read EOF without growing
	}
	b := make([]byte, 0, size)
	for {
		if len(b) == cap(b) {
			nb := make([]byte, len(b), 2*cap(b))
			copy(nb, b)
			clear(b)
			b = nb
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if errors.Is(err, io.EOF) {
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}
