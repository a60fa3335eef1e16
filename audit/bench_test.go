package audit

import (
	"context"
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

// BenchmarkRecord is the cost of recording a delivery-sized event from
// many goroutines, until it is written (checkpoints every DefaultCheckpointEvery events
// included; the signer is in-memory, an HSM adds its Sign time per checkpoint).
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
			l.Close(context.Background())
		})
	}
}
