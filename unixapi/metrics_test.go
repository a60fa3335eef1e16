package unixapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/metrics"
)

// The status counts (how many projects, users, credentials, secrets the
// host holds) are for system admins and the metrics group only: every
// other caller of the matrix, tokens of an admin included, gets a status
// without them.
func TestStatusCountsOnlyForMetricsReaders(t *testing.T) {
	f := newMatrixEnv(t)
	seers := []string{"root", "admgrp", "metricsgrp"}
	for _, who := range matrixPrincipals {
		t.Run(who, func(t *testing.T) {
			req, err := http.NewRequest("GET", "http://coffer/v1/status", nil)
			if err != nil {
				t.Fatal(err)
			}
			if tok := f.bearer[who]; tok != "" {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := f.clients[f.conn[who]].Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK {
				return // refused altogether (the matrix checks which)
			}
			var raw map[string]json.RawMessage
			if err := json.Unmarshal(body, &raw); err != nil {
				t.Fatal(err)
			}
			_, has := raw["counts"]
			if want := slices.Contains(seers, who); has != want {
				t.Errorf("%s: status has counts = %v, want %v: %s", who, has, want, body)
			}
		})
	}
}

// healthBackend answers Health with a fixed report.
type healthBackend struct {
	fakeBackend
	failed []string
}

func (b *healthBackend) Health(context.Context, daemon.Grant) (daemon.HealthReport, error) {
	return daemon.HealthReport{Failed: b.failed}, nil
}

func TestHealthAnswers(t *testing.T) {
	tests := []struct {
		name       string
		failed     []string
		wantStatus int
		wantBody   string
	}{
		{"all answer", nil, 200, `{"status":"ok"}`},
		{"hsm lost", []string{"hsm"}, 503, `{"status":"unhealthy","failed":["hsm"]}`},
		{"store and audit", []string{"store", "audit"}, 503, `{"status":"unhealthy","failed":["store","audit"]}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := NewServer(&healthBackend{failed: tt.failed}, nil)
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequest("GET", "/v1/health", nil))
			if rec.Code != tt.wantStatus || strings.TrimSpace(rec.Body.String()) != tt.wantBody {
				t.Errorf("got %d %s, want %d %s", rec.Code, rec.Body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

// stateBackend is a fakeBackend with an empty metrics state.
type stateBackend struct{ fakeBackend }

func (*stateBackend) MetricsState(context.Context) metrics.State { return metrics.State{} }

// The request counters are labelled by route pattern, never by the path
// (which holds ids and names), and by the caller's channel.
func TestRequestMetricsUseRoutePatterns(t *testing.T) {
	srv := NewServer(&stateBackend{fakeBackend{authErr: daemon.Forbidden("no")}}, nil)
	m := metrics.New()
	srv.SetMetrics(m)
	const id = "0190aaaa-0000-7000-8000-00000000beef"
	for range 3 {
		rec := httptest.NewRecorder()
		r := httptest.NewRequest("GET", "/v1/secrets/"+id, nil)
		r = r.WithContext(daemon.WithPrincipal(r.Context(), daemon.Principal{Channel: daemon.ChannelVsock, CID: 42}))
		srv.ServeHTTP(rec, r)
	}
	for _, path := range []string{"/v1/nope/" + id, "/" + id} {
		rec := httptest.NewRecorder()
		srv.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
	}
	mfs, err := m.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		if mf.GetName() != "coffer_http_requests_total" {
			continue
		}
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
				if strings.Contains(l.GetValue(), id) {
					t.Errorf("label %s holds the path's id: %q", l.GetName(), l.GetValue())
				}
			}
			if labels["route"] == UnmatchedRoute {
				if v := mt.GetCounter().GetValue(); labels["status"] != "404" || v != 2 {
					t.Errorf("unmatched: %v = %v, want status 404 twice", labels, v)
				}
			}
			if labels["route"] == "GET /v1/secrets/{id}" && labels["status"] == "403" && labels["channel"] == "vsock" {
				found = true
				if v := mt.GetCounter().GetValue(); v != 3 {
					t.Errorf("count = %v, want 3", v)
				}
			}
		}
	}
	if !found {
		t.Error("no coffer_http_requests_total{route=\"GET /v1/secrets/{id}\",status=\"403\",channel=\"vsock\"}")
	}
}

// BenchmarkServeHealthMetrics is one request through the whole server,
// with and without the request counters (the status writer and the
// timing are there in both).
func BenchmarkServeHealthMetrics(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run("metrics="+map[bool]string{false: "off", true: "on"}[on], func(b *testing.B) {
			srv := NewServer(&healthBackend{}, nil)
			if on {
				srv.SetMetrics(metrics.New())
			}
			r := httptest.NewRequest("GET", "/v1/health", nil)
			r = r.WithContext(daemon.WithPrincipal(r.Context(), daemon.Principal{Channel: daemon.ChannelUnix, HasCred: true}))
			b.ReportAllocs()
			for b.Loop() {
				srv.ServeHTTP(httptest.NewRecorder(), r)
			}
		})
	}
}
