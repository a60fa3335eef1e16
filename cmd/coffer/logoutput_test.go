package main

import (
	"bytes"
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
