package metrics

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestStateCollector(t *testing.T) {
	m := New()
	m.SetState(func(context.Context) State {
		return State{
			HSMUp: true, HSMReconnects: 2, StoreUp: false, StoreState: "full",
			StoreLSMBytes: 100, StoreVlogBytes: 200, StoreCompactionDebt: -1,
			AuditUp: true, AuditOutbox: 3, AuditQueue: 4, AuditLost: 5, AuditCoalesced: 6,
			KEKRemaining: 7, ExpiringCredentials: 8, ExpiringSecrets: 9,
			Records:         map[string]int{"project": 1, "secret": 10},
			BearerCacheHits: 11, BearerCacheMisses: 12, AuthFailures: 13, RateLimited: 14,
			Sockets: []Socket{
				{Channel: "unix", Open: 3, Max: 64, PeerCapHits: 1, Refused: 2},
				{Channel: "unix", Open: 1, Max: 64},
				{Channel: "vsock", Open: 0, Max: 64},
			},
		}
	})
	want := `
# HELP coffer_hsm_reconnects_total Times the HSM token came back after it was lost.
# TYPE coffer_hsm_reconnects_total counter
coffer_hsm_reconnects_total 2
# HELP coffer_hsm_up 1 if the HSM token answers.
# TYPE coffer_hsm_up gauge
coffer_hsm_up 1
# HELP coffer_store_state 1 for the store's current state (ok, full, failed, lost).
# TYPE coffer_store_state gauge
coffer_store_state{state="failed"} 0
coffer_store_state{state="full"} 1
coffer_store_state{state="lost"} 0
coffer_store_state{state="ok"} 0
# HELP coffer_store_up 1 if the store answers and takes writes.
# TYPE coffer_store_up gauge
coffer_store_up 0
# HELP coffer_records Records in the store, by kind.
# TYPE coffer_records gauge
coffer_records{kind="project"} 1
coffer_records{kind="secret"} 10
# HELP coffer_socket_connections Open connections, by socket channel.
# TYPE coffer_socket_connections gauge
coffer_socket_connections{channel="unix"} 4
coffer_socket_connections{channel="vsock"} 0
# HELP coffer_socket_peer_cap_hits_total Connections refused because the caller held its per-peer share, by socket channel.
# TYPE coffer_socket_peer_cap_hits_total counter
coffer_socket_peer_cap_hits_total{channel="unix"} 1
coffer_socket_peer_cap_hits_total{channel="vsock"} 0
# HELP coffer_bearer_cache_hits_total Bearer token checks answered from the cache.
# TYPE coffer_bearer_cache_hits_total counter
coffer_bearer_cache_hits_total 11
# HELP coffer_expiring Active credentials and secrets expiring within the warning window, by kind.
# TYPE coffer_expiring gauge
coffer_expiring{kind="credential"} 8
coffer_expiring{kind="secret"} 9
`
	names := []string{"coffer_hsm_reconnects_total", "coffer_hsm_up", "coffer_store_state", "coffer_store_up", "coffer_records",
		"coffer_socket_connections", "coffer_socket_peer_cap_hits_total", "coffer_bearer_cache_hits_total", "coffer_expiring"}
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), names...); err != nil {
		t.Error(err)
	}
	// Unknown values are left out rather than reported as 0.
	if n, err := testutil.GatherAndCount(m.Registry(), "coffer_store_compaction_debt_levels", "coffer_audit_checkpoint_age_seconds"); err != nil || n != 0 {
		t.Errorf("unknown values reported: %d series, %v", n, err)
	}
}

// The exposition passes Prometheus's own lint (what promtool check
// metrics runs).
func TestLint(t *testing.T) {
	m := New()
	m.SetState(func(context.Context) State { return State{StoreState: "ok", AuditLastCheckpoint: time.Now()} })
	m.Requests.Route("GET /v1/status").Observe("unix", 200, time.Millisecond)
	m.ObserveHSM(OpSeal, time.Millisecond, errors.New("x"))
	m.ObserveCommit(time.Millisecond, nil)
	problems, err := testutil.GatherAndLint(m.Registry())
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		if strings.HasPrefix(p.Metric, "coffer_") {
			t.Errorf("lint: %s: %s", p.Metric, p.Text)
		}
	}
}

func TestRequestsLabels(t *testing.T) {
	tests := []struct {
		channel    string
		status     int
		wantLabels string
	}{
		{"unix", 200, `channel="unix",route="GET /x",status="200"`},
		{"vsock", 418, `channel="vsock",route="GET /x",status="4xx"`},
		{"", 503, `channel="other",route="GET /x",status="503"`},
		{"something-new", 299, `channel="other",route="GET /x",status="2xx"`},
		{"unix", 999, `channel="unix",route="GET /x",status="5xx"`},
	}
	for _, tt := range tests {
		t.Run(tt.wantLabels, func(t *testing.T) {
			m := New()
			m.Requests.Route("GET /x").Observe(tt.channel, tt.status, time.Millisecond)
			want := "# HELP coffer_http_requests_total HTTP API requests by route pattern, status code and caller channel.\n" +
				"# TYPE coffer_http_requests_total counter\ncoffer_http_requests_total{" + tt.wantLabels + "} 1\n"
			if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "coffer_http_requests_total"); err != nil {
				t.Error(err)
			}
		})
	}
}

// Counting from many goroutines while scraping loses nothing (and the
// race detector sees no race).
func TestRequestsConcurrent(t *testing.T) {
	m := New()
	rt := m.Requests.Route("GET /v1/status")
	if m.Requests.Route("GET /v1/status") != rt {
		t.Fatal("a pattern registered twice got two Routes")
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for range 1000 {
				rt.Observe("unix", 200, time.Microsecond)
			}
		})
	}
	wg.Go(func() {
		for range 20 {
			if _, err := m.Registry().Gather(); err != nil {
				t.Error(err)
			}
		}
	})
	wg.Wait()
	want := "# HELP coffer_http_requests_total HTTP API requests by route pattern, status code and caller channel.\n" +
		"# TYPE coffer_http_requests_total counter\ncoffer_http_requests_total{channel=\"unix\",route=\"GET /v1/status\",status=\"200\"} 8000\n"
	if err := testutil.GatherAndCompare(m.Registry(), strings.NewReader(want), "coffer_http_requests_total"); err != nil {
		t.Error(err)
	}
}

// BenchmarkRouteObserve is the cost a request pays for its metrics.
func BenchmarkRouteObserve(b *testing.B) {
	rt := New().Requests.Route("GET /v1/status")
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rt.Observe("unix", 200, time.Microsecond)
		}
	})
}
