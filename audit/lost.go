package audit

import (
	"sync"
	"sync/atomic"
	"time"
)

// lostWhy is why events were lost (a set).
type lostWhy uint8

const (
	lostQueueFull lostWhy = 1 << iota
	lostWriteFailed
)

func (w lostWhy) String() string {
	switch w {
	case lostQueueFull:
		return "the queue was full: events were recorded faster than they could be written"
	case lostWriteFailed:
		return "writing the log failed: events were lost"
	default:
		return "the queue was full and writing the log failed: events were lost"
	}
}

// lostCounter counts the events lost since the last ActionLost entry.
type lostCounter struct {
	total   atomic.Uint64 // since Open
	pending atomic.Uint64 // not yet in an ActionLost entry (n)

	mu          sync.Mutex
	n           uint64
	first, last time.Time
	why         lostWhy
}

// addItem counts it as lost: one event, or the denials a coalesced line
// stands for.
func (c *lostCounter) addItem(it *item, why lostWhy) {
	n, first, last := uint64(1), it.at, it.at
	if it.sum {
		n, first, last = lostSummary(&it.ev)
	}
	c.add(n, first, last, why)
}

func (c *lostCounter) add(n uint64, first, last time.Time, why lostWhy) {
	c.mu.Lock()
	if c.n == 0 || first.Before(c.first) {
		c.first = first
	}
	if c.n == 0 || last.After(c.last) {
		c.last = last
	}
	c.n += n
	c.why |= why
	c.pending.Store(c.n)
	c.mu.Unlock()
	c.total.Add(n)
}

// take returns what was lost since the last call and starts counting
// again.
func (c *lostCounter) take() (n uint64, first, last time.Time, why lostWhy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n, first, last, why = c.n, c.first, c.last, c.why
	c.n, c.why = 0, 0
	c.pending.Store(0)
	return n, first, last, why
}
