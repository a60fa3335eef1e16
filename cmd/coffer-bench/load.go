package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"
)

// The load generator: conc goroutines, each with its own state (for HTTP:
// its own keep-alive connection), in a closed loop for warm+dur. Only
// operations that complete inside the measurement window [warm, warm+dur]
// count towards the rate and the latencies; errors are counted over the
// whole run, warm-up included, so that a flaky scenario cannot hide.
//
// Every ceiling and every scenario goes through run, so their ratios compare
// like with like.

// opFunc is one operation of one worker. It must be safe to call repeatedly
// from one goroutine (not concurrently).
type opFunc func(ctx context.Context, rng *rand.Rand) error

// workerFactory makes the state of worker i (e.g. its connection) and returns
// its operation and a cleanup. It runs before the clock starts.
type workerFactory func(i int) (op opFunc, cleanup func(), err error)

// result is one measurement.
type result struct {
	Name     string
	Conc     int
	Window   time.Duration   // length of the measurement window
	Ops      int             // successful operations completed in the window
	Errors   int             // failed operations over the whole run
	FirstErr string          // the first failure, for the report
	Lat      []time.Duration // latencies of the counted operations, sorted
	OtherCPU float64         // CPUs' worth used by other processes meanwhile
	// DaemonCPUPerOp is the daemon's CPU seconds per operation (its CPU
	// over the warm-up and the window, over the operations that rate
	// implies for both).
	DaemonCPUPerOp float64
}

func (r result) opsPerSec() float64 {
	if r.Window <= 0 {
		return 0
	}
	return float64(r.Ops) / r.Window.Seconds()
}

func (r result) percentileMs(p float64) float64 {
	return float64(percentile(r.Lat, p)) / float64(time.Millisecond)
}

// run measures one operation at one concurrency.
func run(ctx context.Context, name string, conc int, warm, dur time.Duration, factory workerFactory) (result, error) {
	ops := make([]opFunc, conc)
	var cleanups []func()
	defer func() {
		for _, c := range cleanups {
			c()
		}
	}()
	for i := range conc {
		op, cleanup, err := factory(i)
		if err != nil {
			return result{}, fmt.Errorf("%s: worker %d: %w", name, i, err)
		}
		ops[i] = op
		if cleanup != nil {
			cleanups = append(cleanups, cleanup)
		}
	}

	type workerOut struct {
		lat      []time.Duration
		errs     int
		firstErr error
	}
	outs := make([]workerOut, conc)
	start := time.Now()
	from, to := start.Add(warm), start.Add(warm+dur)
	runCtx, cancel := context.WithDeadline(ctx, to.Add(30*time.Second))
	defer cancel()
	var wg sync.WaitGroup
	for i := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(start.UnixNano()), uint64(i)))
			out := &outs[i]
			out.lat = make([]time.Duration, 0, 4096)
			op := ops[i]
			for {
				t0 := time.Now()
				if !t0.Before(to) || runCtx.Err() != nil {
					return
				}
				err := op(runCtx, rng)
				t1 := time.Now()
				if err != nil {
					out.errs++
					if out.firstErr == nil {
						out.firstErr = err
					}
					continue
				}
				if !t1.Before(from) && !t1.After(to) {
					out.lat = append(out.lat, t1.Sub(t0))
				}
			}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return result{}, err
	}

	r := result{Name: name, Conc: conc, Window: dur}
	n := 0
	for _, o := range outs {
		n += len(o.lat)
	}
	r.Lat = make([]time.Duration, 0, n)
	for _, o := range outs {
		r.Lat = append(r.Lat, o.lat...)
		r.Errors += o.errs
		if r.FirstErr == "" && o.firstErr != nil {
			r.FirstErr = o.firstErr.Error()
		}
	}
	r.Ops = len(r.Lat)
	sort.Slice(r.Lat, func(i, j int) bool { return r.Lat[i] < r.Lat[j] })
	return r, nil
}

// request is one HTTP request of a scenario.
type request struct {
	method string
	path   string
	body   []byte // nil: no body
	ctype  string // Content-Type of body; default application/json
	auth   string // Authorization header value; "" for none
}

// generator makes the next request of worker w (0 <= w < concurrency).
type generator func(w int, rng *rand.Rand) request

// httpWorker owns one keep-alive connection to a Unix socket (or, made
// by newHTTPSWorker, to an HTTPS listener).
type httpWorker struct {
	hc   *http.Client
	tr   *http.Transport
	base string // "": http://coffer over the socket
	buf  bytes.Buffer
}

// newHTTPSWorker is a worker with one keep-alive TLS connection to base
// (https://host:port), verified with tlsc.
func newHTTPSWorker(base string, tlsc *tls.Config) *httpWorker {
	tr := &http.Transport{
		TLSClientConfig:     tlsc.Clone(),
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &httpWorker{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr: tr, base: base}
}

// httpsFactory is httpFactory over HTTPS to base.
func httpsFactory(base string, tlsc *tls.Config, gen generator) workerFactory {
	return func(i int) (opFunc, func(), error) {
		w := newHTTPSWorker(base, tlsc)
		return func(ctx context.Context, rng *rand.Rand) error {
			return w.do(ctx, gen(i, rng))
		}, w.close, nil
	}
}

func newHTTPWorker(socket string) *httpWorker {
	d := net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", socket)
		},
		MaxIdleConns:        1,
		MaxIdleConnsPerHost: 1,
		MaxConnsPerHost:     1,
		IdleConnTimeout:     time.Minute,
		DisableCompression:  true,
	}
	return &httpWorker{hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}, tr: tr}
}

func (w *httpWorker) close() { w.tr.CloseIdleConnections() }

// do sends req and reads the whole response (so the connection is reused).
// A non-2xx status is an error quoting the start of the body. On success the
// body is in w.buf until the next call.
func (w *httpWorker) do(ctx context.Context, req request) error {
	var body io.Reader
	if req.body != nil {
		body = bytes.NewReader(req.body)
	}
	base := w.base
	if base == "" {
		base = "http://coffer"
	}
	hr, err := http.NewRequestWithContext(ctx, req.method, base+req.path, body)
	if err != nil {
		return err
	}
	if req.body != nil {
		ct := req.ctype
		if ct == "" {
			ct = "application/json"
		}
		hr.Header.Set("Content-Type", ct)
	}
	if req.auth != "" {
		hr.Header.Set("Authorization", req.auth)
	}
	resp, err := w.hc.Do(hr)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	w.buf.Reset()
	if _, err := w.buf.ReadFrom(resp.Body); err != nil {
		return fmt.Errorf("%s %s: read response: %w", req.method, req.path, err)
	}
	if resp.StatusCode/100 != 2 {
		msg := w.buf.Bytes()
		if len(msg) > 200 {
			msg = msg[:200]
		}
		return fmt.Errorf("%s %s: %d %s", req.method, req.path, resp.StatusCode, bytes.TrimSpace(msg))
	}
	return nil
}

// httpFactory makes workers that each send gen's requests over their own
// connection to socket.
func httpFactory(socket string, gen generator) workerFactory {
	return func(i int) (opFunc, func(), error) {
		w := newHTTPWorker(socket)
		return func(ctx context.Context, rng *rand.Rand) error {
			return w.do(ctx, gen(i, rng))
		}, w.close, nil
	}
}

// funcFactory makes workers that share one in-process operation.
func funcFactory(op opFunc) workerFactory {
	return func(int) (opFunc, func(), error) { return op, nil, nil }
}
