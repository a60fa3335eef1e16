package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

func durs(ms ...int) []time.Duration {
	out := make([]time.Duration, len(ms))
	for i, m := range ms {
		out[i] = time.Duration(m) * time.Millisecond
	}
	return out
}

func TestPercentile(t *testing.T) {
	hundred := make([]int, 100)
	for i := range hundred {
		hundred[i] = i + 1 // 1..100 ms
	}
	tests := []struct {
		name   string
		sorted []time.Duration
		p      float64
		want   time.Duration
	}{
		{"empty", nil, 50, 0},
		{"one value p50", durs(7), 50, 7 * time.Millisecond},
		{"one value p99", durs(7), 99, 7 * time.Millisecond},
		{"two values p50 is the lower", durs(1, 9), 50, 1 * time.Millisecond},
		{"two values p51 is the upper", durs(1, 9), 51, 9 * time.Millisecond},
		{"four values p50", durs(1, 2, 3, 4), 50, 2 * time.Millisecond},
		{"four values p75", durs(1, 2, 3, 4), 75, 3 * time.Millisecond},
		{"four values p100", durs(1, 2, 3, 4), 100, 4 * time.Millisecond},
		{"1..100 p50", durs(hundred...), 50, 50 * time.Millisecond},
		{"1..100 p99", durs(hundred...), 99, 99 * time.Millisecond},
		{"1..100 p99.9 rounds up", durs(hundred...), 99.9, 100 * time.Millisecond},
		{"tiny p clamps to the first", durs(1, 2, 3), 0.0001, 1 * time.Millisecond},
		{"p over 100 clamps to the last", durs(1, 2, 3), 150, 3 * time.Millisecond},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := percentile(tt.sorted, tt.p); got != tt.want {
				t.Errorf("percentile(%v, %v) = %v, want %v", tt.sorted, tt.p, got, tt.want)
			}
		})
	}
}

func TestRatioAndLowestCeiling(t *testing.T) {
	rates := map[string]float64{ceilHTTP: 30000, ceilHSMSeal: 25000, ceilHSMOpen: 27000, ceilKVSync: 4000}
	tests := []struct {
		name      string
		ceilings  []string
		ops       float64
		wantName  string
		wantRate  float64
		wantOK    bool
		wantRatio float64
	}{
		{"http only", []string{ceilHTTP}, 21000, ceilHTTP, 30000, true, 0.7},
		{"create: kv-sync is lowest", []string{ceilHTTP, ceilHSMSeal, ceilKVSync}, 2400, ceilKVSync, 4000, true, 0.6},
		{"order does not matter", []string{ceilKVSync, ceilHSMSeal, ceilHTTP}, 2400, ceilKVSync, 4000, true, 0.6},
		{"hsm below http", []string{ceilHTTP, ceilHSMSeal}, 12500, ceilHSMSeal, 25000, true, 0.5},
		{"unmeasured ceilings are skipped", []string{ceilHSMSign, ceilHTTP}, 3000, ceilHTTP, 30000, true, 0.1},
		{"none measured", []string{ceilHSMSign}, 100, "", 0, false, 0},
		{"no ceilings", nil, 100, "", 0, false, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			name, rate, ok := lowestCeiling(tt.ceilings, rates)
			if name != tt.wantName || rate != tt.wantRate || ok != tt.wantOK {
				t.Fatalf("lowestCeiling = %q, %v, %v; want %q, %v, %v", name, rate, ok, tt.wantName, tt.wantRate, tt.wantOK)
			}
			if got := round(ratio(tt.ops, rate), 6); got != tt.wantRatio {
				t.Errorf("ratio(%v, %v) = %v, want %v", tt.ops, rate, got, tt.wantRatio)
			}
		})
	}
}

