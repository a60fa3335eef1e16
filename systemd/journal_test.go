package systemd

import (
	"fmt"
	"os"
	"syscall"
	"testing"
)

func TestJournalStream(t *testing.T) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(os.Stderr.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		env  string
		want bool
	}{
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino), true},
		{fmt.Sprintf("%d:%d", st.Dev, st.Ino+1), false},
		{"journal", false},
		{"", false},
	} {
		t.Run(tc.env, func(t *testing.T) {
			t.Setenv("JOURNAL_STREAM", tc.env)
			if got := JournalStream(); got != tc.want {
				t.Fatalf("JournalStream() = %v with JOURNAL_STREAM=%q", got, tc.env)
			}
		})
	}
}
