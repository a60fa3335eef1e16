package audit

import (
	"sync"
	"sync/atomic"
	"time"
)

// DefaultCoalesceInterval is Options.CoalesceInterval's default.
const DefaultCoalesceInterval = time.Second

// Bounds of the coalescing table: maxCoalesceKeys callers, then one
// catch-all key per action for up to maxCatchAll actions, then one for
// everything.
const (
	maxCoalesceKeys = 4096
	maxCatchAll     = 256
)

// ReasonCoalescedCatchAll is the reason of a line that counts denials of
// many callers together (the coalescing table was full).
const ReasonCoalescedCatchAll = "denials of more callers than the log tells apart"

// denyKey is what makes two denials the same: the caller's identity (not
// its pid, nor the token id it presented: a flood varies them freely)
// and what was refused and why.
type denyKey struct {
	action, code, reason string
	status               int
	channel, vm          string
	uid, gid, cid        uint32
	has                  uint8 // hasUID | hasGID | hasCID
	tokenKind, user      string
	credential, session  string
	project              string
	catchAll             bool   // one per action (action "" for all): the table was full
	distinct             string // Event.Distinct
}

const (
	hasUID = 1 << iota
	hasGID
	hasCID
)

func keyOf(e *Event) denyKey {
	k := denyKey{action: e.Action, code: e.Code, reason: e.Reason, status: e.Status, distinct: e.Distinct}
	if p := e.Principal; p != nil {
		k.channel, k.vm = p.Channel, p.VM
		k.tokenKind, k.user, k.credential, k.session, k.project = p.TokenKind, p.User, p.Credential, p.Session, p.Project
		if p.UID != nil {
			k.uid, k.has = *p.UID, k.has|hasUID
		}
		if p.GID != nil {
			k.gid, k.has = *p.GID, k.has|hasGID
		}
		if p.CID != nil {
			k.cid, k.has = *p.CID, k.has|hasCID
		}
	}
	return k
}

// summary is the line that stands for n denials of key k between first and
// last.
func (k denyKey) summary(n uint64, first, last time.Time) Event {
	e := Event{Action: k.action, Outcome: OutcomeDenied, Count: n, Target: map[string]string{
		TargetFirst: first.UTC().Format(time.RFC3339Nano),
		TargetLast:  last.UTC().Format(time.RFC3339Nano),
	}}
	if k.catchAll {
		if e.Action == "" {
			e.Action = "*"
		}
		e.Reason = ReasonCoalescedCatchAll
		return e
	}
	e.Status, e.Code, e.Reason = k.status, k.code, k.reason
	if k.channel == "" && k.has == 0 && k.vm == "" && k.tokenKind == "" && k.user == "" &&
		k.credential == "" && k.session == "" && k.project == "" {
		return e
	}
	p := &Principal{Channel: k.channel, VM: k.vm, TokenKind: k.tokenKind, User: k.user,
		Credential: k.credential, Session: k.session, Project: k.project}
	if k.has&hasUID != 0 {
		p.UID = &k.uid
	}
	if k.has&hasGID != 0 {
		p.GID = &k.gid
	}
	if k.has&hasCID != 0 {
		p.CID = &k.cid
	}
	e.Principal = p
	return e
}

// window is one key's current interval.
type window struct {
	end         time.Time // of the interval
	n           uint64    // denials counted (not written) in it
	first, last time.Time // of those
}

// coalescer counts repeated denials. Record uses it, under its mutex.
type coalescer struct {
	interval time.Duration
	mu       sync.Mutex
	table    map[denyKey]*window
	catchAll int           // catch-all keys in table
	folded   atomic.Uint64 // denials folded into a window (Stats)
}

func newCoalescer(interval time.Duration) *coalescer {
	return &coalescer{interval: interval, table: map[denyKey]*window{}}
}

// admit decides about a denial at time at: write it (true), or count it
// (false). A summary of the key's previous interval, when one has ended
// with denials counted, is returned for writing first.
func (c *coalescer) admit(e *Event, at time.Time) (write bool, sum *Event) {
	k := keyOf(e)
	c.mu.Lock()
	defer c.mu.Unlock()
	w, ok := c.table[k]
	if !ok && len(c.table) >= maxCoalesceKeys {
		k = denyKey{action: e.Action, catchAll: true}
		if w, ok = c.table[k]; !ok && c.catchAll >= maxCatchAll {
			k = denyKey{catchAll: true}
			w, ok = c.table[k]
		}
	}
	if ok && at.Before(w.end) {
		if w.n == 0 {
			w.first = at
		}
		w.n++
		w.last = at
		c.folded.Add(1)
		return false, nil
	}
	if ok {
		if w.n > 0 {
			s := k.summary(w.n, w.first, w.last)
			sum = &s
		}
		*w = window{end: at.Add(c.interval)}
		return true, sum
	}
	c.table[k] = &window{end: at.Add(c.interval)}
	if k.catchAll {
		c.catchAll++
	}
	return true, nil
}

// sweep removes the keys whose interval ended by now (all of them if all)
// and returns the summaries of those with denials counted.
func (c *coalescer) sweep(now time.Time, all bool) []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []Event
	for k, w := range c.table {
		if !all && now.Before(w.end) {
			continue
		}
		if w.n > 0 {
			out = append(out, k.summary(w.n, w.first, w.last))
		}
		delete(c.table, k)
		if k.catchAll {
			c.catchAll--
		}
	}
	return out
}

// lostSummary is what a summary stands for when it cannot be written (a
// rare path: the times are read back from its target).
func lostSummary(e *Event) (n uint64, first, last time.Time) {
	first, _ = time.Parse(time.RFC3339Nano, e.Target[TargetFirst])
	last, _ = time.Parse(time.RFC3339Nano, e.Target[TargetLast])
	return e.Count, first, last
}
