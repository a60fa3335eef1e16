package memtrim

import (
	"context"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestObserve(t *testing.T) {
	const busy, quiet = 100, 3
	tests := []struct {
		name   string
		deltas []uint64 // bytes allocated in each interval
		trims  []int    // intervals (0-based) after which a trim is due
	}{
		{"never busy: never trims", []uint64{0, 10, 99, 0, 0, 0, 0}, nil},
		{"busy, then quiet long enough", []uint64{500, 0, 0, 0, 0, 0}, []int{3}},
		{"busy, quiet too short, busy again", []uint64{500, 0, 0, 500, 0, 0, 0}, []int{6}},
		{"one trim per quiet period", []uint64{500, 1, 1, 1, 1, 1, 1, 1, 1, 1}, []int{3}},
		{"two bursts, two trims", []uint64{500, 0, 0, 0, 700, 0, 0, 0}, []int{3, 7}},
		{"steady load: never trims", []uint64{100, 200, 100, 300, 100}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var s state
			var total uint64
			var got []int
			for i, d := range tt.deltas {
				total += d
				if s.observe(total, busy, quiet) {
					got = append(got, i)
				}
			}
			if len(got) != len(tt.trims) {
				t.Fatalf("trims after intervals %v, want %v", got, tt.trims)
			}
			for i := range got {
				if got[i] != tt.trims[i] {
					t.Fatalf("trims after intervals %v, want %v", got, tt.trims)
				}
			}
		})
	}
}

// Run trims once a burst has been followed by quiet, and stops with ctx.
func TestRunTrimsAfterBurst(t *testing.T) {
	var counter atomic.Uint64
	started := make(chan struct{})
	var once sync.Once
	trimmed := make(chan struct{}, 4)
	tr := &Trimmer{Interval: time.Millisecond, Busy: 100, Quiet: 3,
		Trim: func() { trimmed <- struct{}{} },
		allocated: func() uint64 {
			// Read before telling the test Run has started: the burst
			// below must come after Run's first reading.
			v := counter.Load()
			once.Do(func() { close(started) })
			return v
		}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { tr.Run(ctx); close(done) }()
	<-started
	counter.Add(1000) // a burst
	select {
	case <-trimmed:
	case <-time.After(10 * time.Second):
		t.Fatal("no trim after a burst and quiet")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return when its context ended")
	}
}
