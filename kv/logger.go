package kv

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"
)

// badgerLogger routes Badger's logging to slog, dropping INFO and DEBUG.
// Badger repeats some errors in loops while storage fails (a memtable
// flush retried every second, a compaction every few milliseconds): each
// of its messages (by format) is logged at once the first time, then at
// most once per interval with how many it stands for, the interval
// doubling from badgerLogMin to badgerLogMax while the repeats go on.
type badgerLogger struct {
	l *slog.Logger

	mu      sync.Mutex
	limits  map[string]*logEvery // by format
	ignored []string             // tables Badger said it ignored
}

const (
	badgerLogMin = 10 * time.Second
	badgerLogMax = 5 * time.Minute
	// maxLimits bounds the formats tracked (Badger's are a fixed set;
	// this is a safety net).
	maxLimits = 256
)

func newBadgerLogger(l *slog.Logger) *badgerLogger {
	return &badgerLogger{l: l, limits: make(map[string]*logEvery)}
}

func (b *badgerLogger) Errorf(f string, args ...any)   { b.emit(slog.LevelError, f, args) }
func (b *badgerLogger) Warningf(f string, args ...any) { b.emit(slog.LevelWarn, f, args) }
func (*badgerLogger) Infof(string, ...any)             {}
func (*badgerLogger) Debugf(string, ...any)            {}

func (b *badgerLogger) emit(level slog.Level, f string, args []any) {
	msg := strings.TrimSpace(fmt.Sprintf(f, args...))
	b.mu.Lock()
	// With checksum verification, Badger skips a table that fails it,
	// saying only this; Open refuses the store instead (kv.go).
	if name, ok := strings.CutPrefix(msg, "Ignoring table "); ok {
		b.ignored = append(b.ignored, strings.TrimSpace(name))
	}
	lim := b.limits[f]
	if lim == nil {
		if len(b.limits) >= maxLimits {
			clear(b.limits)
		}
		lim = &logEvery{min: badgerLogMin, max: badgerLogMax}
		b.limits[f] = lim
	}
	n, ok := lim.tick(time.Now())
	b.mu.Unlock()
	if !ok {
		return
	}
	attrs := []any{"component", "badger"}
	if n > 1 {
		attrs = append(attrs, "repeated", n)
	}
	b.l.Log(context.Background(), level, msg, attrs...)
}

// takeIgnored returns and forgets the tables Badger ignored.
func (b *badgerLogger) takeIgnored() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := b.ignored
	b.ignored = nil
	return out
}
