package daemon

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/coffer-hsm/coffer/kv"
)

func TestScanPaged(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const n = 2*scanPage + 7 // three pages
	for start := 0; start < n; start += 250 {
		err := e.store.Update(ctx, func(tx *kv.Txn) error {
			for i := start; i < min(start+250, n); i++ {
				if err := tx.Put("scantest", fmt.Sprintf("%05d", i), map[string]int{"i": i}); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	var seen []int
	err := e.svc.scanPaged(ctx, "scantest", func(id string, decode func(any) error) error {
		var v map[string]int
		if err := decode(&v); err != nil {
			return err
		}
		if fmt.Sprintf("%05d", v["i"]) != id {
			return fmt.Errorf("record %s holds %d", id, v["i"])
		}
		seen = append(seen, v["i"])
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != n {
		t.Fatalf("saw %d records, want %d", len(seen), n)
	}
	for i, v := range seen {
		if v != i {
			t.Fatalf("record %d seen as the %dth: not once each in key order", v, i)
		}
	}

	// errStopScan ends it early without an error; another error ends it
	// with that error.
	count := 0
	err = e.svc.scanPaged(ctx, "scantest", func(string, func(any) error) error {
		if count++; count == scanPage+3 {
			return errStopScan
		}
		return nil
	})
	if err != nil || count != scanPage+3 {
		t.Fatalf("stopped after %d with %v, want %d and no error", count, err, scanPage+3)
	}
	boom := errors.New("boom")
	if err := e.svc.scanPaged(ctx, "scantest", func(string, func(any) error) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("got %v, want the callback's error", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := e.svc.scanPaged(cctx, "scantest", func(string, func(any) error) error { return nil }); err == nil {
		t.Fatal("a cancelled scan reported success")
	}
}
