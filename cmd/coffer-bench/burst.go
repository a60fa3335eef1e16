package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"text/tabwriter"
	"time"
)

// Reads that writes do not disturb (issue 16, part 3): each read scenario
// is measured on a settled store, then again right after a sustained
// write burst, and the second rate is compared with the first. A burst
// precedes every "after" measurement, so each scenario meets the store at
// its busiest (flushes and compactions under way), not only the first.

const (
	// burstGoal is the minimum ratio of a read's rate right after a write
	// burst to its rate on a settled store.
	burstGoal = 0.9
	// settleMax bounds the wait for the daemon to go idle before a
	// "before" measurement; settleIdleCPU is what counts as idle (cores).
	settleMax     = 60 * time.Second
	settleIdleCPU = 0.05
	settleProbe   = 500 * time.Millisecond
	// afterBurstWarm bounds the warm-up between a burst and the "after"
	// window: long enough to open the workers' connections.
	afterBurstWarm = 100 * time.Millisecond
)

// burstFigures is the part-3 comparison in the meta JSON.
type burstFigures struct {
	What        string     `json:"what"`
	Concurrency int        `json:"concurrency"`
	BurstS      float64    `json:"burst_s"`      // each burst's length
	Writes      int        `json:"writes"`       // acknowledged in all bursts
	WritesPerS  float64    `json:"writes_per_s"` // over all bursts
	SettleMaxS  float64    `json:"settle_max_s"` // the longest wait for an idle daemon
	Rows        []burstRow `json:"rows"`
}

type burstRow struct {
	Scenario      string  `json:"scenario"`
	BeforeOpsPerS float64 `json:"before_ops_per_s"`
	AfterOpsPerS  float64 `json:"after_ops_per_s"`
	Ratio         float64 `json:"ratio"` // after / before; goal >= burstGoal
	BeforeP99Ms   float64 `json:"before_p99_ms"`
	AfterP99Ms    float64 `json:"after_p99_ms"`
	BeforeCPUUs   float64 `json:"before_daemon_cpu_us_per_op"`
	AfterCPUUs    float64 `json:"after_daemon_cpu_us_per_op"`
	Verdict       string  `json:"verdict"`
	// Settled is false when the daemon did not go idle within settleMax
	// before the "before" measurement: its verdict is then "unsettled".
	Settled bool `json:"settled"`
}

// burstWriter is the burst's load: secret creates and rotations of
// preloaded secrets, alternating per request (new records and new
// versions of old ones: both kinds of work for the flushes and
// compactions that follow).
func (e *env) burstWriter() generator {
	create, rotate := e.createBody, e.rotateBody
	return func(w int, rng *rand.Rand) request {
		if rng.IntN(2) == 0 {
			return request{method: http.MethodPost, path: "/v1/projects/default/secrets", body: create}
		}
		id := e.secretIDs[rng.IntN(len(e.secretIDs))]
		return request{method: http.MethodPost, path: "/v1/secrets/" + id + "/rotate", body: rotate}
	}
}

// readScenario is one read to compare, with what drives it.
type readScenario struct {
	name string
	f    workerFactory
}

