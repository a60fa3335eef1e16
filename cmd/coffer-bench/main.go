// Command coffer-bench measures coffer against its limits (issue 6): it
// starts the real `coffer daemon --dev` (real SoftHSM, real Badger with
// SyncWrites) on a scratch directory, drives it over its Unix socket with N
// keep-alive clients, and compares each scenario with the ceilings measured
// in the same run by the same load generator: a bare net/http server on a
// Unix socket, the hsm package's Seal/Unseal/Sign on a token of its own, and
// synced Badger commits through the kv package.
//
//	go run ./cmd/coffer-bench            # what make bench runs, < 3 minutes
//	go run ./cmd/coffer-bench -short     # CI smoke pass, ~20 s
//	BENCH=full go run ./cmd/coffer-bench # 100k secrets, 1M credentials
//
// Before measuring it preloads secrets and access-token credentials through
// the API (10,000 and 30,000 by default; see defaultCreds), keeps a copy of
// the state taken at 1,000 credentials, and compares authorize and
// bearer-read on the two sizes (scale.go).
//
// It prints a table on stdout (progress on stderr), writes dist/bench.json
// (one row per scenario and concurrency) and dist/bench-meta.json (machine,
// ceilings, daemon start time, memory, CLI wall time, preload costs, disk
// per secret and per credential, the scale comparison). It exits 1 when a
// scenario had errors, not when one is below its goal.
package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
)

// Process goals of issue 6.
const (
	goalReadyMs   = 1000
	goalIdleMiB   = 40
	goalAnonMiB   = 150
	goalCLIMs     = 5
	preloadConc   = 32
	credConc      = 64 // credentials preload: more clients, more commits per fsync
	cliRunsNormal = 20
	scaleSmall    = 1000 // credentials of the small side of the scale comparison
	// defaultCreds is below issue 6's 100,000 for make bench: through the
	// API they load at ~1,500-3,000/s on a 2-CPU machine (one synced
	// commit each), and 100,000 alone would take a third of the 3-minute
	// budget. BENCH=full loads 1,000,000.
	defaultCreds = 30000
	scaleGoal    = 0.9 // large-size rate over small-size rate
	// settleIdle is how long the daemon idles after the scenarios before
	// its warm footprint is measured.
	settleIdle      = 25 * time.Second
	settleIdleShort = 3 * time.Second
)

type options struct {
	coffer  string
	conc    []int
	dur     time.Duration
	warm    time.Duration
	secrets int
	creds   int
	cliRuns int
	short   bool
	full    bool
	out     string
	meta    string
	tmp     string
	keep    bool
	only    map[string]bool
	profile string
	// bootStorm runs the boot storm (bootstorm.go) instead of the rest,
	// on bootTokens (nil: every token).
	bootStorm  bool
	bootTokens map[string]bool
}