func TestVerdict(t *testing.T) {
	tests := []struct {
		name         string
		errors       int
		goal, ratio  float64
		p99Goal, p99 float64
		want         string
	}{
		{"no goals", 0, 0, 0.2, 0, 9, "-"},
		{"ratio met", 0, 0.6, 0.6, 0, 0, "pass"},
		{"ratio missed", 0, 0.6, 0.59, 0, 0, "below"},
		{"ratio met, p99 missed", 0, 0.7, 0.8, 5, 5, "below"},
		{"ratio and p99 met", 0, 0.7, 0.8, 5, 4.99, "pass"},
		{"p99 only", 0, 0, 0, 5, 1, "pass"},
		{"errors win", 3, 0.6, 0.9, 0, 0, "ERRORS"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := verdict(tt.errors, tt.goal, tt.ratio, tt.p99Goal, tt.p99); got != tt.want {
				t.Errorf("verdict = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMakeRow(t *testing.T) {
	s := scenario{name: "secret-read", ceilings: []string{ceilHTTP}, goal: 0.7, read: true}
	r := result{Name: s.name, Conc: 16, Window: 2 * time.Second, Ops: 4, Lat: durs(1, 2, 3, 4)}
	got := makeRow(s, r, map[string]float64{ceilHTTP: 4})
	want := row{
		Scenario: "secret-read", Concurrency: 16, OpsPerS: 2, P50Ms: 2, P99Ms: 4,
		Ceiling: ceilHTTP, CeilingOpsPerS: 4, Ratio: 0.5, Goal: 0.7, P99GoalMs: 5,
		Verdict: "below", Requests: 4, DurationSeconds: 2,
	}
	if got != want {
		t.Errorf("makeRow =\n%+v\nwant\n%+v", got, want)
	}
	r.Conc = 64 // the p99 goal applies at 16 clients only
	if got := makeRow(s, r, map[string]float64{ceilHTTP: 4}); got.P99GoalMs != 0 {
		t.Errorf("at 64 clients P99GoalMs = %v, want 0", got.P99GoalMs)
	}
}

func TestRunCountsWindowAndErrors(t *testing.T) {
	var calls int
	op := func(context.Context, *rand.Rand) error {
		calls++
		time.Sleep(time.Millisecond)
		if calls%10 == 0 {
			return errors.New("boom")
		}
		return nil
	}
	r, err := run(context.Background(), "t", 1, 20*time.Millisecond, 100*time.Millisecond, funcFactory(op))
	if err != nil {
		t.Fatal(err)
	}
	if r.Ops == 0 || r.Ops >= calls {
		t.Errorf("Ops = %d of %d calls: want some, not all (warm-up excluded)", r.Ops, calls)
	}
	if r.Errors == 0 || r.FirstErr != "boom" {
		t.Errorf("Errors = %d, FirstErr = %q; want errors counted", r.Errors, r.FirstErr)
	}
	if !slices.IsSorted(r.Lat) || len(r.Lat) != r.Ops {
		t.Errorf("latencies not sorted or not one per op")
	}
}

func TestCeilingBodyIs60Bytes(t *testing.T) {
	if n := len(ceilingBody); n != 60 {
		t.Errorf("len(ceilingBody) = %d, want 60", n)
	}
}

func TestParsers(t *testing.T) {
	m := parseMemory([]byte("Name:\tcoffer\nVmRSS:\t   25600 kB\nRssAnon:\t    4096 kB\nRssFile:\t1 kB\n"))
	if m.RSSKiB != 25600 || m.AnonKiB != 4096 {
		t.Errorf("parseMemory = %+v", m)
	}
	busy := parseProcStatBusy([]byte("cpu  10 1 5 1000 7 2 3 4 0 0\ncpu0 1 2 3\n"))
	if busy != 10+1+5+2+3+4 {
		t.Errorf("parseProcStatBusy = %d, want 25", busy)
	}
	for _, tt := range []struct {
		args    []string
		env     string
		conc    []int
		secrets int
		creds   int
		dur     time.Duration
	}{
		{nil, "", []int{16, 64}, 10000, defaultCreds, 3 * time.Second},
		{[]string{"-short"}, "", []int{16}, 500, 2000, 750 * time.Millisecond},
		{[]string{"-short", "-c", "4,8", "-secrets", "50", "-credentials", "10"}, "", []int{4, 8}, 50, 10, 750 * time.Millisecond},
		{nil, "full", []int{16, 64}, 100000, 1000000, 3 * time.Second},
	} {
		o, err := parseFlags(tt.args, tt.env)
		if err != nil {
			t.Fatalf("parseFlags(%q): %v", tt.args, err)
		}
		if !slices.Equal(o.conc, tt.conc) || o.secrets != tt.secrets || o.creds != tt.creds || o.dur != tt.dur {
			t.Errorf("parseFlags(%q, BENCH=%q) = c %v, secrets %d, credentials %d, d %v; want %v, %d, %d, %v",
				tt.args, tt.env, o.conc, o.secrets, o.creds, o.dur, tt.conc, tt.secrets, tt.creds, tt.dur)
		}
	}
	if _, err := parseFlags([]string{"-only", "nope"}, ""); err == nil {
		t.Error("parseFlags accepted an unknown scenario")
	}
}

func TestAuthorizeBody(t *testing.T) {
	var req api.AuthorizeRequest
	dec := json.NewDecoder(bytes.NewReader(authorizeBody("cft_abc", 42)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		t.Fatal(err)
	}
	want := api.AuthorizeRequest{Token: "cft_abc", Service: "inventory", Method: "GET", Path: "/v1/items/42"}
	if req != want {
		t.Errorf("authorizeBody decodes to %+v, want %+v", req, want)
	}
	// The request must match the second rule, not the first.
	if r := benchRules[1]; r.Service != want.Service || r.Method != want.Method {
		t.Errorf("benchRules[1] = %+v does not serve the authorize request", r)
	}
}

func TestScaleRow(t *testing.T) {
	ms := time.Millisecond
	a := result{Window: time.Second, Ops: 3, Lat: []time.Duration{1 * ms, 2 * ms, 9 * ms}, OtherCPU: 1}
	b := result{Window: time.Second, Ops: 1, Lat: []time.Duration{5 * ms}, Errors: 1, FirstErr: "x"}
	sum := addResults(addResults(result{}, a), b)
	if sum.Window != 2*time.Second || sum.Ops != 4 || sum.Errors != 1 || sum.FirstErr != "x" || sum.OtherCPU != 0.5 ||
		!slices.Equal(sum.Lat, []time.Duration{1 * ms, 2 * ms, 5 * ms, 9 * ms}) {
		t.Errorf("addResults = %+v", sum)
	}
	if len(a.Lat) != 3 || a.Lat[2] != 9*ms {
		t.Error("addResults changed its input")
	}
	small := result{Window: time.Second, Ops: 1000, Lat: []time.Duration{ms}}
	large := result{Window: time.Second, Ops: 850, Lat: []time.Duration{ms}}
	if r := makeScaleRow("authorize", small, large, nil); r.Ratio != 0.85 || r.Verdict != "below" {
		t.Errorf("makeScaleRow = %+v, want ratio 0.85 below", r)
	}
	large.Ops = 950
	if r := makeScaleRow("authorize", small, large, nil); r.Verdict != "pass" {
		t.Errorf("makeScaleRow = %+v, want pass", r)
	}
	// The median of the rounds decides, not the totals.
	if r := makeScaleRow("authorize", small, large, []float64{0.5, 0.95, 1.0, 0.92, 0.2}); r.Ratio != 0.92 || r.Verdict != "pass" {
		t.Errorf("makeScaleRow with rounds = %+v, want ratio 0.92 pass", r)
	}
}

func TestBootStormFlagsAndTable(t *testing.T) {
	o, err := parseFlags([]string{"-boot-storm", "-boot-tokens", "tpm"}, "")
	if err != nil || !o.bootStorm || len(o.bootTokens) != 1 || !o.bootTokens["tpm"] {
		t.Fatalf("parseFlags = %+v, %v", o, err)
	}
	if _, err := parseFlags([]string{"-boot-storm", "-boot-tokens", "yubihsm"}, ""); err == nil || err.Error() != `-boot-tokens: unknown token "yubihsm" (softhsm, softhsm-ik, tpm)` {
		t.Fatalf("unknown token: %v", err)
	}
	out := formatBootRows([]bootRow{
		{Scenario: "boot-storm-tpm", KEK: "rsa-3072-oaep-sha256", TotalMs: 26, AfterFirstMs: 25, P99Ms: 8.8, RepeatRatio: 0.67, Verdict: "meets the goal"},
		{Scenario: "boot-storm-softhsm", Skipped: "no SoftHSM"},
	})
	for _, want := range []string{"boot-storm-tpm", "rsa-3072-oaep-sha256", "meets the goal", "boot-storm-softhsm     failed: no SoftHSM"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
}
