//go:build !nodaemon

package main

import (
	"bytes"
	"io"
	"log/slog"
	"sync"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/systemd"
)

// Log formats (--log-format, log_format in the config file).
const (
	logFormatAuto    = "auto"    // journal when stderr is the journal (JOURNAL_STREAM), else text
	logFormatText    = "text"    // slog's text: level=INFO msg="..." key=value
	logFormatJSON    = "json"    // slog's JSON, one object a line, for log shippers
	logFormatJournal = "journal" // structured journal entries (MESSAGE, PRIORITY, COFFER_<KEY>)
)

var logFormats = []string{logFormatAuto, logFormatText, logFormatJSON, logFormatJournal}

// logFormat is the daemon's log format, set once at start.
var logFormat = logFormatAuto

// newLogHandler is the daemon's log handler writing to w, in logFormat.
func newLogHandler(w io.Writer) slog.Handler {
	opts := &slog.HandlerOptions{Level: &logLevel}
	switch logFormat {
	case logFormatJSON:
		return slog.NewJSONHandler(w, opts)
	case logFormatText:
		return slog.NewTextHandler(w, opts)
	case logFormatJournal:
		return systemd.NewJournalHandler(w, opts)
	}
	if systemd.JournalStream() {
		return systemd.NewJournalHandler(w, opts)
	}
	return slog.NewTextHandler(w, opts)
}

// lockedWriter serializes the Writes of the log's handler and of the audit
// log's copy, so that neither ever lands inside the other.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// auditJournal copies the audit log's lines into the daemon's log, as
// records "audit" with the line in audit_entry, formatted by the daemon's
// own handler. A batch of lines is formatted into a buffer and written with
// one Write: with a record and a write(2) per line, copying cost as much as
// the rest of a /v1/authorize call. (Under journald's native protocol each
// record is its own datagram and the buffer stays empty.)
type auditJournal struct {
	out io.Writer
	mu  sync.Mutex
	buf bytes.Buffer
	fmt audit.EntryJournal // formats into buf
}

func newAuditJournal(out io.Writer) *auditJournal {
	j := &auditJournal{out: out}
	j.fmt = audit.LogJournal(slog.New(newLogHandler(&j.buf)))
	return j
}

func (j *auditJournal) Copy(lines []byte) { j.CopyEntries(lines, nil) }

// CopyEntries is Copy with the entries the lines encode (the audit log
// has them: no line is decoded again).
func (j *auditJournal) CopyEntries(lines []byte, entries []audit.Entry) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.buf.Reset()
	j.fmt.CopyEntries(lines, entries)
	if j.buf.Len() > 0 {
		// A failed write is the log's own problem: nothing to tell it here.
		_, _ = j.out.Write(j.buf.Bytes())
	}
	if j.buf.Cap() > 1<<20 {
		j.buf = bytes.Buffer{} // do not keep a burst's buffer
	}
}
