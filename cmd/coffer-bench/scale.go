package main

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Scale (issue 6): authorize and bearer-read must not slow down as
// credentials accumulate (no full scans on any request path). The bench
// keeps a copy of the state taken when scaleSmall credentials were loaded,
// serves it with a second daemon, and measures the two daemons in
// alternating slices (each with a warm-up of half the usual, at most
// 250 ms), so that a noisy neighbour weighs on both sides alike; the ratio
// is the median of the rounds' ratios, so one noisy slice does not decide.
//
// Both daemons run with the bearer cache off (scaleFlags): with it on, the
// small side serves every request from memory and the large side mostly
// from the store, and the comparison would weigh the cache's size against
// the number of tokens in use instead of the request path against the
// store's size.

// scaleRounds is how many slices of each side make up one comparison.
const scaleRounds = 5

// scaleFlags are the daemon flags of both sides of the comparison.
var scaleFlags = []string{"--bearer-cache-size", "0"}

type measureOnFunc func(dd *daemon, name string, c int, warm, dur time.Duration, f workerFactory) (result, error)

// compareScale starts a daemon on smallState and measures each scale
// scenario on it and on large, alternating, for dur in all per side.
func (e *env) compareScale(ctx context.Context, bin, smallState string, sc scaleFigures, large *daemon, warm, dur time.Duration, measureOn measureOnFunc, prof *profiler, logf func(string, ...any)) ([]scaleRow, error) {
	small, err := startDaemon(ctx, bin, smallState, scaleFlags...)
	if err != nil {
		return nil, fmt.Errorf("small-state daemon: %w", err)
	}
	defer small.stop()
	se := *e
	se.setSocket(small.socket)
	se.accessTokens = e.accessTokens[:sc.Small]

	slice := dur / scaleRounds
	warm = min(warm/2, 250*time.Millisecond)
	var rows []scaleRow
	for _, s := range scenarios {
		if !slices.Contains(scaleScenarios, s.name) {
			continue
		}
		type side struct {
			d    *daemon
			e    *env
			gen  generator
			sum  result
			last result
		}
		sides := []*side{{d: small, e: &se}, {d: large, e: e}}
		for _, sd := range sides {
			if sd.gen, err = s.prepare(ctx, sd.e); err != nil {
				return nil, fmt.Errorf("prepare %s: %w", s.name, err)
			}
		}
		var ratios []float64
		for round := range scaleRounds {
			// Alternate which side goes first.
			order := []*side{sides[round%2], sides[1-round%2]}
			for _, sd := range order {
				r, err := measureOn(sd.d, s.name, sc.Concurrency, warm, slice, httpFactory(sd.d.socket, sd.gen))
				if err != nil {
					return nil, err
				}
				sd.sum = addResults(sd.sum, r)
				sd.last = r
			}
			ratios = append(ratios, ratio(sides[1].last.opsPerSec(), sides[0].last.opsPerSec()))
		}
		for _, sd := range sides {
			if sd.sum.Errors > 0 {
				return nil, fmt.Errorf("scale %s: %d errors, first: %s", s.name, sd.sum.Errors, sd.sum.FirstErr)
			}
		}
		if prof != nil {
			// Profiled apart from the rounds (the profile needs whole
			// seconds): one more window per side, not counted.
			for i, sd := range sides {
				label := [...]string{"small", "large"}[i]
				done := prof.cpuDuring(ctx, sd.d.socket, "scale-"+s.name+"-"+label, sc.Concurrency, warm, 2*time.Second)
				_, err := measureOn(sd.d, s.name, sc.Concurrency, warm, 2*time.Second, httpFactory(sd.d.socket, sd.gen))
				<-done
				if err != nil {
					return nil, err
				}
			}
		}
		row := makeScaleRow(s.name, sides[0].sum, sides[1].sum, ratios)
		rows = append(rows, row)
		logf("scale    %-14s c=%-3d %8.0f ops/s at %d credentials, %8.0f at %d: ratio %.3f  %s  other cpu %.2f/%.2f",
			s.name, sc.Concurrency, row.SmallOpsPerS, sc.Small, row.LargeOpsPerS, sc.Large, row.Ratio, row.Verdict, row.SmallOther, row.LargeOther)
	}
	return rows, nil
}

