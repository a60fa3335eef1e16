package audit

import (
	"context"
	"fmt"
	"testing"
	"time"
)

func u32(v uint32) *uint32 { return &v }

// denial is a refused request by uid with the given pid and presented
// token id.
func denial(uid uint32, pid int32, tokenID string) Event {
	return Event{Action: "GET /v1/status", Outcome: OutcomeDenied, Status: 401, Code: "unauthenticated",
		Principal: &Principal{Channel: "unix", UID: u32(uid), GID: u32(uid), PID: pid, TokenID: tokenID},
		Target:    map[string]string{"name": tokenID}}
}

// openClocked opens a log on a fake clock that coalesces denials per
// second.
func openClocked(t testing.TB, dir string, clock *fakeClock) *Log {
	t.Helper()
	l, err := Open(context.Background(), Options{Dir: dir, Signer: newTestSigner(t, "k1"),
		CheckpointEvery: 1 << 30, CheckpointInterval: time.Hour, Logger: discard(), Now: clock.Now,
		Queue: 1 << 16})
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// denialsIn is the number of denials the event lines of es stand for: one
// each, or Count for a summary.
func denialsIn(es []Entry) (lines int, denials uint64) {
	for _, e := range es {
		if e.Type == TypeEvent && e.Outcome == OutcomeDenied {
			lines++
			denials += max(1, e.Count)
		}
	}
	return lines, denials
}

func TestCoalesceKey(t *testing.T) {
	base := denial(1000, 1, "cft_a")
	tests := []struct {
		name   string
		change func(e *Event)
		same   bool
	}{
		{"another pid", func(e *Event) { e.Principal.PID = 2 }, true},
		{"another presented token", func(e *Event) { e.Principal.TokenID = "cft_b" }, true},
		{"another target", func(e *Event) { e.Target = map[string]string{"secret": "x"} }, true},
		{"another uid", func(e *Event) { e.Principal.UID = u32(1001) }, false},
		{"no uid", func(e *Event) { e.Principal.UID = nil }, false},
		{"uid 0 is not no uid", func(e *Event) { e.Principal.UID = u32(0) }, false},
		{"another gid", func(e *Event) { e.Principal.GID = u32(7) }, false},
		{"a cid", func(e *Event) { e.Principal.CID = u32(3) }, false},
		{"another channel", func(e *Event) { e.Principal.Channel = "vsock" }, false},
		{"another vm", func(e *Event) { e.Principal.VM = "vm1" }, false},
		{"another token user", func(e *Event) { e.Principal.User = "u2" }, false},
		{"another credential", func(e *Event) { e.Principal.Credential = "c2" }, false},
		{"another session", func(e *Event) { e.Principal.Session = "s2" }, false},
		{"another action", func(e *Event) { e.Action = "deliver" }, false},
		{"another code", func(e *Event) { e.Code = "rate_limited" }, false},
		{"another reason", func(e *Event) { e.Reason = "nothing to deliver" }, false},
		{"no principal", func(e *Event) { e.Principal = nil }, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := denial(1000, 1, "cft_a")
			tt.change(&e)
			if got := keyOf(&e) == keyOf(&base); got != tt.same {
				t.Fatalf("same key: %v, want %v", got, tt.same)
			}
		})
	}
}

// The lines of one caller's denials over time: the first of an interval
// at once, the others counted into one line at its end.
func TestCoalesceIntervals(t *testing.T) {
	type step struct {
		advance time.Duration // then
		record  int           // denials
		flush   bool
		lines   int // after the flush: denial lines written
	}
	tests := []struct {
		name   string
		steps  []step
		counts []uint64 // of the denial lines in order: 0 for a first, n for a summary
	}{
		{"one", []step{{0, 1, true, 1}}, []uint64{0}},
		{"a burst within the interval", []step{{0, 5, true, 1}, {999 * time.Millisecond, 0, true, 1}}, []uint64{0, 4}},
		{"a burst, then the interval ends", []step{{0, 5, false, 0}, {time.Second, 0, true, 2}}, []uint64{0, 4}},
		{"a burst, then Close", []step{{0, 5, false, 0}}, []uint64{0, 4}},
		{"two intervals", []step{{0, 3, false, 0}, {1500 * time.Millisecond, 3, false, 0}, {500 * time.Millisecond, 2, true, 3}},
			[]uint64{0, 2, 0, 4}},
		{"a quiet interval in between", []step{{0, 2, true, 1}, {5 * time.Second, 1, true, 3}, {5 * time.Second, 1, true, 4}},
			[]uint64{0, 1, 0, 0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			clock := newFakeClock()
			l := openClocked(t, dir, clock)
			total := 0
			for i, s := range tt.steps {
				clock.Add(s.advance)
				for j := range s.record {
					l.Record(denial(1000, int32(i*100+j), fmt.Sprintf("cft_%d", j)))
				}
				total += s.record
				if s.flush {
					if err := l.Flush(context.Background()); err != nil {
						t.Fatal(err)
					}
					if n, _ := denialsIn(allEntries(t, l)); n != s.lines {
						t.Fatalf("step %d: %d lines written, want %d", i, n, s.lines)
					}
				}
			}
			closeLog(t, l)
			var got []uint64
			for _, e := range eventsOf(dirEntries(t, dir)) {
				got = append(got, e.Count)
			}
			if fmt.Sprint(got) != fmt.Sprint(tt.counts) {
				t.Fatalf("counts of the lines %v, want %v", got, tt.counts)
			}
			if _, n := denialsIn(dirEntries(t, dir)); n != uint64(total) {
				t.Fatalf("the lines stand for %d denials, want %d", n, total)
			}
		})
	}
}

