package audit

import (
	"bytes"
	"context"
	"log/slog"
)

// Journal gets a copy of every line of the log (Options.Journal): an
// external copy of the chain, such as the system journal.
type Journal interface {
	// Copy takes the lines of one write to the log, in order, each ending
	// in '\n'. It must not keep lines after it returns.
	Copy(lines []byte)
}

// LogJournal copies each line to logger as an info record "audit" with the
// line in its audit_entry attribute.
func LogJournal(logger *slog.Logger) Journal { return logJournal{logger} }

type logJournal struct{ log *slog.Logger }

func (j logJournal) Copy(lines []byte) {
	for line := range bytes.Lines(lines) {
		j.log.LogAttrs(context.Background(), slog.LevelInfo, "audit",
			slog.String("audit_entry", string(bytes.TrimSuffix(line, []byte("\n")))))
	}
}
