package systemd

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

func TestJournalHandler(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(NewJournalHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})).With("daemon", "coffer")
	log.Error("e", "k", 1)
	log.Warn("w")
	log.Info("i")
	log.WithGroup("g").Debug("d", "x", "y")
	want := []string{
		`<3>level=ERROR msg=e daemon=coffer k=1`,
		`<4>level=WARN msg=w daemon=coffer`,
		`<6>level=INFO msg=i daemon=coffer`,
		`<7>level=DEBUG msg=d daemon=coffer g.x=y`,
	}
	got := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}
