package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"maps"
	"slices"
	"strconv"
)

// Journal gets a copy of every line of the log (Options.Journal): an
// external copy of the chain, such as the system journal.
type Journal interface {
	// Copy takes the lines of one write to the log, in order, each ending
	// in '\n'. It must not keep lines after it returns.
	Copy(lines []byte)
}

// EntryJournal is a Journal that also takes the entries the lines encode,
// one per line in order, so that it need not decode them again: the log
// has them at hand, and decoding each line cost a fifth of a TokenReview.
type EntryJournal interface {
	Journal
	CopyEntries(lines []byte, entries []Entry)
}

// LogJournal copies each line to logger as an info record that says what
// happened in words (Describe, prefixed "audit: "), with the line whole
// in its audit_entry attribute and, as attributes of their own, its seq,
// action and outcome and the ids of its target (so that under the
// journal COFFER_SECRET=<id> finds a secret's trail). Names in the target
// stay in audit_entry only.
func LogJournal(logger *slog.Logger) EntryJournal { return logJournal{logger} }

type logJournal struct{ log *slog.Logger }

func (j logJournal) Copy(lines []byte) { j.CopyEntries(lines, nil) }

// CopyEntries is Copy with the entries of the lines (decoded from them
// when entries does not hold one per line).
func (j logJournal) CopyEntries(lines []byte, entries []Entry) {
	if bytes.Count(lines, []byte("\n")) != len(entries) {
		entries = nil
	}
	i := 0
	for line := range bytes.Lines(lines) {
		line = bytes.TrimSuffix(line, []byte("\n"))
		msg, attrs := "audit", []slog.Attr{slog.String("audit_entry", string(line))}
		var e Entry
		ok := entries != nil
		if ok {
			e = entries[i]
		} else {
			ok = json.Unmarshal(line, &e) == nil
		}
		i++
		if ok {
			attrs = append(attrs, slog.Uint64("audit_seq", e.Seq))
			switch e.Type {
			case TypeCheckpoint:
				msg = "audit: checkpoint signed at entry " + strconv.FormatUint(e.Seq, 10)
			case TypeEvent:
				msg = "audit: " + Describe(e.Event)
				attrs = append(attrs, slog.String("action", e.Action), slog.String("outcome", e.Outcome))
				for _, k := range slices.Sorted(maps.Keys(e.Target)) {
					if v := e.Target[k]; looksLikeID(v) && k != "action" && k != "outcome" && k != "audit_entry" && k != "audit_seq" {
						attrs = append(attrs, slog.String(k, v))
					}
				}
			}
		}
		j.log.LogAttrs(context.Background(), slog.LevelInfo, msg, attrs...)
	}
}