// compareAfterBurst measures each read on a settled daemon, then runs a
// write burst of length burst and measures the read again at once.
func compareAfterBurst(ctx context.Context, d *daemon, e *env, reads []readScenario, c int, burst, warm, dur time.Duration,
	measure func(name string, c int, f workerFactory) (result, error), measureAfter func(name string, c int, warm time.Duration, f workerFactory) (result, error),
	prof *profiler, logf func(string, ...any)) (burstFigures, error) {
	afterWarm := min(warm, afterBurstWarm)
	out := burstFigures{
		What:        "each read on a settled daemon (its CPU under 0.05 of a core), then right after a burst of secret creates and rotations",
		Concurrency: c, BurstS: burst.Seconds(),
	}
	writer := httpFactory(d.socket, e.burstWriter())
	var burstTime time.Duration
	for _, rd := range reads {
		waited, settled, err := settle(ctx, d.cmd.Process.Pid)
		if err != nil {
			return out, err
		}
		out.SettleMaxS = max(out.SettleMaxS, round(waited.Seconds(), 1))
		profiled := prof.cpuDuring(ctx, d.socket, "settled-"+rd.name, c, warm, dur)
		before, err := measure(rd.name, c, rd.f)
		<-profiled
		if err != nil {
			return out, err
		}
		w, err := run(ctx, "write-burst", c, 0, burst, writer)
		if err != nil {
			return out, err
		}
		if w.Errors > 0 {
			return out, fmt.Errorf("write burst: %d errors, first: %s", w.Errors, w.FirstErr)
		}
		out.Writes += w.Ops
		burstTime += w.Window
		// Right after: the workers' warm-up (new connections) is the
		// only gap between the burst and the window.
		profiled = prof.cpuDuring(ctx, d.socket, "after-burst-"+rd.name, c, afterWarm, dur)
		after, err := measureAfter(rd.name, c, afterWarm, rd.f)
		<-profiled
		if err != nil {
			return out, err
		}
		if before.Errors+after.Errors > 0 {
			return out, fmt.Errorf("%s around a write burst: %d errors, first: %s%s", rd.name, before.Errors+after.Errors, before.FirstErr, after.FirstErr)
		}
		row := burstRow{
			Scenario:      rd.name,
			BeforeOpsPerS: round(before.opsPerSec(), 1),
			AfterOpsPerS:  round(after.opsPerSec(), 1),
			Ratio:         round(ratio(after.opsPerSec(), before.opsPerSec()), 3),
			BeforeP99Ms:   round(before.percentileMs(99), 3),
			AfterP99Ms:    round(after.percentileMs(99), 3),
			BeforeCPUUs:   round(before.DaemonCPUPerOp*1e6, 1),
			AfterCPUUs:    round(after.DaemonCPUPerOp*1e6, 1),
		}
		row.Settled = settled
		row.Verdict = verdict(0, burstGoal, row.Ratio, 0, 0)
		if !settled {
			row.Verdict = "unsettled" // "before" was not measured on an idle daemon
		}
		out.Rows = append(out.Rows, row)
		logf("burst    %-14s c=%-3d %8.0f ops/s settled, %8.0f after %.0f writes/s: ratio %.3f  %s  daemon cpu/op %.0f/%.0f us (settled in %.1fs)",
			rd.name, c, row.BeforeOpsPerS, row.AfterOpsPerS, w.opsPerSec(), row.Ratio, row.Verdict, row.BeforeCPUUs, row.AfterCPUUs, waited.Seconds())
	}
	if burstTime > 0 {
		out.WritesPerS = round(float64(out.Writes)/burstTime.Seconds(), 1)
	}
	return out, nil
}

// settle waits until the daemon's CPU over settleProbe stays under
// settleIdleCPU (its flushes and compactions done), at most settleMax,
// and returns how long it waited and whether the daemon went idle.
func settle(ctx context.Context, pid int) (time.Duration, bool, error) {
	start := time.Now()
	for time.Since(start) < settleMax {
		a := sampleCPU(pid)
		select {
		case <-time.After(settleProbe):
		case <-ctx.Done():
			return 0, false, ctx.Err()
		}
		b := sampleCPU(pid)
		if float64(b.daemonCP-a.daemonCP)/clockTicks/b.at.Sub(a.at).Seconds() < settleIdleCPU {
			return time.Since(start), true, nil
		}
	}
	return time.Since(start), false, nil
}

func printBurst(w io.Writer, b burstFigures) {
	if len(b.Rows) == 0 {
		return
	}
	fmt.Fprintf(w, "reads after writes: %s, %d clients, bursts of %.1fs (%.0f writes/s), goal >= %.2f\n",
		b.What, b.Concurrency, b.BurstS, b.WritesPerS, burstGoal)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tsettled ops/s\tafter ops/s\tratio\tresult\tsettled p99 ms\tafter p99 ms\tdaemon cpu/op µs settled/after\t")
	for _, r := range b.Rows {
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.3f\t%s\t%.3f\t%.3f\t%.0f/%.0f\t\n",
			r.Scenario, r.BeforeOpsPerS, r.AfterOpsPerS, r.Ratio, r.Verdict, r.BeforeP99Ms, r.AfterP99Ms, r.BeforeCPUUs, r.AfterCPUUs)
	}
	tw.Flush()
}
