package systemd

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"

	"github.com/coreos/go-systemd/v22/journal"
)

// NewJournalHandler returns a slog handler for when stderr is the journal
// (JournalStream). When journald's native socket answers, each record is
// sent as a structured entry: MESSAGE, PRIORITY and one COFFER_<KEY> field
// per attribute (`journalctl -u coffer COFFER_SECRET=...` finds them).
// Otherwise each stderr line starts with its syslog priority ("<6>"),
// which journald turns into PRIORITY, and carries no timestamp (journald
// adds its own).
func NewJournalHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	if journal.Enabled() {
		level := slog.Leveler(slog.LevelInfo)
		if opts != nil && opts.Level != nil {
			level = opts.Level
		}
		return &nativeHandler{level: level, send: journal.Send}
	}
	return newPrefixHandler(w, opts)
}

func newPrefixHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
	j := &journalShared{w: w}
	if opts == nil {
		opts = &slog.HandlerOptions{}
	}
	o := *opts
	inner := o.ReplaceAttr
	o.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
		if len(groups) == 0 && a.Key == slog.TimeKey {
			return slog.Attr{}
		}
		if inner != nil {
			return inner(groups, a)
		}
		return a
	}
	return &journalHandler{inner: slog.NewTextHandler(&j.buf, &o), shared: j}
}

type journalShared struct {
	mu  sync.Mutex
	w   io.Writer
	buf bytes.Buffer
}

type journalHandler struct {
	inner  slog.Handler
	shared *journalShared
}

// priority maps a level to syslog: error 3, warning 4, info 6, debug 7.
func priority(l slog.Level) int {
	switch {
	case l >= slog.LevelError:
		return 3
	case l >= slog.LevelWarn:
		return 4
	case l >= slog.LevelInfo:
		return 6
	}
	return 7
}

func (h *journalHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *journalHandler) Handle(ctx context.Context, r slog.Record) error {
	s := h.shared
	s.mu.Lock()
	defer s.mu.Unlock()
	s.buf.Reset()
	if err := h.inner.Handle(ctx, r); err != nil {
		return err
	}
	line := make([]byte, 0, s.buf.Len()+3)
	line = append(line, '<')
	line = strconv.AppendInt(line, int64(priority(r.Level)), 10)
	line = append(line, '>')
	line = append(line, s.buf.Bytes()...)
	_, err := s.w.Write(line)
	return err
}

func (h *journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return &journalHandler{inner: h.inner.WithAttrs(as), shared: h.shared}
}

func (h *journalHandler) WithGroup(name string) slog.Handler {
	return &journalHandler{inner: h.inner.WithGroup(name), shared: h.shared}
}

// nativeHandler sends records to journald's socket with structured fields.
type nativeHandler struct {
	level  slog.Leveler
	attrs  []slog.Attr // from WithAttrs, already prefixed by their groups
	groups []string
	send   func(message string, p journal.Priority, vars map[string]string) error
}

func (h *nativeHandler) Enabled(_ context.Context, l slog.Level) bool {
	return l >= h.level.Level()
}

func (h *nativeHandler) Handle(_ context.Context, r slog.Record) error {
	vars := map[string]string{"SYSLOG_IDENTIFIER": "coffer", "COFFER_LEVEL": r.Level.String()}
	for _, a := range h.attrs {
		addJournalVar(vars, nil, a)
	}
	r.Attrs(func(a slog.Attr) bool {
		addJournalVar(vars, h.groups, a)
		return true
	})
	return h.send(r.Message, journal.Priority(priority(r.Level)), vars)
}

func (h *nativeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]slog.Attr(nil), h.attrs...)
	for _, a := range as {
		if len(h.groups) > 0 {
			a.Key = strings.Join(h.groups, ".") + "." + a.Key
		}
		c.attrs = append(c.attrs, a)
	}
	return &c
}

func (h *nativeHandler) WithGroup(name string) slog.Handler {
	c := *h
	c.groups = append(append([]string(nil), h.groups...), name)
	return &c
}

// addJournalVar adds attribute a (under groups) as COFFER_<KEY>: journal
// field names are upper-case letters, digits and underscores.
func addJournalVar(vars map[string]string, groups []string, a slog.Attr) {
	a.Value = a.Value.Resolve()
	if a.Equal(slog.Attr{}) {
		return
	}
	key := a.Key
	if len(groups) > 0 {
		key = strings.Join(groups, ".") + "." + key
	}
	if a.Value.Kind() == slog.KindGroup {
		for _, g := range a.Value.Group() {
			addJournalVar(vars, append(groups, a.Key), g)
		}
		return
	}
	vars[journalField(key)] = a.Value.String()
}

func journalField(key string) string {
	var b strings.Builder
	b.WriteString("COFFER_")
	for _, r := range key {
		switch {
		case r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return b.String()
}
