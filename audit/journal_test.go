package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// recordingJournal keeps what it is given.
type recordingJournal struct {
	mu    sync.Mutex
	calls int
	buf   bytes.Buffer
}

func (j *recordingJournal) Copy(lines []byte) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.calls++
	j.buf.Write(lines)
}

// The journal gets every line of the log, events and checkpoints, in the
// order of the file, a batch per write.
func TestJournalCopiesEveryLine(t *testing.T) {
	dir := t.TempDir()
	j := &recordingJournal{}
	l, err := Open(context.Background(), Options{
		Dir: dir, Signer: newTestSigner(t, "k1"), CheckpointEvery: 7, CheckpointInterval: time.Hour,
		Logger: discard(), Journal: j,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 50 {
		l.Record(event(i))
	}
	closeLog(t, l)
	file, err := os.ReadFile(filepath.Join(dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	if !bytes.Equal(j.buf.Bytes(), file) {
		t.Fatalf("the journal got %d bytes, not the %d of the log:\n%.400s", j.buf.Len(), len(file), j.buf.String())
	}
	lines := bytes.Count(file, []byte("\n"))
	if lines < 50+7 || j.calls > lines || j.calls == 0 {
		t.Fatalf("%d lines in %d copies", lines, j.calls)
	}
}

// LogJournal writes one record per line, the line whole in audit_entry.
func TestLogJournal(t *testing.T) {
	var out bytes.Buffer
	j := LogJournal(slog.New(slog.NewJSONHandler(&out, nil)))
	j.Copy([]byte("{\"seq\":1}\n{\"seq\":2}\n"))
	got := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(got) != 2 || !strings.Contains(got[0], `"audit_entry":"{\"seq\":1}"`) || !strings.Contains(got[1], `"audit_entry":"{\"seq\":2}"`) {
		t.Fatalf("records:\n%s", out.String())
	}
	// An event says what happened in words, with its ids as fields; a
	// name in its target stays in audit_entry only.
	out.Reset()
	j.Copy([]byte(`{"seq":7,"time":"t","prev":"p","type":"event","action":"binding.create","outcome":"ok","principal":{"channel":"unix","uid":1000},` +
		`"target":{"binding":"0badc0de-0000-4000-8000-000000000009","secret":"01a2b3c4-0000-4000-8000-000000000001","unit":"payroll.service","unit_credential":"dbpass"}}` + "\n" +
		`{"seq":8,"time":"t","prev":"p","type":"checkpoint","kid":"k","sig":"s"}` + "\n"))
	got = strings.Split(strings.TrimSpace(out.String()), "\n")
	var rec map[string]any
	if err := json.Unmarshal([]byte(got[0]), &rec); err != nil {
		t.Fatal(err)
	}
	if rec["msg"] != "audit: binding 0badc0de… created of secret 01a2b3c4… by uid 1000" || rec["secret"] != "01a2b3c4-0000-4000-8000-000000000001" ||
		rec["action"] != "binding.create" || rec["outcome"] != "ok" || rec["audit_seq"] != float64(7) || rec["unit"] != nil || rec["unit_credential"] != nil {
		t.Fatalf("event record: %s", got[0])
	}
	if !strings.Contains(got[1], `"msg":"audit: checkpoint signed at entry 8"`) {
		t.Fatalf("checkpoint record: %s", got[1])
	}
}

// CopyEntries with the entries the log encoded writes exactly what Copy
// writes by decoding the lines; entries that do not match the lines (one
// per line) are not used.
func TestLogJournalEntries(t *testing.T) {
	ents := []Entry{
		{Seq: 7, Time: "t", Prev: "p", Type: TypeEvent, Event: Event{Action: "binding.create", Outcome: OutcomeOK,
			Principal: &Principal{Channel: "unix", UID: new(uint32(1000))},
			Target:    map[string]string{"binding": "0badc0de-0000-4000-8000-000000000009", "secret": "01a2b3c4-0000-4000-8000-000000000001", "unit": "payroll.service"}}},
		{Seq: 8, Time: "t", Prev: "p", Type: TypeCheckpoint},
	}
	var lines bytes.Buffer
	for i := range ents {
		if err := encodeEntry(&lines, &ents[i]); err != nil {
			t.Fatal(err)
		}
	}
	var decoded, given, mismatched bytes.Buffer
	LogJournal(slog.New(slog.NewJSONHandler(&decoded, nil))).Copy(lines.Bytes())
	LogJournal(slog.New(slog.NewJSONHandler(&given, nil))).CopyEntries(lines.Bytes(), ents)
	LogJournal(slog.New(slog.NewJSONHandler(&mismatched, nil))).CopyEntries(lines.Bytes(), ents[:1])
	strip := func(b *bytes.Buffer) string {
		return regexp.MustCompile(`"time":"[^"]*",`).ReplaceAllString(b.String(), "")
	}
	if strip(&given) != strip(&decoded) || strip(&mismatched) != strip(&decoded) {
		t.Fatalf("from entries:\n%s\nfrom lines:\n%s\nmismatched:\n%s", given.String(), decoded.String(), mismatched.String())
	}
	if !strings.Contains(decoded.String(), "binding 0badc0de") {
		t.Fatalf("no description:\n%s", decoded.String())
	}
}
