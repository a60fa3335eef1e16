package kv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
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
	benchUpdate(b, openTest(b, ""))
}

// BenchmarkUpdateEncrypted is BenchmarkUpdate on a store encrypted at rest.
func BenchmarkUpdateEncrypted(b *testing.B) {
	s, err := openWith(b, b.TempDir(), newKey(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	benchUpdate(b, s)
}

func benchUpdate(b *testing.B, s *Store) {
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

// BenchmarkBackupLoad backs up an encrypted store of 10,000 records and
// loads it into a fresh encrypted one.
func BenchmarkBackupLoad(b *testing.B) {
	src, err := openWith(b, b.TempDir(), newKey(b), 0)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	const n = 10000
	for i := int64(0); i < n; i += 100 {
		err := src.Update(ctx, func(tx *Txn) error {
			for j := i; j < i+100; j++ {
				id := fmt.Sprintf("%016d", j)
				if err := tx.Put("bench", id, user{Name: "bench", Email: id + "@example.com", N: int(j)}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			b.Fatal(err)
		}
	}
	var size int
	for b.Loop() {
		var buf bytes.Buffer
		if err := src.Backup(ctx, &buf); err != nil {
			b.Fatal(err)
		}
		size = buf.Len()
		dst, err := openWith(b, b.TempDir(), newKey(b), 0)
		if err != nil {
			b.Fatal(err)
		}
		if err := dst.Load(ctx, &buf); err != nil {
			b.Fatal(err)
		}
		dst.Close()
	}
	b.ReportMetric(float64(size), "backup-bytes")
}

// BenchmarkUpdateWriters runs Updates from a fixed number of goroutines
// (the bench harness drives the daemon with 16 and 64 clients): distinct
// records, or all bumping one hot record.
func BenchmarkUpdateWriters(b *testing.B) {
	for _, hot := range []bool{false, true} {
		for _, writers := range []int{1, 16, 64} {
			name := fmt.Sprintf("writers=%d", writers)
			if hot {
				name += "/hot"
			}
			b.Run(name, func(b *testing.B) {
				s := openTest(b, "")
				ctx := context.Background()
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				for range writers {
					wg.Go(func() {
						for {
							i := next.Add(1)
							if i > int64(b.N) {
								return
							}
							var err error
							if hot {
								err = benchBump(ctx, s)
							} else {
								err = benchPut(ctx, s, i)
							}
							if err != nil {
								b.Error(err)
								return
							}
						}
					})
				}
				wg.Wait()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
			})
		}
	}
}

func benchBump(ctx context.Context, s *Store) error {
	return s.Update(ctx, func(tx *Txn) error {
		var u user
		if err := tx.Get("bench", "hot", &u); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		u.N++
		return tx.Put("bench", "hot", u)
	})
}
