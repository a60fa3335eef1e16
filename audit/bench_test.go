package audit

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user plus system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkRecord is the cost of Record of a delivery-sized event from
// many goroutines. Record does not wait for the writer: what the writer
// cannot keep up with is lost (lost/op); BenchmarkRecordWritten is the
// cost until written (checkpoints every DefaultCheckpointEvery events
// included; the signer is in-memory, an HSM adds its Sign time per
// checkpoint).
func BenchmarkRecord(b *testing.B) {
	for _, journal := range []bool{false, true} {
		name := "file"
		if journal {
			name = "file+journal"
		}
		b.Run(name, func(b *testing.B) {
			every := DefaultCheckpointEvery
			s := newTestSigner(&testing.T{}, "k1")
			opts := Options{Dir: b.TempDir(), Signer: s, Logger: discard(), CheckpointEvery: every}
			if journal {
				opts.Journal = LogJournal(slog.New(slog.NewTextHandler(io.Discard, nil)))
			}
			l, err := Open(context.Background(), opts)
			if err != nil {
				b.Fatal(err)
			}
			e := event(1)
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					l.Record(e)
				}
			})
			if err := l.Flush(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			// CPU time is what the hot paths share; wall time on a busy
			// machine says little.
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			b.ReportMetric(float64(l.Lost())/float64(b.N), "lost/op")
			l.Close(context.Background())
		})
	}
}

// BenchmarkRecordWritten is the cost of an event until it is written:
// Record, with a Flush every 4096 events so that none is lost (Record
// does not wait for the writer).
func BenchmarkRecordWritten(b *testing.B) {
	s := newTestSigner(&testing.T{}, "k1")
	l, err := Open(context.Background(), Options{Dir: b.TempDir(), Signer: s, Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	e := event(1)
	ctx := context.Background()
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	for i := range b.N {
		l.Record(e)
		if i%4096 == 4095 {
			if err := l.Flush(ctx); err != nil {
				b.Fatal(err)
			}
		}
	}
	if err := l.Flush(ctx); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(l.Lost())/float64(b.N), "lost/op")
	l.Close(ctx)
}

// BenchmarkRecordDenied is the cost of recording an identical denial from
// one caller (a flood), from many goroutines: counted, not written.
func BenchmarkRecordDenied(b *testing.B) {
	s := newTestSigner(&testing.T{}, "k1")
	dir := b.TempDir()
	l, err := Open(context.Background(), Options{Dir: dir, Signer: s, Logger: discard()})
	if err != nil {
		b.Fatal(err)
	}
	e := denial(1000, 1, "cft_x")
	b.ReportAllocs()
	cpu0 := cpuTime()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			l.Record(e)
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
	l.Close(context.Background())
	files, err := listFiles(dir)
	if err != nil {
		b.Fatal(err)
	}
	lr, err := openFiles(files, false)
	if err != nil {
		b.Fatal(err)
	}
	defer lr.Close()
	lines := 0
	for {
		if _, err := lr.next(); err != nil {
			break
		}
		lines++
	}
	b.ReportMetric(float64(lines), "lines")
	b.ReportMetric(float64(l.Lost())/float64(b.N), "lost/op")
}

// BenchmarkAppend is the cost of a state change written with Append in
// batches (one fsync per batch), per event.
func BenchmarkAppend(b *testing.B) {
	for _, batch := range []int{1, 100} {
		b.Run(fmt.Sprintf("batch=%d", batch), func(b *testing.B) {
			s := newTestSigner(&testing.T{}, "k1")
			l, err := Open(context.Background(), Options{Dir: b.TempDir(), Signer: s, Logger: discard()})
			if err != nil {
				b.Fatal(err)
			}
			ctx := context.Background()
			evs := make([]Event, batch)
			b.ReportAllocs()
			cpu0 := cpuTime()
			b.ResetTimer()
			var change uint64
			for i := 0; i < b.N; i += batch {
				for j := range evs {
					change++
					evs[j] = event(1)
					evs[j].Change = change
				}
				if err := l.Append(ctx, evs); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-cpu0).Nanoseconds())/float64(b.N), "cpu-ns/op")
			l.Close(ctx)
		})
	}
}
