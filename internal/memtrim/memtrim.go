// Package memtrim hands memory back to the system once a busy process has
// gone quiet.
//
// The Go runtime collects garbage only when the program allocates, and
// returns freed memory to the system gradually. A daemon that served a
// burst (a write storm leaves Badger's table-build buffers pooled for a
// few seconds, then garbage) and then idles keeps its peak footprint until
// the runtime's forced collection minutes later. Trimmer notices the quiet
// after a burst and collects once, returning what it freed.
package memtrim

import (
	"context"
	"log/slog"
	"runtime/debug"
	"runtime/metrics"
	"time"
)

// Trimmer watches the allocation rate; see Run.
type Trimmer struct {
	// Interval between looks at the allocation counter.
	Interval time.Duration
	// Busy is how many bytes allocated within one interval count as busy.
	Busy uint64
	// Quiet is how many intervals in a row below Busy, after a busy one,
	// make a quiet period worth one trim.
	Quiet int
	// Trim frees memory; nil means debug.FreeOSMemory.
	Trim func()
	// Log gets one debug line per trim; nil means no log.
	Log *slog.Logger

	// allocated reads the cumulative bytes allocated (tests set it).
	allocated func() uint64
}

// Defaults: a trim after 15 s with less than 16 MiB allocated in each 5 s.
func New(log *slog.Logger) *Trimmer {
	return &Trimmer{Interval: 5 * time.Second, Busy: 16 << 20, Quiet: 3, Log: log}
}

// Run watches until ctx ends.
func (t *Trimmer) Run(ctx context.Context) {
	tick := time.NewTicker(t.Interval)
	defer tick.Stop()
	read := t.allocated
	if read == nil {
		read = heapAllocated
	}
	var st state
	st.last = read()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		if !st.observe(read(), t.Busy, t.Quiet) {
			continue
		}
		before := retained()
		if t.Trim != nil {
			t.Trim()
		} else {
			debug.FreeOSMemory()
		}
		if t.Log != nil {
			t.Log.Debug("memory returned to the system after a busy period", "retained_before", before, "retained_after", retained())
		}
	}
}

// state is the busy/quiet tracking of Run.
type state struct {
	last  uint64 // allocation counter at the previous look
	busy  bool   // a busy interval since the last trim
	quiet int    // quiet intervals in a row since then
}

// observe takes the counter at the end of an interval and reports whether
// to trim now: once per quiet period that follows a busy one.
func (s *state) observe(now, busy uint64, quiet int) bool {
	delta := now - s.last
	s.last = now
	if delta >= busy {
		s.busy, s.quiet = true, 0
		return false
	}
	if !s.busy {
		return false
	}
	s.quiet++
	if s.quiet < quiet {
		return false
	}
	s.busy, s.quiet = false, 0
	return true
}

func heapAllocated() uint64 {
	s := []metrics.Sample{{Name: "/gc/heap/allocs:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64()
}

// retained is the memory the runtime holds from the system and has not
// returned.
func retained() uint64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	return s[0].Value.Uint64() - s[1].Value.Uint64()
}