func main() {
	opts, err := parseFlags(os.Args[1:], os.Getenv("BENCH"))
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer-bench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	run := benchMain
	if opts.bootStorm {
		run = bootStormMain
	}
	code, err := run(ctx, opts, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "coffer-bench:", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

func parseFlags(args []string, benchEnv string) (options, error) {
	fs := flag.NewFlagSet("coffer-bench", flag.ContinueOnError)
	var o options
	var conc, only, bootTokens string
	fs.StringVar(&o.coffer, "coffer", "", "coffer binary to run (default: go build ./cmd/coffer into the scratch dir)")
	fs.StringVar(&conc, "c", "16,64", "comma-separated client counts")
	fs.DurationVar(&o.dur, "d", 3*time.Second, "measurement window per scenario and concurrency")
	fs.DurationVar(&o.warm, "warmup", 500*time.Millisecond, "warm-up before each window (not counted)")
	fs.IntVar(&o.secrets, "secrets", 10000, "secrets preloaded through the API (BENCH=full: 100000)")
	fs.IntVar(&o.creds, "credentials", defaultCreds, "access-token credentials preloaded through the API (BENCH=full: 1000000)")
	fs.IntVar(&o.cliRuns, "cli-runs", cliRunsNormal, "timed runs of `coffer secret get ID`")
	fs.BoolVar(&o.short, "short", false, "smoke pass: one concurrency, 0.75s windows, 500 secrets, 2000 credentials")
	fs.StringVar(&o.out, "out", "dist/bench.json", "rows as JSON")
	fs.StringVar(&o.meta, "meta", "", "machine, ceilings and daemon figures as JSON (default: -out with -meta.json)")
	fs.StringVar(&o.tmp, "tmp", "", "where to make the scratch directory (default $TMPDIR; not tmpfs: it hides fsync)")
	fs.BoolVar(&o.keep, "keep", false, "keep the scratch directory (daemon log, state)")
	fs.StringVar(&o.profile, "profile", "", "write the daemon's CPU profile of every measurement and its heap after load into this directory")
	fs.StringVar(&only, "only", "", "comma-separated scenarios to run (default all available)")
	fs.BoolVar(&o.bootStorm, "boot-storm", false, "run only the boot storm: 100 units' LoadCredential= from a cold daemon, 16 at a time, on SoftHSM and a software TPM")
	fs.StringVar(&bootTokens, "boot-tokens", "softhsm,softhsm-ik,tpm", "tokens of the boot storm (softhsm-ik: SoftHSM with --kek-intermediate on)")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if o.bootStorm {
		o.bootTokens = map[string]bool{}
		for _, t := range strings.Split(bootTokens, ",") {
			switch t = strings.TrimSpace(t); t {
			case "softhsm", "softhsm-ik", "tpm":
				o.bootTokens[t] = true
			default:
				return o, fmt.Errorf("-boot-tokens: unknown token %q (softhsm, softhsm-ik, tpm)", t)
			}
		}
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	o.full = benchEnv == "full"
	if o.full && !set["secrets"] {
		o.secrets = 100000
	}
	if o.full && !set["credentials"] {
		o.creds = 1000000
	}
	if o.short {
		if !set["c"] {
			conc = "16"
		}
		if !set["d"] {
			o.dur = 750 * time.Millisecond
		}
		if !set["warmup"] {
			o.warm = 200 * time.Millisecond
		}
		if !set["secrets"] {
			o.secrets = 500
		}
		if !set["credentials"] {
			o.creds = 2000
		}
		if !set["cli-runs"] {
			o.cliRuns = 5
		}
	}
	for _, f := range strings.Split(conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return o, fmt.Errorf("-c: %q is not a client count", f)
		}
		o.conc = append(o.conc, n)
	}
	if o.dur <= 0 || o.warm < 0 {
		return o, errors.New("-d must be positive and -warmup not negative")
	}
	if o.secrets < 1 {
		return o, errors.New("-secrets must be at least 1")
	}
	if o.creds < 1 {
		return o, errors.New("-credentials must be at least 1")
	}
	if o.cliRuns < 1 {
		return o, errors.New("-cli-runs must be at least 1")
	}
	if only != "" {
		o.only = map[string]bool{}
		known := map[string]bool{}
		for _, s := range scenarios {
			known[s.name] = true
		}
		for _, n := range strings.Split(only, ",") {
			n = strings.TrimSpace(n)
			if !known[n] {
				return o, fmt.Errorf("-only: unknown scenario %q", n)
			}
			o.only[n] = true
		}
		// A scenario measured against another runs that one too.
		for _, s := range scenarios {
			if o.only[s.name] {
				for _, c := range s.ceilings {
					if known[c] {
						o.only[c] = true
					}
				}
			}
		}
	}
	if o.meta == "" {
		o.meta = strings.TrimSuffix(o.out, ".json") + "-meta.json"
	}
	return o, nil
}

// meta is dist/bench-meta.json.
type meta struct {
	Time         time.Time     `json:"time"`
	Machine      machine       `json:"machine"`
	Settings     settings      `json:"settings"`
	Daemon       daemonFigures `json:"daemon"`
	CLI          cliFigures    `json:"cli"`
	Preload      preload       `json:"preload"`
	Disk         disk          `json:"disk"`
	Scale        scaleFigures  `json:"scale"`
	Ceilings     []ceilingRow  `json:"ceilings"`
	Burst        burstFigures  `json:"reads_after_writes"`
	Placeholders []string      `json:"placeholders"`
}

type machine struct {
	CPUs       int    `json:"cpus"`
	CPUModel   string `json:"cpu_model"`
	Kernel     string `json:"kernel"`
	Go         string `json:"go"`
	ScratchFS  string `json:"scratch_fs"`
	ScratchDir string `json:"scratch_dir"`
}

type settings struct {
	Concurrency []int   `json:"concurrency"`
	WindowS     float64 `json:"window_s"`
	WarmupS     float64 `json:"warmup_s"`
	Secrets     int     `json:"secrets"`
	Credentials int     `json:"credentials"`
	Short       bool    `json:"short"`
	Full        bool    `json:"full"`
}

type daemonFigures struct {
	BuildS          float64 `json:"build_s,omitempty"`
	ReadyColdMs     float64 `json:"ready_cold_ms"` // fresh state: token init, key provisioning
	ReadyMs         float64 `json:"ready_ms"`      // restart with the preloaded secrets and credentials
	ReadySecrets    int     `json:"ready_secrets"`
	ReadyCreds      int     `json:"ready_credentials"`
	IdleFresh       memory  `json:"idle_fresh"`
	IdleRestarted   memory  `json:"idle_restarted"`
	AfterLoad       memory  `json:"after_load"`
	AfterIdle       memory  `json:"after_idle"` // AfterLoad plus IdleS seconds without requests
	IdleS           float64 `json:"idle_s"`
	ShutdownMs      float64 `json:"shutdown_ms"`
	SecretsAtEnd    int     `json:"secrets_at_end"`
	CredsAtEnd      int     `json:"credentials_at_end"`
	StatusAfterLoad string  `json:"status_error,omitempty"`
}

type cliFigures struct {
	Command  string  `json:"command"`
	Runs     int     `json:"runs"`
	MedianMs float64 `json:"median_ms"`
	MinMs    float64 `json:"min_ms"`
	MaxMs    float64 `json:"max_ms"`
}

type preload struct {
	Secrets     int     `json:"secrets"`
	Concurrency int     `json:"concurrency"`
	Seconds     float64 `json:"seconds"`
	PerS        float64 `json:"per_s"`

	// Access-token credentials (each one credential, one session and one
	// token record with their indexes, in one synced commit).
	Credentials     int     `json:"credentials"`
	CredConcurrency int     `json:"credentials_concurrency"`
	CredSeconds     float64 `json:"credentials_seconds"`
	CredPerS        float64 `json:"credentials_per_s"`
}

// disk is the Badger directory measured with the daemon stopped: after the
// secrets preload, after the credentials preload, and at the end.
type disk struct {
	SecretsBytes   int64   `json:"secrets_bytes"` // after the secrets preload
	Secrets        int     `json:"secrets"`
	BytesPerSecret float64 `json:"bytes_per_secret"`
	CredsBytes     int64   `json:"credentials_bytes"` // growth from the credentials preload
	Credentials    int     `json:"credentials"`       // preloaded plus the scenarios' own
	BytesPerCred   float64 `json:"bytes_per_credential"`
	DataBytes      int64   `json:"data_bytes"` // at the end of the run
}

// scaleFigures compares authorize and bearer-read with scaleSmall
// credentials in the store and with all of them.
type scaleFigures struct {
	Concurrency int        `json:"concurrency"`
	Small       int        `json:"small_credentials"`
	Large       int        `json:"large_credentials"`
	Rounds      int        `json:"rounds"` // alternating slices per side
	Rows        []scaleRow `json:"rows"`
	Skipped     string     `json:"skipped,omitempty"`
}

type scaleRow struct {
	Scenario     string    `json:"scenario"`
	SmallOpsPerS float64   `json:"small_ops_per_s"`
	LargeOpsPerS float64   `json:"large_ops_per_s"`
	Ratio        float64   `json:"ratio"` // median of RoundRatios; goal >= scaleGoal
	RoundRatios  []float64 `json:"round_ratios"`
	SmallP99Ms   float64   `json:"small_p99_ms"`
	LargeP99Ms   float64   `json:"large_p99_ms"`
	Verdict      string    `json:"verdict"`
	SmallOther   float64   `json:"small_other_cpus"`
	LargeOther   float64   `json:"large_other_cpus"`
	SmallCPUUs   float64   `json:"small_daemon_cpu_us_per_op"`
	LargeCPUUs   float64   `json:"large_daemon_cpu_us_per_op"`
}

type ceilingRow struct {
	Name        string  `json:"name"`
	What        string  `json:"what"`
	Concurrency int     `json:"concurrency"`
	OpsPerS     float64 `json:"ops_per_s"`
	P50Ms       float64 `json:"p50_ms"`
	P99Ms       float64 `json:"p99_ms"`
	Errors      int     `json:"errors"`
	OtherCPUs   float64 `json:"other_cpus"`
}

func ms(d time.Duration) float64 { return round(float64(d)/float64(time.Millisecond), 3) }

func benchMain(ctx context.Context, o options, stdout, stderr io.Writer) (code int, err error) {
	started := time.Now()
	logf := runLogger(stderr, started)
	scratch, cleanup, err := scratchDir(o, "coffer-bench-", logf)
	if err != nil {
		return 1, err
	}
	defer func() { cleanup(err) }()
	m := meta{Time: started.UTC(), Machine: describeMachine(scratch), Settings: settings{
		Concurrency: o.conc, WindowS: o.dur.Seconds(), WarmupS: o.warm.Seconds(),
		Secrets: o.secrets, Credentials: o.creds, Short: o.short, Full: o.full,
	}}
	if m.Machine.ScratchFS == "tmpfs" {
		logf("warning: %s is tmpfs: fsync is free there, so kv-sync and writes look faster than on disk (use -tmp)", scratch)
	}

	// The bench's own token first: nothing else in this process may load
	// the PKCS#11 module before PrepareDevToken.
	ceil, err := openCeilings(ctx, filepath.Join(scratch, "ceilings"))
	if err != nil {
		return 1, fmt.Errorf("ceilings: %w", err)
	}
	defer ceil.close()

	bin := o.coffer
	if bin == "" {
		t := time.Now()
		if bin, err = buildCoffer(ctx, scratch); err != nil {
			return 1, err
		}
		m.Daemon.BuildS = round(time.Since(t).Seconds(), 2)
		logf("built coffer in %.1fs", m.Daemon.BuildS)
	} else if bin, err = filepath.Abs(bin); err != nil {
		return 1, err
	}

	prof, err := newProfiler(o.profile, logf)
	if err != nil {
		return 2, err
	}

	stateDir := filepath.Join(scratch, "state")
	// Every daemon serves the Kubernetes webhooks too (k8s-tokenreview).
	bearerFile := filepath.Join(scratch, "k8s-bearer")
	if err := os.WriteFile(bearerFile, []byte(rand.Text()+rand.Text()+"\n"), 0o600); err != nil {
		return 1, err
	}
	daemonArgs = []string{"--k8s-listen", "127.0.0.1:0", "--k8s-bearer-file", bearerFile}
	d, err := startDaemon(ctx, bin, stateDir)
	if err != nil {
		return 1, err
	}
	defer func() {
		if d != nil {
			_, _ = d.stop()
		}
	}()
	m.Daemon.ReadyColdMs = ms(d.ready)
	time.Sleep(200 * time.Millisecond) // let start-up garbage settle
	m.Daemon.IdleFresh, _ = d.memory()
	logf("daemon ready in %.0f ms (fresh state), idle %s", m.Daemon.ReadyColdMs, m.Daemon.IdleFresh)

	// measure runs one measurement and notes the CPU that processes other
	// than the bench and the daemon used meanwhile: on a shared machine
	// that is the noise in the figures. It reads d when called: the daemon
	// restarts in between.
	measureOn := func(dd *daemon, name string, c int, warm, dur time.Duration, f workerFactory) (result, error) {
		before := sampleCPU(dd.cmd.Process.Pid)
		r, err := run(ctx, name, c, warm, dur, f)
		after := sampleCPU(dd.cmd.Process.Pid)
		r.OtherCPU = otherCPUs(before, after)
		r.DaemonCPUPerOp = daemonCPUPerOp(before, after, r, warm)
		return r, err
	}
	measure := func(name string, c int, f workerFactory) (result, error) {
		return measureOn(d, name, c, o.warm, o.dur, f)
	}
	// stopAndMeasureDisk stops the daemon (its memtables flushed) and
	// returns the size of its Badger directory.
	dataDir := filepath.Join(stateDir, "data")
	stopAndMeasureDisk := func() (int64, error) {
		if _, err := d.stop(); err != nil {
			return 0, fmt.Errorf("stop daemon: %w", err)
		}
		return diskUsage(dataDir)
	}

	e, err := newEnv(d.socket)
	if err != nil {
		return 1, err
	}
	t := time.Now()
	if err := e.preloadSecrets(ctx, o.secrets, preloadConc); err != nil {
		return 1, fmt.Errorf("%w (daemon log %s)", err, d.logPath)
	}
	took := time.Since(t)
	m.Preload = preload{Secrets: o.secrets, Concurrency: preloadConc, Seconds: round(took.Seconds(), 2),
		PerS: round(float64(o.secrets)/took.Seconds(), 1)}
	logf("preloaded %d secrets in %.1fs (%.0f/s)", o.secrets, took.Seconds(), m.Preload.PerS)
	secretsBytes, err := stopAndMeasureDisk()
	if err != nil {
		return 1, err
	}
	m.Disk.SecretsBytes, m.Disk.Secrets = secretsBytes, o.secrets
	m.Disk.BytesPerSecret = round(float64(secretsBytes)/float64(o.secrets), 1)
	if d, err = startDaemon(ctx, bin, stateDir); err != nil {
		return 1, err
	}
	e.setSocket(d.socket)

	// The identity the credential scenarios use, then the access tokens:
	// scaleSmall first, to measure the scale scenarios against, then the
	// rest.
	clients := slices.Max(o.conc)
	if err := e.setupIdentity(ctx, clients); err != nil {
		return 1, fmt.Errorf("%w (daemon log %s)", err, d.logPath)
	}
	small := min(scaleSmall, o.creds)
	t = time.Now()
	if err := e.preloadCredentials(ctx, small, credConc); err != nil {
		return 1, fmt.Errorf("%w (daemon log %s)", err, d.logPath)
	}
	credTook := time.Since(t)
	m.Scale = scaleFigures{Concurrency: o.conc[0], Small: small, Large: o.creds, Rounds: scaleRounds}
	smallState := filepath.Join(scratch, "state-small")
	if o.creds <= scaleSmall {
		m.Scale.Skipped = fmt.Sprintf("only %d credentials preloaded", o.creds)
	} else {
		// Keep a copy of the state with the small set: a second daemon
		// serves it during the comparison.
		if _, err := d.stop(); err != nil {
			return 1, fmt.Errorf("stop daemon: %w", err)
		}
		if err := copyDir(stateDir, smallState); err != nil {
			return 1, fmt.Errorf("copy state: %w", err)
		}
		if d, err = startDaemon(ctx, bin, stateDir); err != nil {
			return 1, err
		}
		e.setSocket(d.socket)
		t = time.Now()
		if err := e.preloadCredentials(ctx, o.creds, credConc); err != nil {
			return 1, fmt.Errorf("%w (daemon log %s)", err, d.logPath)
		}
		credTook += time.Since(t)
	}
	m.Preload.Credentials, m.Preload.CredConcurrency = o.creds, credConc
	m.Preload.CredSeconds = round(credTook.Seconds(), 2)
	m.Preload.CredPerS = round(float64(o.creds)/credTook.Seconds(), 1)
	logf("preloaded %d credentials in %.1fs (%.0f/s)", o.creds, credTook.Seconds(), m.Preload.CredPerS)
	allBytes, err := stopAndMeasureDisk()
	if err != nil {
		return 1, err
	}
	// Besides the preloaded access tokens: the scenarios' oauth2 clients
	// and auth tokens (and the JWT sessions, a few dozen records).
	m.Disk.Credentials = o.creds + 2*clients
	m.Disk.CredsBytes = allBytes - secretsBytes
	m.Disk.BytesPerCred = round(float64(m.Disk.CredsBytes)/float64(m.Disk.Credentials), 1)

	// Restart on the loaded state: this is the start-up that matters.
	if d, err = startDaemon(ctx, bin, stateDir); err != nil {
		return 1, err
	}
	e.setSocket(d.socket)
	m.Daemon.ReadyMs, m.Daemon.ReadySecrets, m.Daemon.ReadyCreds = ms(d.ready), o.secrets, o.creds
	time.Sleep(200 * time.Millisecond)
	m.Daemon.IdleRestarted, _ = d.memory()
	logf("daemon restarted with %d secrets and %d credentials: ready in %.0f ms, idle %s", o.secrets, o.creds, m.Daemon.ReadyMs, m.Daemon.IdleRestarted)

	cli, err := timeCLI(ctx, bin, d.socket, e.secretIDs[0], o.cliRuns)
	if err != nil {
		return 1, err
	}
	m.CLI = cliFigures{Command: "coffer secret get ID", Runs: len(cli),
		MedianMs: ms(percentile(cli, 50)), MinMs: ms(cli[0]), MaxMs: ms(cli[len(cli)-1])}
	logf("CLI: median %.2f ms over %d runs", m.CLI.MedianMs, len(cli))

	if m.Scale.Skipped == "" {
		// The large side: this state, with the bearer cache off like the
		// small side (see scale.go); then back to the daemon as deployed.
		if _, err := d.stop(); err != nil {
			return 1, fmt.Errorf("stop daemon: %w", err)
		}
		if d, err = startDaemon(ctx, bin, stateDir, scaleFlags...); err != nil {
			return 1, err
		}
		e.setSocket(d.socket)
		rows, err := e.compareScale(ctx, bin, smallState, m.Scale, d, o.warm, o.dur, measureOn, prof, logf)
		if err != nil {
			return 1, err
		}
		m.Scale.Rows = rows
		if _, err := d.stop(); err != nil {
			return 1, fmt.Errorf("stop daemon: %w", err)
		}
		if d, err = startDaemon(ctx, bin, stateDir); err != nil {
			return 1, err
		}
		e.setSocket(d.socket)
	}

	// Prepare the scenarios once; they run at every concurrency.
	type ready struct {
		s       scenario
		gen     generator
		workers workerFactory // instead of gen: not HTTP on the API socket
	}
	var runnable []ready
	warm := false
	for _, s := range scenarios {
		if s.needs != "" {
			m.Placeholders = append(m.Placeholders, s.name)
			continue
		}
		if o.only != nil && !o.only[s.name] {
			continue
		}
		warm = warm || s.warmTokens
		if s.workers != nil {
			f, err := s.workers(ctx, e)
			if err != nil {
				return 1, fmt.Errorf("prepare %s: %w", s.name, err)
			}
			runnable = append(runnable, ready{s: s, workers: f})
			continue
		}
		gen, err := s.prepare(ctx, e)
		if err != nil {
			return 1, fmt.Errorf("prepare %s: %w", s.name, err)
		}
		runnable = append(runnable, ready{s: s, gen: gen})
	}
	if warm {
		t := time.Now()
		if err := e.warmBearers(ctx, preloadConc); err != nil {
			return 1, err
		}
		logf("used each of %d access tokens once in %.1fs (bearer cache warm)", len(e.tokensInUse()), time.Since(t).Seconds())
	}

	var ceilResults []result
	var rows []row
	for _, c := range o.conc {
		rates := map[string]float64{}
		for _, cd := range ceilingDefs {
			f, err := ceil.factory(cd.name)
			if err != nil {
				return 1, err
			}
			r, err := measure(cd.name, c, f)
			if err != nil {
				return 1, err
			}
			if r.Errors > 0 {
				logf("ceiling %s at %d clients: %d errors, first: %s", cd.name, c, r.Errors, r.FirstErr)
			}
			rates[cd.name] = r.opsPerSec()
			ceilResults = append(ceilResults, r)
			m.Ceilings = append(m.Ceilings, ceilingRow{Name: cd.name, What: cd.what, Concurrency: c,
				OpsPerS: round(r.opsPerSec(), 1), P50Ms: round(r.percentileMs(50), 3),
				P99Ms: round(r.percentileMs(99), 3), Errors: r.Errors, OtherCPUs: round(r.OtherCPU, 2)})
			logf("ceiling  %-14s c=%-3d %8.0f ops/s  p99 %.2f ms  other cpu %.2f", cd.name, c, r.opsPerSec(), r.percentileMs(99), r.OtherCPU)
		}
		for _, rs := range runnable {
			profiled := prof.cpuDuring(ctx, d.socket, rs.s.name, c, o.warm, o.dur)
			f := rs.workers
			if f == nil {
				f = httpFactory(d.socket, rs.gen)
			}
			r, err := measure(rs.s.name, c, f)
			<-profiled
			if err != nil {
				return 1, err
			}
			rw := makeRow(rs.s, r, rates)
			rows = append(rows, rw)
			// A later scenario may be measured against this one.
			rates[rs.s.name] = r.opsPerSec()
			logf("scenario %-14s c=%-3d %8.0f ops/s  p99 %.2f ms  ratio %.3f (%s)  %s  other cpu %.2f  daemon cpu/op %.0f us", rw.Scenario, c, rw.OpsPerS, rw.P99Ms, rw.Ratio, rw.Ceiling, rw.Verdict, rw.OtherCPUs, r.DaemonCPUPerOp*1e6)
		}
	}

	m.Daemon.AfterLoad, _ = d.memory()
	prof.heap(ctx, d.socket, "after-load") // a collection: perturbs AfterIdle
	// The goal is the footprint of a warm daemon, not of a write burst's
	// last moments: Badger keeps the buffers of its last table builds
	// pooled for a few seconds, and the Go runtime returns freed memory
	// gradually. Measure again once that has settled (the caches stay).
	idle := settleIdle
	if o.short {
		idle = settleIdleShort
	}
	select {
	case <-time.After(idle):
	case <-ctx.Done():
		return 1, ctx.Err()
	}
	m.Daemon.AfterIdle, _ = d.memory()
	m.Daemon.IdleS = idle.Seconds()
	prof.heap(ctx, d.socket, "after-idle")
	if st, err := fetchStatus(ctx, d.socket); err == nil {
		m.Daemon.SecretsAtEnd, m.Daemon.CredsAtEnd = st.Counts.Secrets, st.Counts.Credentials
	} else {
		m.Daemon.StatusAfterLoad = err.Error()
	}

	// Reads around write bursts (after the memory figures: the bursts
	// grow the store).
	var reads []readScenario
	for _, rs := range runnable {
		if rs.s.writes() {
			continue
		}
		f := rs.workers
		if f == nil {
			f = httpFactory(d.socket, rs.gen)
		}
		reads = append(reads, readScenario{name: rs.s.name, f: f})
	}
	if len(reads) > 0 {
		if m.Burst, err = compareAfterBurst(ctx, d, e, reads, readP99GoalConc, 2*o.dur, o.warm, o.dur, measure,
			func(name string, c int, warm time.Duration, f workerFactory) (result, error) {
				return measureOn(d, name, c, warm, o.dur, f)
			}, prof, logf); err != nil {
			return 1, err
		}
	}
	shut, err := d.stop()
	d = nil
	if err != nil {
		return 1, fmt.Errorf("stop daemon: %w", err)
	}
	m.Daemon.ShutdownMs = ms(shut)
	if n, err := diskUsage(dataDir); err == nil {
		m.Disk.DataBytes = n
	}

	printReport(stdout, m, ceilResults, rows)
	if err := writeJSON(o.out, rows); err != nil {
		return 1, err
	}
	if err := writeJSON(o.meta, m); err != nil {
		return 1, err
	}
	fmt.Fprintf(stdout, "\nwrote %s and %s in %.0fs\n", o.out, o.meta, time.Since(started).Seconds())
	for _, r := range rows {
		if r.Errors > 0 {
			return 1, errors.New("some scenarios had errors")
		}
	}
	return 0, nil
}

func printReport(w io.Writer, m meta, ceils []result, rows []row) {
	mc := m.Machine
	fmt.Fprintf(w, "coffer bench  %s  %d CPU %s, kernel %s, %s, scratch on %s\n",
		m.Time.Format(time.RFC3339), mc.CPUs, mc.CPUModel, mc.Kernel, mc.Go, mc.ScratchFS)
	fmt.Fprintf(w, "window %gs (+%gs warm-up) per measurement, %d secrets and %d access-token credentials preloaded\n\n",
		m.Settings.WindowS, m.Settings.WarmupS, m.Settings.Secrets, m.Settings.Credentials)

	printCeilings(w, ceils)
	fmt.Fprintln(w)
	printRows(w, rows)
	noisy := 0.0
	for _, c := range ceils {
		noisy = max(noisy, c.OtherCPU)
	}
	for _, r := range rows {
		noisy = max(noisy, r.OtherCPUs)
	}
	if noisy >= 0.2 {
		fmt.Fprintf(w, "warning: other processes used up to %.2f of %d CPUs during measurements (column other cpu): figures are noisy\n", noisy, m.Machine.CPUs)
	}
	if len(m.Placeholders) > 0 {
		fmt.Fprintf(w, "not yet measurable (capability pending): %s\n", strings.Join(m.Placeholders, ", "))
	}

	dm := m.Daemon
	mib := func(kib int64) float64 { return float64(kib) / 1024 }
	pass := func(ok bool) string {
		if ok {
			return "pass"
		}
		return "below"
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "daemon start to ready   %7.0f ms fresh state (token init, key provisioning)\n", dm.ReadyColdMs)
	fmt.Fprintf(w, "                        %7.0f ms restart with %d secrets, %d credentials   goal <= %d ms: %s\n",
		dm.ReadyMs, dm.ReadySecrets, dm.ReadyCreds, goalReadyMs, pass(dm.ReadyMs <= goalReadyMs))
	fmt.Fprintf(w, "daemon RSS idle         %s fresh   goal <= %d MiB: %s\n", dm.IdleFresh, goalIdleMiB, pass(mib(dm.IdleFresh.RSSKiB) <= goalIdleMiB))
	fmt.Fprintf(w, "                        %s after restart with %d secrets, %d credentials\n", dm.IdleRestarted, dm.ReadySecrets, dm.ReadyCreds)
	fmt.Fprintf(w, "daemon RSS after load   %s   right after the last scenario\n", dm.AfterLoad)
	fmt.Fprintf(w, "                        %s   after %.0f s without requests, caches warm   goal anon <= %d MiB: %s\n",
		dm.AfterIdle, dm.IdleS, goalAnonMiB, pass(mib(dm.AfterIdle.AnonKiB) <= goalAnonMiB))
	fmt.Fprintf(w, "daemon shutdown         %7.0f ms (SIGTERM to exit)\n", dm.ShutdownMs)
	fmt.Fprintf(w, "CLI coffer secret get   %7.2f ms median of %d (min %.2f, max %.2f)   goal <= %d ms: %s\n",
		m.CLI.MedianMs, m.CLI.Runs, m.CLI.MinMs, m.CLI.MaxMs, goalCLIMs, pass(m.CLI.MedianMs <= goalCLIMs))
	fmt.Fprintf(w, "preload                 %d secrets in %.1fs (%.0f/s at %d clients)\n",
		m.Preload.Secrets, m.Preload.Seconds, m.Preload.PerS, m.Preload.Concurrency)
	fmt.Fprintf(w, "                        %d access-token credentials in %.1fs (%.0f/s at %d clients)\n",
		m.Preload.Credentials, m.Preload.CredSeconds, m.Preload.CredPerS, m.Preload.CredConcurrency)
	mb := func(n int64) float64 { return float64(n) / (1 << 20) }
	if m.Disk.Secrets > 0 {
		fmt.Fprintf(w, "disk                    %.1f MiB for %d secrets (%.0f bytes/secret)\n",
			mb(m.Disk.SecretsBytes), m.Disk.Secrets, m.Disk.BytesPerSecret)
	}
	if m.Disk.Credentials > 0 {
		fmt.Fprintf(w, "                        +%.1f MiB for %d credentials (%.0f bytes/credential: credential, session, token records and indexes)\n",
			mb(m.Disk.CredsBytes), m.Disk.Credentials, m.Disk.BytesPerCred)
	}
	fmt.Fprintf(w, "                        %.1f MiB at the end (Badger dir, daemon stopped)\n", mb(m.Disk.DataBytes))

	fmt.Fprintln(w)
	printBurst(w, m.Burst)
	fmt.Fprintln(w)
	sc := m.Scale
	if sc.Skipped != "" {
		fmt.Fprintf(w, "scale: not measured (%s)\n", sc.Skipped)
		return
	}
	fmt.Fprintf(w, "scale: rate with %d credentials over rate with %d, at %d clients, bearer cache off on both, two daemons measured in %d alternating slices each (goal >= %.2f: no full scans)\n",
		sc.Large, sc.Small, sc.Concurrency, sc.Rounds, scaleGoal)
	printScale(w, sc.Rows)
}

// diskUsage sums the allocated blocks of the files under dir.
func diskUsage(dir string) (int64, error) {
	var n int64
	err := filepath.WalkDir(dir, func(_ string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			n += st.Blocks * 512
		} else {
			n += fi.Size()
		}
		return nil
	})
	return n, err
}

func describeMachine(scratch string) machine {
	m := machine{CPUs: runtime.NumCPU(), Go: runtime.Version(), ScratchDir: scratch}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)
				break
			}
		}
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(scratch, &st); err == nil {
		m.ScratchFS = fsName(int64(st.Type))
	}
	return m
}

