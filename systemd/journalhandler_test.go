package systemd

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/coreos/go-systemd/v22/journal"
)

func TestJournalHandler(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(newPrefixHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug})).With("daemon", "coffer")
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

func TestNativeJournalFields(t *testing.T) {
	type entry struct {
		msg  string
		prio journal.Priority
		vars map[string]string
	}
	var got []entry
	h := &nativeHandler{level: slog.LevelDebug, send: func(m string, p journal.Priority, v map[string]string) error {
		got = append(got, entry{m, p, v})
		return nil
	}}
	log := slog.New(h).With("daemon", "coffer")
	log.Warn("audit: delivered", "secret", "s1", "unit-name", "x.service")
	log.WithGroup("g").Info("i", slog.Group("sub", "k", 1))
	if len(got) != 2 {
		t.Fatalf("%d entries", len(got))
	}
	if got[0].msg != "audit: delivered" || got[0].prio != journal.PriWarning ||
		got[0].vars["COFFER_SECRET"] != "s1" || got[0].vars["COFFER_UNIT_NAME"] != "x.service" || got[0].vars["COFFER_DAEMON"] != "coffer" {
		t.Fatalf("entry %+v", got[0])
	}
	if got[1].prio != journal.PriInfo || got[1].vars["COFFER_G_SUB_K"] != "1" {
		t.Fatalf("entry %+v", got[1])
	}
}
