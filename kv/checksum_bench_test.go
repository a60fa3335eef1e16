package kv

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dgraph-io/badger/v4/options"
)

// The cost of Badger's checksum verification: at open (every table's
// blocks read, decrypted and checked), and on each block read from disk.
// COFFER_KV_BENCH_RECORDS sets the store's size (default 100,000 records
// of about 1 KiB: some 110 MiB of tables).

var (
	benchStoreOnce sync.Once
	benchStoreDir  string
	benchStoreKey  []byte
	benchStoreN    int
)

// benchStore builds, once per run, an encrypted store of records in
// tables (closed: every memtable flushed), compacted as Badger leaves it.
func benchStore(b *testing.B) (string, []byte, int) {
	benchStoreOnce.Do(func() {
		n := 100000
		if s := os.Getenv("COFFER_KV_BENCH_RECORDS"); s != "" {
			n, _ = strconv.Atoi(s)
		}
		dir, err := os.MkdirTemp("", "kv-bench-")
		if err != nil {
			b.Fatal(err)
		}
		key := newKey(b)
		s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
		if err != nil {
			b.Fatal(err)
		}
		pad := strings.Repeat("x", 1000)
		for i := 0; i < n; i += 1000 {
			err := s.Update(context.Background(), func(tx *Txn) error {
				for j := i; j < min(i+1000, n); j++ {
					if err := tx.Put("bench", fmt.Sprintf("%016d", j), user{Name: pad, N: j}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				b.Fatal(err)
			}
		}
		if err := s.Close(); err != nil {
			b.Fatal(err)
		}
		benchStoreDir, benchStoreKey, benchStoreN = dir, key, n
	})
	if benchStoreDir == "" {
		b.Fatal("no bench store")
	}
	return benchStoreDir, benchStoreKey, benchStoreN
}

func withChecksumMode(b *testing.B, m options.ChecksumVerificationMode) {
	saved := checksumMode
	checksumMode = m
	b.Cleanup(func() { checksumMode = saved })
}

var checksumModes = []struct {
	name string
	mode options.ChecksumVerificationMode
}{
	{"none", options.NoVerification},
	{"table", options.OnTableRead},
	{"block", options.OnBlockRead},
}

// BenchmarkOpenChecksum opens the bench store (and closes it) under each
// verification mode.
func BenchmarkOpenChecksum(b *testing.B) {
	dir, key, _ := benchStore(b)
	lsm := int64(0)
	for _, m := range checksumModes {
		b.Run(m.name, func(b *testing.B) {
			withChecksumMode(b, m.mode)
			for b.Loop() {
				s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
				if err != nil {
					b.Fatal(err)
				}
				lsm, _ = s.db.Size()
				if err := s.Close(); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(lsm)/(1<<20), "MiB-tables")
		})
	}
}

// BenchmarkGetChecksum reads random records of the bench store, most from
// blocks not in the block cache, under each verification mode.
func BenchmarkGetChecksum(b *testing.B) {
	dir, key, n := benchStore(b)
	for _, m := range checksumModes {
		b.Run(m.name, func(b *testing.B) {
			withChecksumMode(b, m.mode)
			s, err := Open(context.Background(), Options{Dir: dir, Logger: quietLogger(), GCInterval: -1, EncryptionKey: key})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			time.Sleep(100 * time.Millisecond) // let the open settle
			rng := rand.New(rand.NewPCG(1, 2))
			var u user
			for b.Loop() {
				id := fmt.Sprintf("%016d", rng.IntN(n))
				if err := s.View(context.Background(), func(tx *Txn) error { return tx.Get("bench", id, &u) }); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestMain removes the bench store once every test and benchmark ran.
func TestMain(m *testing.M) {
	code := m.Run()
	if benchStoreDir != "" {
		os.RemoveAll(benchStoreDir)
	}
	os.Exit(code)
}
