package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// Background scans (expiry warnings, the sweep) read whole tables: a
// million credentials, and as many sessions and tokens, on a large host.
// One read transaction over all of it would hold a snapshot (and Badger's
// old versions) for its whole length and take a CPU from requests while it
// ran; scanPaged reads scanPage records per transaction and rests
// scanPause between pages.
const (
	scanPage  = 500
	scanPause = 5 * time.Millisecond
)

// errStopScan ends a scanPaged early, without error.
var errStopScan = errors.New("stop scan")

// scanPaged calls fn for every record of table in key order, a page per
// read transaction. Records written meanwhile may or may not be seen; each
// is seen at most once. fn returns errStopScan to end the scan.
func (s *Service) scanPaged(ctx context.Context, table string, fn func(id string, decode func(any) error) error) error {
	after := ""
	for {
		n := 0
		err := s.store.View(ctx, func(tx *kv.Txn) error {
			return tx.List(table, kv.Query{After: after, Limit: scanPage}, func(id string, decode func(any) error) error {
				n++
				after = id
				return fn(id, decode)
			})
		})
		if errors.Is(err, errStopScan) {
			return nil
		}
		if err != nil || n < scanPage {
			return err
		}
		t := time.NewTimer(scanPause)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C:
		}
	}
}
