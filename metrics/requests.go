package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Channels are the caller channels the request metrics know; any other
// is counted as "other". They are daemon.Channel's values, plus
// "tcp" for anonymous callers on a TCP listener.
var Channels = [nChannels]string{"unix", "vsock", "hybrid-vsock", "loadcredential", "daemon", "kubernetes", "tcp", "other"}

const nChannels = 8

// statuses are the status codes counted each on its own; any other code
// is counted under its class ("1xx".."5xx").
var statuses = []int{200, 201, 204, 301, 304, 400, 401, 403, 404, 405, 409, 410, 412, 413, 415, 422, 429, 500, 502, 503, 504, 507}

// statusIndex maps a code to its slot + 1 (0: not counted on its own).
var statusIndex = func() (t [600]uint8) {
	for i, s := range statuses {
		t[s] = uint8(i + 1)
	}
	return t
}()

const nStatus = 22 + 5 // statuses, then the five classes

func init() {
	if len(statuses)+5 != nStatus {
		panic("metrics: nStatus does not match statuses")
	}
}

func statusSlot(code int) int {
	if code >= 0 && code < len(statusIndex) && statusIndex[code] != 0 {
		return int(statusIndex[code]) - 1
	}
	c := code/100 - 1
	if c < 0 || c > 4 {
		c = 4 // nonsense codes count as server errors
	}
	return len(statuses) + c
}

func statusLabel(slot int) string {
	if slot < len(statuses) {
		return strconv.Itoa(statuses[slot])
	}
	return strconv.Itoa(slot-len(statuses)+1) + "xx"
}

func channelSlot(ch string) int {
	for i, c := range Channels[:len(Channels)-1] {
		if c == ch {
			return i
		}
	}
	return len(Channels) - 1
}

var (
	requestsDesc = prometheus.NewDesc(namespace+"_http_requests_total",
		"HTTP API requests by route pattern, status code and caller channel.",
		[]string{"route", "status", "channel"}, nil)
	durationDesc = prometheus.NewDesc(namespace+"_http_request_duration_seconds",
		durationHelp, []string{"route", "channel"}, nil)
)

const durationHelp = "Duration of HTTP API requests by route pattern and caller channel."

// Requests counts the HTTP API's requests. Each route gets its Route at
// registration; counting a request is two atomic adds and a histogram
// observation (itself atomic), with no lock and no map on the path.
type Requests struct {
	mu     sync.Mutex // guards routes (registration and scrape only)
	routes []*Route
}

func newRequests() *Requests { return &Requests{} }

// Route returns the counters of one route pattern, such as
// "GET /v1/secrets/{id}". Call it when the route is registered, never
// with a request's path.
func (r *Requests) Route(pattern string) *Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, rt := range r.routes {
		if rt.pattern == pattern {
			return rt
		}
	}
	rt := &Route{pattern: pattern}
	r.routes = append(r.routes, rt)
	return rt
}

// Route holds one route pattern's counters.
type Route struct {
	pattern string
	counts  [nChannels][nStatus]atomic.Uint64 // [channel][status]
	hist    [nChannels]atomic.Pointer[histogram]
}

type histogram struct {
	h prometheus.Histogram
}

// Observe counts one request of the route.
func (rt *Route) Observe(channel string, status int, d time.Duration) {
	if rt == nil {
		return
	}
	c := channelSlot(channel)
	rt.counts[c][statusSlot(status)].Add(1)
	h := rt.hist[c].Load()
	if h == nil {
		h = rt.newHistogram(c)
	}
	h.h.Observe(d.Seconds())
}

func (rt *Route) newHistogram(c int) *histogram {
	// Unlabelled and unregistered: Collect sends it with its labels
	// (relabel).
	h := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: namespace + "_http_request_duration_seconds", Help: durationHelp,
		Buckets: latencyBuckets,
	})
	n := &histogram{h: h}
	if rt.hist[c].CompareAndSwap(nil, n) {
		return n
	}
	return rt.hist[c].Load()
}

// Describe sends nothing: the series are known only as requests come.
func (r *Requests) Describe(chan<- *prometheus.Desc) {}

// Collect sends the counters of the routes and channels that served
// requests.
func (r *Requests) Collect(ch chan<- prometheus.Metric) {
	r.mu.Lock()
	routes := append([]*Route(nil), r.routes...)
	r.mu.Unlock()
	for _, rt := range routes {
		for c := range Channels {
			for s := range nStatus {
				if n := rt.counts[c][s].Load(); n > 0 {
					ch <- prometheus.MustNewConstMetric(requestsDesc, prometheus.CounterValue, float64(n), rt.pattern, statusLabel(s), Channels[c])
				}
			}
			if h := rt.hist[c].Load(); h != nil {
				ch <- relabel(h.h, durationDesc, rt.pattern, Channels[c])
			}
		}
	}
}

// relabel turns a label-less histogram into a const histogram with the
// route's labels.
func relabel(h prometheus.Histogram, d *prometheus.Desc, labels ...string) prometheus.Metric {
	var pb dto.Metric
	if err := h.Write(&pb); err != nil {
		return prometheus.NewInvalidMetric(d, err)
	}
	hs := pb.GetHistogram()
	buckets := make(map[float64]uint64, len(hs.GetBucket()))
	for _, b := range hs.GetBucket() {
		buckets[b.GetUpperBound()] = b.GetCumulativeCount()
	}
	return prometheus.MustNewConstHistogram(d, hs.GetSampleCount(), hs.GetSampleSum(), buckets, labels...)
}
