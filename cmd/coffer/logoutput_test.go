//go:build !nodaemon

package main

import (
	"bytes"
	"log/slog"
	"strings"
	"testing"
)

// countingWriter counts Writes.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

// A batch of audit lines reaches the log as one record per line, the line
// whole, in a single Write.
func TestAuditJournalWritesABatchOnce(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "") // the text format
	var out countingWriter
	j := newAuditJournal(&lockedWriter{w: &out})
	j.Copy([]byte("{\"seq\":1,\"prev\":\"\"}\n{\"seq\":2,\"event\":{\"action\":\"authorize\"}}\n{\"seq\":3}\n"))
	if out.writes != 1 {
		t.Fatalf("%d writes for one batch, want 1", out.writes)
	}
	recs := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(recs) != 3 {
		t.Fatalf("%d records, want 3:\n%s", len(recs), out.String())
	}
	for i, want := range []string{`audit_entry="{\"seq\":1,\"prev\":\"\"}"`, `audit_entry="{\"seq\":2,\"event\":{\"action\":\"authorize\"}}"`, `audit_entry="{\"seq\":3}"`} {
		if !strings.Contains(recs[i], "level=INFO msg=audit ") || !strings.Contains(recs[i], want) {
			t.Fatalf("record %d = %s, want msg=audit and %s", i, recs[i], want)
		}
	}
	j.Copy(nil)
	if out.writes != 1 {
		t.Fatal("an empty batch was written")
	}
}

// --log-format picks the handler: json and text whatever JOURNAL_STREAM
// says, journal (the <N> priority prefix on a stream) even without it, and
// auto the journal only when stderr is one.
func TestLogFormats(t *testing.T) {
	t.Setenv("JOURNAL_STREAM", "") // not the journal
	defer func(f string) { logFormat = f }(logFormat)
	for _, tt := range []struct{ format, prefix string }{
		{logFormatJSON, `{"time":"`},
		{logFormatText, "time="},
		{logFormatJournal, "<6>"},
		{logFormatAuto, "time="},
	} {
		logFormat = tt.format
		var out bytes.Buffer
		slog.New(newLogHandler(&out)).Info("secret 01a2b3c4… rotated to version 3 by uid 1000", "secret", "01a2b3c4")
		if !strings.HasPrefix(out.String(), tt.prefix) || !strings.Contains(out.String(), "rotated to version 3") {
			t.Errorf("--log-format %s wrote %q, want it to start with %q", tt.format, out.String(), tt.prefix)
		}
	}
}
