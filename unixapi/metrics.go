package unixapi

import (
	"context"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/metrics"
)

// MetricsBackend is the part of the domain the metrics need.
type MetricsBackend interface {
	ReadMetrics(ctx context.Context, g daemon.Grant) error
	MetricsState(ctx context.Context) metrics.State
	Health(ctx context.Context, g daemon.Grant) (daemon.HealthReport, error)
}

// UnmatchedRoute is the route label of requests no route matched (their
// path is never a label).
const UnmatchedRoute = "(unmatched)"

// routeMetrics is one route's request counters, set by SetMetrics (nil
// until then: nothing is counted).
type routeMetrics struct {
	pattern string
	rt      atomic.Pointer[metrics.Route]
}

// SetMetrics counts the server's requests into m, serves m at
// GET /v1/metrics, and adds the domain's and the sockets' state to m.
// Call it once, before Serve.
func (s *Server) SetMetrics(m *metrics.Metrics) {
	s.metrics.Store(m)
	for _, c := range s.routeMetrics {
		c.rt.Store(m.Requests.Route(c.pattern))
	}
	s.unmatched.rt.Store(m.Requests.Route(UnmatchedRoute))
	m.SetState(func(ctx context.Context) metrics.State {
		st := s.b.MetricsState(ctx)
		st.Sockets = sockets.stats()
		return st
	})
}

// observe counts one request of c's route.
func (c *routeMetrics) observe(r *http.Request, status int, start time.Time) {
	rt := c.rt.Load()
	if rt == nil {
		return
	}
	rt.Observe(string(daemon.PrincipalFrom(r.Context()).Channel), status, time.Since(start))
}

// statusWriter remembers the status a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// handleMetrics serves GET /v1/metrics to those the actions table lets
// read them.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadMetrics, daemon.Resource{})
	if err != nil {
		return err
	}
	if err := s.b.ReadMetrics(r.Context(), g); err != nil {
		return err
	}
	m := s.metrics.Load()
	if m == nil {
		return &daemon.Error{Class: daemon.ErrNotFound, Code: daemon.CodeNotFound, Message: "metrics are not enabled"}
	}
	m.Handler().ServeHTTP(w, r)
	return nil
}

// handleHealth serves GET /v1/health: 200 {"status":"ok"} when the HSM,
// the store and the audit log answer, 503 with the parts that do not.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadHealth, daemon.Resource{})
	if err != nil {
		return err
	}
	h, err := s.b.Health(r.Context(), g)
	if err != nil {
		return err
	}
	if h.OK() {
		writeJSON(w, http.StatusOK, api.Health{Status: api.HealthOK})
		return nil
	}
	writeJSON(w, http.StatusServiceUnavailable, api.Health{Status: api.HealthUnhealthy, Failed: h.Failed})
	return nil
}

// socketSet is the live fair-share listeners, for the metrics.
type socketSet struct {
	mu sync.Mutex
	m  map[*fairListener]struct{}
}

var sockets = &socketSet{m: map[*fairListener]struct{}{}}

func (s *socketSet) add(l *fairListener) {
	s.mu.Lock()
	s.m[l] = struct{}{}
	s.mu.Unlock()
}

func (s *socketSet) remove(l *fairListener) {
	s.mu.Lock()
	delete(s.m, l)
	s.mu.Unlock()
}

// stats reads each socket's slots: its channel is its network ("unix"
// for the socket and the hybrid-vsock VMs' sockets, "vsock"), never a
// path (a hybrid socket's path names its VM).
func (s *socketSet) stats() []metrics.Socket {
	s.mu.Lock()
	ls := make([]*fairListener, 0, len(s.m))
	for l := range s.m {
		ls = append(ls, l)
	}
	s.mu.Unlock()
	out := make([]metrics.Socket, 0, len(ls))
	for _, l := range ls {
		l.mu.Lock()
		open := l.n
		l.mu.Unlock()
		out = append(out, metrics.Socket{Channel: l.Addr().Network(), Open: open, Max: l.total,
			PeerCapHits: l.capHits.Load(), Refused: l.refused.Load()})
	}
	return out
}
