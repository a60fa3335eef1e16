package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/coffer-hsm/coffer/internal/buildtags"
)

// buildCoffer builds the coffer binary into dir the way `make build` does.
func buildCoffer(ctx context.Context, dir string) (string, error) {
	goBin := os.Getenv("GO")
	if goBin == "" {
		goBin = "go"
	}
	out := filepath.Join(dir, "coffer")
	cmd := exec.CommandContext(ctx, goBin, "build", "-trimpath", "-tags", buildtags.Release, "-ldflags", "-s -w -X main.version=bench",
		"-o", out, "github.com/coffer-hsm/coffer/cmd/coffer")
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = os.Stderr, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/coffer: %w\n%s", err, stderr.String())
	}
	return out, nil
}

// daemonEnv is the environment of the daemon and the CLI: ours without the
// SoftHSM config of the bench's own token.
func daemonEnv(socket string) []string {
	env := slices.DeleteFunc(os.Environ(), func(kv string) bool {
		return strings.HasPrefix(kv, "SOFTHSM2_CONF=") || strings.HasPrefix(kv, "COFFER_")
	})
	return append(env, "COFFER_SOCKET="+socket)
}

// daemonArgs are flags of every daemon the bench starts (the Kubernetes
// webhooks' listener: main sets them).
var daemonArgs []string

// daemon is a running `coffer daemon --dev`.
type daemon struct {
	bin, stateDir, socket, logPath string
	cmd                            *exec.Cmd
	exited                         chan struct{}
	waitErr                        error
	ready                          time.Duration // start to the export line
}

// startDaemon starts coffer daemon --dev on stateDir (with extra flags)
// and waits until it prints its export COFFER_SOCKET= line (it does so
// once the HSM and the store are open and the socket listens).
func startDaemon(ctx context.Context, bin, stateDir string, extra ...string) (*daemon, error) {
	d := &daemon{
		bin: bin, stateDir: stateDir,
		socket:  filepath.Join(stateDir, "coffer.sock"),
		logPath: filepath.Join(filepath.Dir(stateDir), "daemon.log"),
		exited:  make(chan struct{}),
	}
	logf, err := os.OpenFile(d.logPath, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	args := append([]string{"daemon", "--dev", "--state-dir", stateDir, "--socket", d.socket}, daemonArgs...)
	d.cmd = exec.Command(bin, append(args, extra...)...)
	d.cmd.Env = daemonEnv(d.socket)
	d.cmd.Stderr = logf
	stdout, err := d.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	start := time.Now()
	if err := d.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	readyc := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "export COFFER_SOCKET=") {
				readyc <- time.Since(start)
				break
			}
		}
		_, _ = io.Copy(io.Discard, stdout)
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	select {
	case d.ready = <-readyc:
		return d, nil
	case <-d.exited:
		return nil, fmt.Errorf("coffer daemon exited before it was ready (%v); log %s:\n%s", d.waitErr, d.logPath, tail(d.logPath, 20))
	case <-time.After(60 * time.Second):
		d.stop()
		return nil, fmt.Errorf("coffer daemon not ready after 60s; log %s:\n%s", d.logPath, tail(d.logPath, 20))
	case <-ctx.Done():
		d.stop()
		return nil, ctx.Err()
	}
}

// stop sends SIGTERM and waits for the daemon to drain and exit (SIGKILL
// after 20 s). It returns how long the shutdown took.
func (d *daemon) stop() (time.Duration, error) {
	select {
	case <-d.exited:
		return 0, d.waitErr
	default:
	}
	start := time.Now()
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.exited:
	case <-time.After(20 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.exited
		return time.Since(start), errors.New("coffer daemon ignored SIGTERM for 20s; killed")
	}
	return time.Since(start), d.waitErr
}

// memory is a process's resident set from /proc/PID/status.
type memory struct {
	RSSKiB  int64 `json:"rss_kib"`
	AnonKiB int64 `json:"anon_kib"`
}