// A summary names the caller (not a pid or token id) and the times of
// the first and last denial it counts.
func TestCoalesceSummary(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	l := openClocked(t, dir, clock)
	t0 := clock.Now()
	l.Record(denial(1000, 1, "cft_a"))
	clock.Add(100 * time.Millisecond)
	l.Record(denial(1000, 2, "cft_b"))
	clock.Add(200 * time.Millisecond)
	l.Record(denial(1000, 3, "cft_c"))
	closeLog(t, l)
	es := eventsOf(dirEntries(t, dir))
	if len(es) != 2 {
		t.Fatalf("%d lines, want 2", len(es))
	}
	first, sum := es[0], es[1]
	if first.Count != 0 || first.Principal.PID != 1 || first.Principal.TokenID != "cft_a" || first.Target["name"] != "cft_a" {
		t.Errorf("first line %+v: want the denial as recorded", first)
	}
	p := sum.Principal
	if sum.Count != 2 || sum.Action != "GET /v1/status" || sum.Outcome != OutcomeDenied || sum.Status != 401 || sum.Code != "unauthenticated" ||
		p == nil || p.Channel != "unix" || p.UID == nil || *p.UID != 1000 || p.GID == nil || *p.GID != 1000 || p.PID != 0 || p.TokenID != "" || p.CID != nil {
		t.Errorf("summary %+v, principal %+v", sum, p)
	}
	wantFirst := t0.Add(100 * time.Millisecond).Format(time.RFC3339Nano)
	wantLast := t0.Add(300 * time.Millisecond).Format(time.RFC3339Nano)
	if len(sum.Target) != 2 || sum.Target[TargetFirst] != wantFirst || sum.Target[TargetLast] != wantLast {
		t.Errorf("summary target %v, want first %s last %s", sum.Target, wantFirst, wantLast)
	}
}

// 1,000 callers denied 1,000 times each within an interval: two lines
// each, not a million.
func TestCoalesceManyCallers(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	l := openClocked(t, dir, clock)
	for i := range 1000 {
		for uid := range uint32(1000) {
			l.Record(denial(uid, int32(i), "cft_x"))
		}
	}
	closeLog(t, l)
	if n := l.Lost(); n != 0 {
		t.Fatalf("%d events lost", n)
	}
	es := dirEntries(t, dir)
	lines, denials := denialsIn(es)
	if lines != 2000 || denials != 1_000_000 {
		t.Fatalf("%d lines for %d denials, want 2000 for 1000000", lines, denials)
	}
}

// Beyond maxCoalesceKeys callers, denials are counted per action.
func TestCoalesceTableIsBounded(t *testing.T) {
	dir := t.TempDir()
	clock := newFakeClock()
	l := openClocked(t, dir, clock)
	const callers = maxCoalesceKeys + 1000
	for range 3 {
		for uid := range uint32(callers) {
			l.Record(denial(uid, 1, ""))
		}
	}
	l.coal.mu.Lock()
	size := len(l.coal.table)
	l.coal.mu.Unlock()
	if size != maxCoalesceKeys+1 {
		t.Fatalf("table of %d keys, want %d", size, maxCoalesceKeys+1)
	}
	closeLog(t, l)
	es := dirEntries(t, dir)
	lines, denials := denialsIn(es)
	// A line and a summary for each caller in the table, one line for the
	// first denial counted per action and a summary for the rest.
	if lines != 2*maxCoalesceKeys+2 || denials != 3*callers {
		t.Fatalf("%d lines for %d denials, want %d for %d", lines, denials, 2*maxCoalesceKeys+2, 3*callers)
	}
	last := eventsOf(es)
	var catchAll *Entry
	for i := range last {
		if last[i].Reason == ReasonCoalescedCatchAll {
			catchAll = &last[i]
		}
	}
	if catchAll == nil || catchAll.Count != 3*1000-1 || catchAll.Principal != nil || catchAll.Action != "GET /v1/status" {
		t.Fatalf("catch-all line %+v", catchAll)
	}
}

// A flood of identical denials from one caller costs a few lines a
// second, and none is lost.
func TestCoalesceFlood(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, DefaultCheckpointEvery, 0)
	start := time.Now()
	for i := range 1_000_000 {
		l.Record(denial(1000, int32(i), fmt.Sprintf("cft_%d", i%7)))
	}
	elapsed := time.Since(start)
	closeLog(t, l)
	if n := l.Lost(); n != 0 {
		t.Fatalf("%d events lost", n)
	}
	lines, denials := denialsIn(dirEntries(t, dir))
	// Two lines per interval begun, at most.
	if max := 2 * (int(elapsed/DefaultCoalesceInterval) + 1); lines > max || denials != 1_000_000 {
		t.Fatalf("%d lines for %d denials in %v, want at most %d for 1000000", lines, denials, elapsed, max)
	}
	if rep := verifyDir(t, dir, s.keys()); !rep.OK {
		t.Fatalf("verify %+v", rep)
	}
	t.Logf("1,000,000 denials in %v: %d lines", elapsed, lines)
}
