//go:build !nodaemon

package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/coffer-hsm/coffer/metrics"
	"github.com/coffer-hsm/coffer/unixapi"
)

// metricsMaxConns bounds the connections of the loopback metrics
// listener: a scraper needs one.
const metricsMaxConns = 4

// metricsListen checks --metrics-listen: an IP literal on the loopback
// interface with a port. The listener has no caller identity (TCP), so
// it must not be reachable from another host.
func metricsListen(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", usagef("--metrics-listen %q: want a loopback address and port such as 127.0.0.1:9464 (%v)", addr, err)
	}
	ip := net.ParseIP(host)
	if ip == nil || !ip.IsLoopback() {
		return "", usagef("--metrics-listen %q: %q is not a loopback address; the metrics listener serves 127.0.0.1 or [::1] only (anyone who can connect may read it), scrape from another host through a proxy or the socket's GET /v1/metrics", addr, host)
	}
	if port == "" {
		return "", usagef("--metrics-listen %q: a port is needed, such as 127.0.0.1:9464", addr)
	}
	return net.JoinHostPort(ip.String(), port), nil
}

// metricsServer serves GET /metrics on a loopback TCP listener.
type metricsServer struct {
	srv *http.Server
	l   net.Listener
}

// startMetrics listens on addr (checked by metricsListen) and serves m
// there until Shutdown; served gets the error if serving fails.
func startMetrics(addr string, m *metrics.Metrics, log *slog.Logger, served chan<- error) (*metricsServer, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	srv := &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	ms := &metricsServer{srv: srv, l: l}
	go func() {
		err := srv.Serve(unixapi.LimitListener(l, metricsMaxConns))
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			served <- fmt.Errorf("metrics listener: %w", err)
		}
	}()
	log.Info("serving metrics", "addr", l.Addr().String())
	return ms, nil
}

// Shutdown stops the listener; nil-safe.
func (ms *metricsServer) Shutdown(ctx context.Context) {
	if ms != nil {
		_ = ms.srv.Shutdown(ctx)
	}
}
