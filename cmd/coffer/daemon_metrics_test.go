//go:build !nodaemon

package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
)

func TestMetricsListen(t *testing.T) {
	tests := []struct {
		in, want, wantErr string
	}{
		{in: "127.0.0.1:9464", want: "127.0.0.1:9464"},
		{in: "127.0.0.2:9464", want: "127.0.0.2:9464"},
		{in: "[::1]:9464", want: "[::1]:9464"},
		{in: "127.0.0.1:0", want: "127.0.0.1:0"},
		{in: "0.0.0.0:9464", wantErr: `"0.0.0.0" is not a loopback address`},
		{in: "[::]:9464", wantErr: `"::" is not a loopback address`},
		{in: "192.0.2.1:9464", wantErr: `"192.0.2.1" is not a loopback address`},
		{in: ":9464", wantErr: `"" is not a loopback address`},
		{in: "localhost:9464", wantErr: `"localhost" is not a loopback address`}, // names resolve to anything
		{in: "127.0.0.1", wantErr: "want a loopback address and port"},
		{in: "127.0.0.1:", wantErr: "a port is needed"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := metricsListen(tt.in)
			if tt.wantErr == "" {
				if err != nil || got != tt.want {
					t.Fatalf("metricsListen(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
				}
				return
			}
			var ue *usageError
			if !errors.As(err, &ue) || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("metricsListen(%q) error = %v; want a usage error with %q", tt.in, err, tt.wantErr)
			}
		})
	}
}

func TestHealthOfStatus(t *testing.T) {
	tests := []struct {
		name       string
		hsm, store bool
		want       string
		failed     []string
	}{
		{"both answer", true, true, api.HealthOK, nil},
		{"hsm lost", false, true, api.HealthUnhealthy, []string{"hsm"}},
		{"both down", false, false, api.HealthUnhealthy, []string{"hsm", "store"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var st api.Status
			st.HSM.Healthy, st.Store.Healthy = tt.hsm, tt.store
			h := healthOfStatus(st)
			if h.Status != tt.want || !slices.Equal(h.Failed, tt.failed) {
				t.Errorf("healthOfStatus = %+v, want %s %v", h, tt.want, tt.failed)
			}
		})
	}
}
