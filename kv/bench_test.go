package kv

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
)

func benchPut(ctx context.Context, s *Store, i int64) error {
	id := fmt.Sprintf("%016d", i)
	return s.Update(ctx, func(tx *Txn) error {
		return tx.Put("bench", id, user{Name: "bench", Email: id + "@example.com", N: int(i)},
			Index{Name: "email", Value: id + "@example.com", Unique: true})
	})
}

// BenchmarkUpdate measures one small record per Update, fsynced (SyncWrites).
func BenchmarkUpdate(b *testing.B) {
	s := openTest(b, "")
	ctx := context.Background()
	var n int64
	for b.Loop() {
		if err := benchPut(ctx, s, n); err != nil {
			b.Fatal(err)
		}
		n++
	}
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "ops/s")
}

// BenchmarkUpdateParallel lets concurrent commits share fsyncs.
func BenchmarkUpdateParallel(b *testing.B) {
	s := openTest(b, "")
	ctx := context.Background()
	var n atomic.Int64
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := benchPut(ctx, s, n.Add(1)); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(n.Load())/b.Elapsed().Seconds(), "ops/s")
}
