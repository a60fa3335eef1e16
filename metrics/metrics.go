// Package metrics is coffer's Prometheus registry: the one place that names
// every metric, its help and its labels. It imports nothing of coffer's:
// the transport counts requests into Requests, the domain reports HSM
// operations and store commits through ObserveHSM and ObserveCommit, and
// everything else (health, queue depths, sizes, counts) is read from a
// State function at scrape time, so that nothing but a few atomic adds
// happens on a request's path.
//
// No label ever holds a name, an id, a token or a raw path: labels are
// route patterns, channels, status codes and fixed enums.
package metrics

import (
	"context"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// namespace prefixes every coffer metric.
const namespace = "coffer"

// HSM operation kinds (the op label of the HSM metrics).
const (
	OpSeal     = "seal"
	OpUnseal   = "unseal"
	OpSign     = "sign"
	OpRewrap   = "rewrap"
	OpUnwrap   = "unwrap_import"
	OpCheck    = "check"
	OpRotate   = "rotate"
	OpKeyAdmin = "key_admin" // listing, destroying keys
)

// latencyBuckets are for operations that take from tens of microseconds
// (a cached token check) to seconds (an HSM that stalls).
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}

// Metrics is coffer's registry and the collectors that are fed on the
// request path.
type Metrics struct {
	reg      *prometheus.Registry
	Requests *Requests

	hsmDur    *prometheus.HistogramVec
	hsmErrs   *prometheus.CounterVec
	commitDur *prometheus.HistogramVec
}

// New returns a registry with the Go runtime and process collectors and
// coffer's own. Call SetState to add the scrape-time state.
func New() *Metrics {
	m := &Metrics{
		reg:      prometheus.NewRegistry(),
		Requests: newRequests(),
		hsmDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "hsm", Name: "operation_duration_seconds",
			Help:    "Duration of HSM operations by kind (failed ones included).",
			Buckets: latencyBuckets,
		}, []string{"op"}),
		hsmErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: namespace, Subsystem: "hsm", Name: "operation_errors_total",
			Help: "HSM operations that failed, by kind.",
		}, []string{"op"}),
		commitDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: namespace, Subsystem: "store", Name: "commit_duration_seconds",
			Help:    "Duration of store write transactions, by outcome (ok, error).",
			Buckets: latencyBuckets,
		}, []string{"outcome"}),
	}
	// Known label values are created up front, so a series exists (at 0)
	// before the first event and rate() sees its first increase.
	for _, op := range []string{OpSeal, OpUnseal, OpSign, OpRewrap, OpUnwrap, OpCheck, OpRotate, OpKeyAdmin} {
		m.hsmDur.WithLabelValues(op)
		m.hsmErrs.WithLabelValues(op)
	}
	m.commitDur.WithLabelValues("ok")
	m.commitDur.WithLabelValues("error")
	m.reg.MustRegister(
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		m.Requests, m.hsmDur, m.hsmErrs, m.commitDur,
	)
	return m
}

// ObserveHSM records one HSM operation of kind op.
func (m *Metrics) ObserveHSM(op string, d time.Duration, err error) {
	m.hsmDur.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.hsmErrs.WithLabelValues(op).Inc()
	}
}

// ObserveCommit records one store write transaction.
func (m *Metrics) ObserveCommit(d time.Duration, err error) {
	outcome := "ok"
	if err != nil {
		outcome = "error"
	}
	m.commitDur.WithLabelValues(outcome).Observe(d.Seconds())
}

// SetState registers the scrape-time collector of f's State. Call it once.
func (m *Metrics) SetState(f func(context.Context) State) {
	m.reg.MustRegister(newStateCollector(f))
}

// Gather returns the registry's metrics (tests).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the text exposition format. Errors of a collector are
// answered as a 500 rather than a partial scrape, so an alert on a
// missing series is not silenced by a half-answer.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{
		ErrorHandling:       promhttp.HTTPErrorOnError,
		MaxRequestsInFlight: 4,
		Timeout:             10 * time.Second,
	})
}
