package e2e

// Crashes lose nothing: concurrent writers, kill -9 at a random moment,
// restart, and every acknowledged write is there exactly (crash_model_test.go
// holds the model, crash_check_test.go the checks).

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const (
	crashWorkers = 8
	// The kill comes at a random moment in this window after the writers
	// start.
	killAfterMin = 50 * time.Millisecond
	killAfterMax = 1500 * time.Millisecond
	// defaultCrashCycles keeps `make test` short; COFFER_SOAK_CYCLES
	// (make soak) asks for more.
	defaultCrashCycles = 3
)

// crashRun is the state of one crash test across its kill/restart cycles.
type crashRun struct {
	t            *testing.T
	workers      []*crashWorker
	checkerToken string // access token of the user that receives deliveries
	checkerCred  string // its credential id

	maybes, maybeHappened int // requests in flight at a kill; how many took effect
	checks                int // records checked after restarts
}

// TestCrashLosesNothing runs cycles of: crashWorkers goroutines writing
// (secret create/rotate/revoke/delete, credential create/rotate/delete,
// logins, role changes), kill -9 at a random moment, restart on the same
// state directory, and a check that every acknowledged write is there with
// its exact state, every request that was in flight took effect whole or
// not at all, every secret still unseals to its exact payload and key
// values, and lists and gets agree.
//
// COFFER_SOAK_CYCLES sets the number of cycles; COFFER_CRASH_SEED repeats a
// run's choices (the kill moments and the writes; not the scheduling).
func TestCrashLosesNothing(t *testing.T) {
	cycles := defaultCrashCycles
	if s := os.Getenv("COFFER_SOAK_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("COFFER_SOAK_CYCLES=%q: want a positive number", s)
		}
		cycles = n
	}
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("COFFER_CRASH_SEED"); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("COFFER_CRASH_SEED=%q: want a number", s)
		}
		seed = n
	}
	t.Logf("crash test: seed %d (COFFER_CRASH_SEED=%d repeats it), %d cycles of %d writers", seed, seed, cycles, crashWorkers)
	rng := rand.New(rand.NewPCG(seed, 0))

	dir := workDir(t)
	d := startDaemon(t, dir)
	run := newCrashRun(t, d, seed)
	for cycle := 1; cycle <= cycles; cycle++ {
		ackedBefore, maybesBefore, happenedBefore, checksBefore := run.acked(), run.maybes, run.maybeHappened, run.checks
		delay := killAfterMin + time.Duration(rng.Int64N(int64(killAfterMax-killAfterMin)))
		inFlight := run.writeUntilKilled(d, delay)
		killed := d

		d = startDaemon(t, dir)
		checkRecoveryLog(t, d, killed)
		run.check(d)
		t.Logf("cycle %d: kill -9 after %v: %d writes acknowledged, %d in flight (%d took effect); %d records checked",
			cycle, delay.Round(time.Millisecond), run.acked()-ackedBefore, inFlight,
			run.maybeHappened-happenedBefore, run.checks-checksBefore)
		if run.maybes-maybesBefore != inFlight {
			t.Errorf("cycle %d: %d writes in flight, %d resolved", cycle, inFlight, run.maybes-maybesBefore)
		}
		if t.Failed() {
			t.Fatalf("cycle %d failed; COFFER_CRASH_SEED=%d repeats the run", cycle, seed)
		}
	}
	var kinds []string
	for k := range numOpKinds {
		n := 0
		for _, w := range run.workers {
			n += w.byKind[k]
		}
		kinds = append(kinds, fmt.Sprintf("%s %d", k, n))
	}
	t.Logf("crash test: %d cycles, %d acknowledged writes checked (%v), %d in flight at a kill (%d took effect), %d record checks",
		cycles, run.acked(), kinds, run.maybes, run.maybeHappened, run.checks)
}

// newCrashRun makes the project, the checker (a reader with an access
// token, the consumer of every delivery check) and the workers' users.
func newCrashRun(t *testing.T, d *daemonProc, seed uint64) *crashRun {
	t.Helper()
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": crashProject}, http.StatusCreated, nil)
	// A long session: a soak run may outlast the usual hour.
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": crashChecker, "kind": "workload", "access_token_ttl": "720h"}, http.StatusCreated, nil)
	d.setRole(t, crashProject, crashChecker, "reader")
	cred := d.newCred(t, crashProject, map[string]any{"type": "access-token", "user": crashChecker})
	run := &crashRun{t: t, checkerToken: cred.Token, checkerCred: cred.ID}
	for n := range crashWorkers {
		w := newCrashWorker(n, seed)
		d.newUser(t, w.user)
		d.setRole(t, crashProject, w.user, "member")
		d.newUser(t, w.roleUser)
		run.workers = append(run.workers, w)
	}
	return run
}

func (r *crashRun) acked() int {
	n := 0
	for _, w := range r.workers {
		n += w.acked
	}
	return n
}

// writeUntilKilled runs the workers against d, kills d with SIGKILL after
// delay and returns how many requests were in flight then.
func (r *crashRun) writeUntilKilled(d *daemonProc, delay time.Duration) int {
	var killed atomic.Bool
	var wg sync.WaitGroup
	for _, w := range r.workers {
		wg.Go(func() { r.drive(d, w, &killed) })
	}
	time.Sleep(delay)
	killed.Store(true)
	d.Kill(r.t)
	wg.Wait()
	n := 0
	for _, w := range r.workers {
		if w.inflight != nil {
			n++
		}
	}
	return n
}

// drive sends w's requests one after the other until the kill. A request
// without an answer after the kill stays in w.inflight: a maybe write. Any
// other failure fails the test.
func (r *crashRun) drive(d *daemonProc, w *crashWorker, killed *atomic.Bool) {
	for !killed.Load() {
		o := w.next()
		var hdr http.Header
		if o.bearer != "" {
			hdr = http.Header{"Authorization": {"Bearer " + o.bearer}}
		}
		w.inflight = o
		res, err := d.do(o.method, o.path, hdr, o.body)
		if err != nil {
			if !killed.Load() {
				r.t.Errorf("worker %d: %s before the kill: %v", w.n, o, err)
			}
			return
		}
		w.inflight = nil
		if res.status != o.want {
			r.t.Errorf("worker %d: %s: status %d, want %d: %s", w.n, o, res.status, o.want, res.body)
			return
		}
		if err := w.apply(o, res); err != nil {
			r.t.Errorf("worker %d: %s: %v", w.n, o, err)
			return
		}
	}
}

// checkRecoveryLog asserts that d, started over the state of the killed
// daemon, said once that it removed the stale socket and once that the
// store had not been closed cleanly, naming the killed daemon's pid.
func checkRecoveryLog(t *testing.T, d, killed *daemonProc) {
	t.Helper()
	d.waitLog(t, "start-up", "coffer is serving")
	log := d.stderr.String()
	if n := len(logLines(log, "removed stale socket file", "path="+killed.socket)); n != 1 {
		t.Errorf("restart after kill -9: %d lines saying the stale socket %s was removed, want 1\n%s", n, killed.socket, logTail(log, 20))
	}
	pid := fmt.Sprintf("previous_pid=%d", killed.cmd.Process.Pid)
	if n := len(logLines(log, "not closed cleanly", pid)); n != 1 {
		t.Errorf("restart after kill -9: %d lines saying the store was not closed cleanly with %s, want 1\n%s", n, pid, logTail(log, 20))
	}
}
