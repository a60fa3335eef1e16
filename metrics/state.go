package metrics

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State is what the daemon reports at scrape time. Counts only: nothing
// in it names a record.
type State struct {
	HSMUp         bool
	HSMReconnects uint64 // the token came back after a loss

	StoreUp bool
	// StoreState is "ok", "full", "failed" or "lost".
	StoreState     string
	StoreLSMBytes  int64
	StoreVlogBytes int64
	// StoreCompactionDebt is the number of LSM levels over their target
	// size (Badger's own measure of pending compaction work); -1 unknown.
	StoreCompactionDebt int

	AuditUp             bool   // the last drain into the log worked
	AuditOutbox         int64  // changes committed, not yet in the log
	AuditQueue          int    // best-effort events queued for the writer
	AuditLost           uint64 // best-effort events lost (queue full)
	AuditCoalesced      uint64 // denials folded into a summary line
	AuditLastCheckpoint time.Time

	KEKRotationRunning bool
	KEKRewrapped       int
	KEKRewrapFailed    int
	KEKRemaining       int // sealed records still under another KEK (-1 unknown)

	ExpiringCredentials int
	ExpiringSecrets     int
	Records             map[string]int // kind -> count

	BearerCacheHits   uint64
	BearerCacheMisses uint64
	AuthFailures      uint64
	RateLimited       uint64 // authentications refused 429 by the limiter

	Sockets []Socket
}

// Socket is one listening socket's connection slots.
type Socket struct {
	Channel     string // unix, vsock, hybrid-vsock, ...
	Open        int
	Max         int
	PeerCapHits uint64 // connections refused: the caller held its share
	Refused     uint64 // connections refused for any reason (cap hits included)
}

type stateCollector struct {
	f func(context.Context) State
}

func newStateCollector(f func(context.Context) State) *stateCollector { return &stateCollector{f: f} }

func desc(sub, name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(prometheus.BuildFQName(namespace, sub, name), help, labels, nil)
}

var (
	dHSMUp         = desc("hsm", "up", "1 if the HSM token answers.")
	dHSMReconnects = desc("hsm", "reconnects_total", "Times the HSM token came back after it was lost.")

	dStoreUp        = desc("store", "up", "1 if the store answers and takes writes.")
	dStoreState     = desc("store", "state", "1 for the store's current state (ok, full, failed, lost).", "state")
	dStoreSize      = desc("store", "size_bytes", "Size of the store on disk, by part (lsm, vlog).", "part")
	dStoreCompDebt  = desc("store", "compaction_debt_levels", "LSM levels over their target size (pending compaction work).")
	dAuditUp        = desc("audit", "up", "1 if the last drain of the outbox into the audit log worked.")
	dAuditOutbox    = desc("audit", "outbox_entries", "State changes committed and not yet written to the audit log.")
	dAuditQueue     = desc("audit", "queue_entries", "Best-effort audit events queued for the log writer.")
	dAuditLost      = desc("audit", "lost_entries_total", "Best-effort audit events lost because the writer was behind.")
	dAuditCoalesced = desc("audit", "coalesced_entries_total", "Repeated denials folded into a summary line.")
	dAuditCPAge     = desc("audit", "checkpoint_age_seconds", "Seconds since the last signed checkpoint of the audit log was written.")

	dKEKRunning   = desc("kek", "rewrap_running", "1 while a KEK re-wrap is running.")
	dKEKRewrapped = desc("kek", "rewrapped_records", "Records re-wrapped by the last KEK rotation.")
	dKEKFailed    = desc("kek", "rewrap_failed_records", "Records the last KEK rotation failed to re-wrap.")
	dKEKRemaining = desc("kek", "rewrap_remaining_records", "Sealed records still wrapped by a KEK other than the current one.")

	dExpiring = desc("", "expiring", "Active credentials and secrets expiring within the warning window, by kind.", "kind")
	dRecords  = desc("", "records", "Records in the store, by kind.", "kind")

	dBearerHits   = desc("bearer_cache", "hits_total", "Bearer token checks answered from the cache.")
	dBearerMisses = desc("bearer_cache", "misses_total", "Bearer token checks that read the store.")
	dAuthFailures = desc("auth", "failures_total", "Failed authentications (bad, expired or revoked tokens and client secrets).")
	dRateLimited  = desc("auth", "rate_limited_total", "Authentications refused with 429 by the failed-authentication limiter.")

	dConnsOpen    = desc("socket", "connections", "Open connections, by socket channel.", "channel")
	dConnsMax     = desc("socket", "connections_max", "Connection slots, by socket channel.", "channel")
	dConnsCapHits = desc("socket", "peer_cap_hits_total", "Connections refused because the caller held its per-peer share, by socket channel.", "channel")
	dConnsRefused = desc("socket", "refused_total", "Connections refused (429 or 503) at accept, by socket channel.", "channel")
)