func (m memory) String() string {
	return fmt.Sprintf("%.1f MiB (anon %.1f MiB)", float64(m.RSSKiB)/1024, float64(m.AnonKiB)/1024)
}

func (d *daemon) memory() (memory, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.cmd.Process.Pid))
	if err != nil {
		return memory{}, err
	}
	return parseMemory(b), nil
}

func parseMemory(status []byte) memory {
	var m memory
	for _, line := range strings.Split(string(status), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		if err != nil {
			continue
		}
		switch k {
		case "VmRSS":
			m.RSSKiB = n
		case "RssAnon":
			m.AnonKiB = n
		}
	}
	return m
}

// timeCLI runs `coffer secret get id` runs times (after one untimed run)
// and returns the wall times, sorted.
func timeCLI(ctx context.Context, bin, socket, id string, runs int) ([]time.Duration, error) {
	env := daemonEnv(socket)
	var out []time.Duration
	for i := -1; i < runs; i++ {
		cmd := exec.CommandContext(ctx, bin, "secret", "get", id)
		cmd.Env = env
		var stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = io.Discard, &stderr
		start := time.Now()
		err := cmd.Run()
		took := time.Since(start)
		if err != nil {
			return nil, fmt.Errorf("coffer secret get %s: %w: %s", id, err, bytes.TrimSpace(stderr.Bytes()))
		}
		if i >= 0 {
			out = append(out, took)
		}
	}
	slices.Sort(out)
	return out, nil
}

// tail returns the last n lines of the file at path.
func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// clockTicks is USER_HZ, the unit of /proc CPU times (100 on Linux).
const clockTicks = 100

// cpuSample is the machine's busy CPU time and that of the bench and the
// daemon, in clock ticks, so that the CPU used by anything else during a
// measurement (other processes on a shared machine) can be reported.
type cpuSample struct {
	at                   time.Time
	busy, self, daemonCP uint64
}

func sampleCPU(daemonPID int) cpuSample {
	s := cpuSample{at: time.Now()}
	if b, err := os.ReadFile("/proc/stat"); err == nil {
		s.busy = parseProcStatBusy(b)
	}
	s.self = procTicks("/proc/self/stat")
	if daemonPID > 0 {
		s.daemonCP = procTicks(fmt.Sprintf("/proc/%d/stat", daemonPID))
	}
	return s
}

// otherCPUs returns how many CPUs' worth of time processes other than the
// bench and the daemon used between a and b.
func otherCPUs(a, b cpuSample) float64 {
	secs := b.at.Sub(a.at).Seconds()
	ours := (b.self - a.self) + (b.daemonCP - a.daemonCP)
	busy := b.busy - a.busy
	if secs <= 0 || busy < ours {
		return 0
	}
	return float64(busy-ours) / clockTicks / secs
}

// daemonCPUPerOp is the daemon's CPU time between a and b divided by
// the operations r's rate implies for that time (warm-up included).
func daemonCPUPerOp(a, b cpuSample, r result, warm time.Duration) float64 {
	ops := r.opsPerSec() * (r.Window + warm).Seconds()
	if ops <= 0 || b.daemonCP < a.daemonCP {
		return 0
	}
	return float64(b.daemonCP-a.daemonCP) / clockTicks / ops
}

// parseProcStatBusy sums the non-idle fields of the "cpu" line of
// /proc/stat: user nice system idle iowait irq softirq steal.
func parseProcStatBusy(b []byte) uint64 {
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy uint64
	for i, v := range f[1:9] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseUint(v, 10, 64)
		busy += n
	}
	return busy
}

// procTicks is utime+stime of /proc/PID/stat.
func procTicks(path string) uint64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(b[i+1:]))
	// After the comm: state(0) ppid ... utime is field 14 of the line,
	// index 11 here; stime index 12.
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseUint(f[11], 10, 64)
	s, _ := strconv.ParseUint(f[12], 10, 64)
	return u + s
}