// addResults merges two measurements of the same thing: windows and
// counts add up, latencies merge, other-CPU is time-weighted.
func addResults(a, b result) result {
	if a.Window == 0 {
		return b
	}
	out := a
	out.Window += b.Window
	out.Ops += b.Ops
	out.Errors += b.Errors
	if out.FirstErr == "" {
		out.FirstErr = b.FirstErr
	}
	out.Lat = append(slices.Clone(a.Lat), b.Lat...)
	slices.Sort(out.Lat)
	out.OtherCPU = (a.OtherCPU*a.Window.Seconds() + b.OtherCPU*b.Window.Seconds()) / out.Window.Seconds()
	if out.Ops > 0 {
		out.DaemonCPUPerOp = (a.DaemonCPUPerOp*float64(a.Ops) + b.DaemonCPUPerOp*float64(b.Ops)) / float64(out.Ops)
	}
	return out
}

// makeScaleRow compares a scenario's rate at the large size with its rate
// at the small one: the ratio is the median of the rounds' ratios (of the
// totals when there are none).
func makeScaleRow(name string, small, large result, rounds []float64) scaleRow {
	out := scaleRow{
		Scenario:     name,
		SmallOpsPerS: round(small.opsPerSec(), 1),
		LargeOpsPerS: round(large.opsPerSec(), 1),
		Ratio:        round(ratio(large.opsPerSec(), small.opsPerSec()), 3),
		RoundRatios:  make([]float64, len(rounds)),
		SmallP99Ms:   round(small.percentileMs(99), 3),
		LargeP99Ms:   round(large.percentileMs(99), 3),
		SmallOther:   round(small.OtherCPU, 2),
		LargeOther:   round(large.OtherCPU, 2),
		SmallCPUUs:   round(small.DaemonCPUPerOp*1e6, 1),
		LargeCPUUs:   round(large.DaemonCPUPerOp*1e6, 1),
	}
	for i, r := range rounds {
		out.RoundRatios[i] = round(r, 3)
	}
	if len(rounds) > 0 {
		sorted := slices.Sorted(slices.Values(rounds))
		mid := len(sorted) / 2
		med := sorted[mid]
		if len(sorted)%2 == 0 {
			med = (sorted[mid-1] + sorted[mid]) / 2
		}
		out.Ratio = round(med, 3)
	}
	out.Verdict = verdict(small.Errors+large.Errors, scaleGoal, out.Ratio, 0, 0)
	return out
}

func printScale(w io.Writer, rows []scaleRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "scenario\tsmall ops/s\tlarge ops/s\tdaemon cpu/op µs small/large\tsmall p99 ms\tlarge p99 ms\tratio (median)\tper round\tresult\tother cpu small/large\t")
	for _, r := range rows {
		per := make([]string, len(r.RoundRatios))
		for i, x := range r.RoundRatios {
			per[i] = fmt.Sprintf("%.2f", x)
		}
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%.0f/%.0f\t%.3f\t%.3f\t%.3f\t%s\t%s\t%.2f/%.2f\t\n",
			r.Scenario, r.SmallOpsPerS, r.LargeOpsPerS, r.SmallCPUUs, r.LargeCPUUs, r.SmallP99Ms, r.LargeP99Ms, r.Ratio, strings.Join(per, " "), r.Verdict, r.SmallOther, r.LargeOther)
	}
	tw.Flush()
}

// copyDir copies the regular files under src to dst (a daemon's stopped
// state: store, dev token); sockets and the like are skipped.
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		target := filepath.Join(dst, rel)
		info, err := de.Info()
		if err != nil {
			return err
		}
		switch {
		case de.IsDir():
			return os.MkdirAll(target, info.Mode().Perm()|0o700)
		case !info.Mode().IsRegular():
			return nil
		}
		in, err := os.Open(path)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_WRONLY|os.O_CREATE|os.O_EXCL, info.Mode().Perm())
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
}