var storeStates = []string{"ok", "full", "failed", "lost"}

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{dHSMUp, dHSMReconnects, dStoreUp, dStoreState, dStoreSize, dStoreCompDebt,
		dAuditUp, dAuditOutbox, dAuditQueue, dAuditLost, dAuditCoalesced, dAuditCPAge,
		dKEKRunning, dKEKRewrapped, dKEKFailed, dKEKRemaining, dExpiring, dRecords,
		dBearerHits, dBearerMisses, dAuthFailures, dRateLimited,
		dConnsOpen, dConnsMax, dConnsCapHits, dConnsRefused} {
		ch <- d
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// scrapeTimeout bounds the State function (it may probe the HSM).
const scrapeTimeout = 5 * time.Second

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), scrapeTimeout)
	defer cancel()
	s := c.f(ctx)
	gauge := func(d *prometheus.Desc, v float64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, l...)
	}
	counter := func(d *prometheus.Desc, v uint64, l ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), l...)
	}
	gauge(dHSMUp, b2f(s.HSMUp))
	counter(dHSMReconnects, s.HSMReconnects)
	gauge(dStoreUp, b2f(s.StoreUp))
	for _, st := range storeStates {
		gauge(dStoreState, b2f(s.StoreState == st), st)
	}
	gauge(dStoreSize, float64(s.StoreLSMBytes), "lsm")
	gauge(dStoreSize, float64(s.StoreVlogBytes), "vlog")
	if s.StoreCompactionDebt >= 0 {
		gauge(dStoreCompDebt, float64(s.StoreCompactionDebt))
	}
	gauge(dAuditUp, b2f(s.AuditUp))
	gauge(dAuditOutbox, float64(s.AuditOutbox))
	gauge(dAuditQueue, float64(s.AuditQueue))
	counter(dAuditLost, s.AuditLost)
	counter(dAuditCoalesced, s.AuditCoalesced)
	if !s.AuditLastCheckpoint.IsZero() {
		gauge(dAuditCPAge, time.Since(s.AuditLastCheckpoint).Seconds())
	}
	gauge(dKEKRunning, b2f(s.KEKRotationRunning))
	gauge(dKEKRewrapped, float64(s.KEKRewrapped))
	gauge(dKEKFailed, float64(s.KEKRewrapFailed))
	if s.KEKRemaining >= 0 {
		gauge(dKEKRemaining, float64(s.KEKRemaining))
	}
	gauge(dExpiring, float64(s.ExpiringCredentials), "credential")
	gauge(dExpiring, float64(s.ExpiringSecrets), "secret")
	for _, k := range recordKinds {
		if n, ok := s.Records[k]; ok {
			gauge(dRecords, float64(n), k)
		}
	}
	counter(dBearerHits, s.BearerCacheHits)
	counter(dBearerMisses, s.BearerCacheMisses)
	counter(dAuthFailures, s.AuthFailures)
	counter(dRateLimited, s.RateLimited)
	// Sockets of one channel (several hybrid-vsock VMs) are summed.
	type agg struct {
		open, max     int
		capHits, refs uint64
	}
	by := map[string]*agg{}
	var order []string
	for _, so := range s.Sockets {
		a := by[so.Channel]
		if a == nil {
			a = &agg{}
			by[so.Channel] = a
			order = append(order, so.Channel)
		}
		a.open += so.Open
		a.max += so.Max
		a.capHits += so.PeerCapHits
		a.refs += so.Refused
	}
	for _, chn := range order {
		a := by[chn]
		gauge(dConnsOpen, float64(a.open), chn)
		gauge(dConnsMax, float64(a.max), chn)
		counter(dConnsCapHits, a.capHits, chn)
		counter(dConnsRefused, a.refs, chn)
	}
}

// recordKinds are the kinds State.Records may hold.
var recordKinds = []string{"project", "secret", "user", "credential"}
