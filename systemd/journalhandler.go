package systemd

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strconv"
	"sync"
)

// NewJournalHandler returns a slog handler for when stderr is the journal
// (JournalStream): each line starts with its syslog priority ("<6>"), which
// journald turns into the entry's PRIORITY, and carries no timestamp
// (journald adds its own). The rest is slog's key=value text.
func NewJournalHandler(w io.Writer, opts *slog.HandlerOptions) slog.Handler {
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
