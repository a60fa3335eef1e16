package peer

import (
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestAllowed(t *testing.T) {
	me := uint32(os.Getuid())
	for _, tc := range []struct {
		uid   uint32
		extra []uint32
		want  bool
	}{
		{0, nil, true},
		{me, nil, true},
		{4242, []uint32{4242}, true},
		{4243, []uint32{4242}, me == 4243},
		{65534, nil, me == 65534},
	} {
		if got := Allowed(tc.uid, tc.extra); got != tc.want {
			t.Errorf("Allowed(%d, %v) = %v, want %v", tc.uid, tc.extra, got, tc.want)
		}
	}
}

// TestListenerClosesRefusedPeers: a refused peer's connection is closed
// at accept, and the next allowed one is returned.
func TestListenerClosesRefusedPeers(t *testing.T) {
	path := filepath.Join(t.TempDir(), "s.sock")
	ul, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	calls := 0
	l := &Listener{Listener: ul, What: "test", Log: slog.New(slog.DiscardHandler), Allow: func(uid uint32) bool {
		calls++
		if uid != uint32(os.Getuid()) {
			t.Errorf("peer uid %d, want ours (%d)", uid, os.Getuid())
		}
		return calls > 1 // the first connection is refused
	}}
	refused, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer refused.Close()
	admitted, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer admitted.Close()
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	refused.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := refused.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("the refused connection: read %v, want EOF (closed by the listener)", err)
	}
	if _, err := admitted.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 1)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(buf); err != nil || buf[0] != 'x' {
		t.Errorf("the admitted connection is not the one accepted: %v %q", err, buf)
	}
}