func fsName(magic int64) string {
	switch magic {
	case 0xEF53:
		return "ext4"
	case 0x01021994:
		return "tmpfs"
	case 0x58465342:
		return "xfs"
	case 0x9123683E:
		return "btrfs"
	case 0x794c7630:
		return "overlayfs"
	case 0x2FC12FC1:
		return "zfs"
	}
	return fmt.Sprintf("fs 0x%x", magic)
}

func fetchStatus(ctx context.Context, socket string) (api.Status, error) {
	return client.NewClient(socket).Status(ctx)
}

// runLogger logs a line to w with the seconds since started.
func runLogger(w io.Writer, started time.Time) func(format string, args ...any) {
	return func(format string, args ...any) {
		fmt.Fprintf(w, "[%5.1fs] %s\n", time.Since(started).Seconds(), fmt.Sprintf(format, args...))
	}
}

// scratchDir makes a run's scratch directory under -tmp. cleanup, given
// the run's error, removes it, or keeps it (and says where) with -keep or
// after a failure.
func scratchDir(o options, prefix string, logf func(string, ...any)) (dir string, cleanup func(error), err error) {
	dir, err = os.MkdirTemp(o.tmp, prefix)
	if err != nil {
		return "", nil, err
	}
	return dir, func(runErr error) {
		if o.keep || runErr != nil {
			logf("scratch directory kept: %s", dir)
			return
		}
		_ = os.RemoveAll(dir)
	}, nil
}
