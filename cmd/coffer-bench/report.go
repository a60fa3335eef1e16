package main

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// readP99Goal is the p99 latency goal of every read scenario at 16 clients.
const (
	readP99Goal     = 5.0 // ms
	readP99GoalConc = 16
)

// percentile returns the nearest-rank p-th percentile (0 < p <= 100) of the
// sorted durations: the smallest value such that at least p% of the values
// are at or below it. It returns 0 for no values.
func percentile(sorted []time.Duration, p float64) time.Duration {
	n := len(sorted)
	if n == 0 {
		return 0
	}
	rank := int(math.Ceil(p / 100 * float64(n)))
	rank = max(1, min(rank, n))
	return sorted[rank-1]
}

// ratio is a scenario's rate over its ceiling's; 0 when there is no ceiling.
func ratio(ops, ceiling float64) float64 {
	if ceiling <= 0 {
		return 0
	}
	return ops / ceiling
}

// lowestCeiling picks, among names, the ceiling with the lowest rate in
// rates. Names without a measured rate are skipped; ok is false when none is
// left.
func lowestCeiling(names []string, rates map[string]float64) (name string, rate float64, ok bool) {
	for _, n := range names {
		r, have := rates[n]
		if !have {
			continue
		}
		if !ok || r < rate {
			name, rate, ok = n, r, true
		}
	}
	return name, rate, ok
}

// verdict is the outcome of one row against its goals.
func verdict(errors int, ratioGoal, r float64, p99Goal, p99 float64) string {
	switch {
	case errors > 0:
		return "ERRORS"
	case ratioGoal == 0 && p99Goal == 0:
		return "-"
	case ratioGoal > 0 && r < ratioGoal, p99Goal > 0 && p99 >= p99Goal:
		return "below"
	}
	return "pass"
}

// row is one line of dist/bench.json. The first eight fields are the
// contract of issue 6; the rest are extra.
type row struct {
	Scenario        string  `json:"scenario"`
	Concurrency     int     `json:"concurrency"`
	OpsPerS         float64 `json:"ops_per_s"`
	P50Ms           float64 `json:"p50_ms"`
	P99Ms           float64 `json:"p99_ms"`
	Ceiling         string  `json:"ceiling"`
	CeilingOpsPerS  float64 `json:"ceiling_ops_per_s"`
	Ratio           float64 `json:"ratio"`
	Goal            float64 `json:"goal,omitempty"`        // minimum ratio
	P99GoalMs       float64 `json:"p99_goal_ms,omitempty"` // read scenarios at 16 clients
	Verdict         string  `json:"verdict"`               // pass, below, ERRORS or -
	Diagnostic      bool    `json:"diagnostic,omitempty"`  // not an issue-6 scenario: no goal
	Requests        int     `json:"requests"`              // counted in the window
	Errors          int     `json:"errors"`
	FirstError      string  `json:"first_error,omitempty"`
	DurationSeconds float64 `json:"duration_s"`
	OtherCPUs       float64 `json:"other_cpus"` // CPU used by other processes meanwhile: noise
	// DaemonCPUUs is the daemon's CPU per operation in µs (user and
	// system, all threads): it varies far less than ops/s on a shared
	// machine, and it is what a request costs the host.
	DaemonCPUUs float64 `json:"daemon_cpu_us_per_op"`
}

func round(v float64, digits int) float64 {
	p := math.Pow10(digits)
	return math.Round(v*p) / p
}

// makeRow turns a scenario measurement into a row against its ceiling.
func makeRow(s scenario, r result, rates map[string]float64) row {
	out := row{
		Scenario:        s.name,
		Concurrency:     r.Conc,
		OpsPerS:         round(r.opsPerSec(), 1),
		P50Ms:           round(r.percentileMs(50), 3),
		P99Ms:           round(r.percentileMs(99), 3),
		Goal:            s.goal,
		Requests:        r.Ops,
		Errors:          r.Errors,
		FirstError:      r.FirstErr,
		DurationSeconds: r.Window.Seconds(),
		OtherCPUs:       round(r.OtherCPU, 2),
		DaemonCPUUs:     round(r.DaemonCPUPerOp*1e6, 1),
		Diagnostic:      s.diag,
	}
	if name, rate, ok := lowestCeiling(s.ceilings, rates); ok {
		out.Ceiling, out.CeilingOpsPerS = name, round(rate, 1)
		out.Ratio = round(ratio(r.opsPerSec(), rate), 3)
	}
	if s.read && !s.diag && r.Conc == readP99GoalConc {
		out.P99GoalMs = readP99Goal
	}
	out.Verdict = verdict(out.Errors, out.Goal, out.Ratio, out.P99GoalMs, out.P99Ms)
	return out
}

func goalText(r row) string {
	var parts []string
	if r.Goal > 0 {
		parts = append(parts, fmt.Sprintf(">=%.2f", r.Goal))
	}
	if r.P99GoalMs > 0 {
		parts = append(parts, fmt.Sprintf("p99<%gms", r.P99GoalMs))
	}
	if len(parts) == 0 {
		if r.Diagnostic {
			return "none (diag)"
		}
		return "-"
	}
	return strings.Join(parts, " ")
}

func printCeilings(w io.Writer, cs []result) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "ceiling\tclients\tops/s\tp50 ms\tp99 ms\terrors\tother cpu\t")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%d\t%.2f\t\n", c.Name, c.Conc, c.opsPerSec(), c.percentileMs(50), c.percentileMs(99), c.Errors, c.OtherCPU)
	}
	tw.Flush()
}

func printRows(w io.Writer, rows []row) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tclients\tops/s\tdaemon cpu/op µs\tp50 ms\tp99 ms\tceiling\tceiling ops/s\tratio\tgoal\tresult\tother cpu\t")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.3f\t%.3f\t%s\t%.0f\t%.3f\t%s\t%s\t%.2f\t\n",
			r.Scenario, r.Concurrency, r.OpsPerS, r.DaemonCPUUs, r.P50Ms, r.P99Ms, r.Ceiling, r.CeilingOpsPerS, r.Ratio, goalText(r), r.Verdict, r.OtherCPUs)
	}
	tw.Flush()
	for _, r := range rows {
		if r.Errors > 0 {
			fmt.Fprintf(w, "  %s at %d clients: %d errors, first: %s\n", r.Scenario, r.Concurrency, r.Errors, r.FirstError)
		}
	}
}

// writeJSON writes v, indented, to path, creating its directory.
func writeJSON(path string, v any) error {
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
	}
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
