package audit

import (
	"errors"
	"log/slog"
	"testing"
	"time"
)

func TestFault(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	type step struct {
		at    time.Duration
		ok    bool
		ready bool          // before the step
		wait  time.Duration // after it (failures)
		lines int           // logged so far
	}
	tests := []struct {
		name  string
		steps []step
	}{
		{"backoff doubles up to the max", []step{
			{0, false, true, time.Second, 1},
			{time.Second, false, true, 2 * time.Second, 1},
			{2 * time.Second, false, false, 4 * time.Second, 1},
			{7 * time.Second, false, true, 8 * time.Second, 1},
			{15 * time.Second, false, true, 10 * time.Second, 1},
			{61 * time.Second, false, true, 10 * time.Second, 2},
		}},
		{"a recovery is said once, after a failure that was", []step{
			{0, false, true, time.Second, 1},
			{time.Second, true, true, 0, 2},
			{2 * time.Second, false, true, time.Second, 2},
			{3 * time.Second, true, true, 0, 2},
			{62 * time.Second, false, true, time.Second, 3},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := &countingHandler{}
			log := slog.New(h)
			f := fault{what: "test", min: time.Second, max: 10 * time.Second}
			for i, s := range tt.steps {
				now := t0.Add(s.at)
				if got := f.ready(now); got != s.ready {
					t.Fatalf("step %d: ready %v, want %v", i, got, s.ready)
				}
				if s.ok {
					f.ok(log)
				} else {
					f.fail(log, now, errors.New("boom"))
					if f.wait != s.wait {
						t.Fatalf("step %d: wait %v, want %v", i, f.wait, s.wait)
					}
				}
				if got := len(h.msgs); got != s.lines {
					t.Fatalf("step %d: %d lines (%q), want %d", i, got, h.msgs, s.lines)
				}
			}
		})
	}
}
