package daemon

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

// Status is the daemon's health and size.
type Status struct {
	Version   string
	StartedAt time.Time
	Uptime    time.Duration
	Dev       bool
	HSM       HSMStatus
	Store     StoreStatus
	Counts    Counts // zero for callers who may not see them
}

// HSMStatus says which module, token and keys are in use and whether the
// token answers.
type HSMStatus struct {
	Module     string
	TokenLabel string
	KeyLabels  []string
	Healthy    bool
	Error      string
	// Token is what the token says about itself (manufacturer, model,
	// serial): for system admins only, nil for everyone else.
	Token *hsm.TokenInfo
	// Schemes are the key schemes chosen for the token, with reasons.
	Schemes hsm.Schemes
}

// StoreStatus says whether the store answers and takes writes
// (storehealth.go).
type StoreStatus struct {
	Healthy bool
	Error   string
	// State is "ok", "full" (its filesystem is short of room), "failed"
	// (a write failed) or "lost"; Since is when it stopped being ok.
	State string
	Since time.Time
	// FreeBytes is the room on the store's filesystem at the last check;
	// ReserveBytes what the store keeps free there (below it, state
	// changes are refused).
	FreeBytes, ReserveBytes int64
}

// Counts are the numbers of records by kind.
type Counts struct {
	Projects    int
	Secrets     int
	Users       int
	Credentials int
}

// statusProbeEvery bounds how often Status really probes the HSM and
// counts records; callers in between share the last probe. Counting is a
// key-only scan of the tables, which must not run on every request.
const statusProbeEvery = 2 * time.Second

// probe is the cached result of the last health probe and count.
type probe struct {
	// refresh is held by the one caller probing. The others take the
	// last result meanwhile rather than queue behind it: a count scans
	// every record's key, which takes longer the larger the store and the
	// more tables a write burst has left for compaction (right after
	// one, status calls waiting on each other's recounts served a
	// quarter of their settled rate).
	refresh sync.Mutex
	dirty   atomic.Bool // a write changed the counts since the last probe
	// checking is when the HSM check under way began (Unix ns; 0: none).
	// A check that has not answered within probeHung is reported as a
	// failure to the callers taking the last result: an HSM call that
	// hangs must not leave the health endpoint saying healthy.
	checking atomic.Int64

	mu sync.Mutex // guards what follows
	probeResult
}

// probeResult is what a probe found.
type probeResult struct {
	at     time.Time // of the last HSM probe; zero: never probed
	hsm    HSMStatus
	store  StoreStatus
	counts Counts
}

// probeHung is how long an HSM check may go unanswered before the
// callers that do not wait for it report the HSM as failing (a variable
// for tests).
var probeHung = 5 * time.Second

// probed returns the last probe's result, probing first when it is due:
// the HSM and the store every statusProbeEvery, the counts also after a
// write changed them (withCounts). One caller probes at a time; a caller
// that finds a probe under way takes the result before it (unless there
// is none yet), with the HSM failing if its check has hung for
// probeHung. So a caller sees counts that include its own acknowledged
// write unless another caller's probe was under way when it asked: then
// the next status shows it.
func (s *Service) probed(ctx context.Context, withCounts bool) probeResult {
	p := &s.probe
	due := func() (hsm, counts bool) {
		p.mu.Lock()
		defer p.mu.Unlock()
		hsm = p.at.IsZero() || time.Since(p.at) >= statusProbeEvery
		return hsm, withCounts && p.dirty.Load()
	}
	snapshot := func() probeResult {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.probeResult
	}
	hsm, counts := due()
	if !hsm && !counts {
		return snapshot()
	}
	p.mu.Lock()
	never := p.at.IsZero()
	p.mu.Unlock()
	if never {
		p.refresh.Lock()
	} else if !p.refresh.TryLock() {
		r := snapshot()
		if since := p.checking.Load(); since != 0 && time.Since(time.Unix(0, since)) >= probeHung {
			r.hsm.Healthy = false
			r.hsm.Error = fmt.Sprintf("the HSM has not answered a check for %s", time.Since(time.Unix(0, since)).Round(time.Second))
		}
		return r
	}
	defer p.refresh.Unlock()
	if hsm, counts = due(); hsm {
		s.runProbe(ctx)
	} else if counts {
		s.recount(ctx)
	}
	return snapshot()
}

// Status reports version, uptime, HSM and store health, and counts. It
// probes the HSM and the store for real (at most every statusProbeEvery);
// failures are reported, not returned.
func (s *Service) Status(ctx context.Context, g Grant) (Status, error) {
	if err := g.require(ActReadStatus); err != nil {
		return Status{}, err
	}
	pr := s.probed(ctx, true)
	st := Status{
		Version:   s.cfg.Version,
		StartedAt: s.started.UTC(),
		Uptime:    time.Since(s.started),
		Dev:       s.cfg.Dev,
		HSM:       pr.hsm,
		Store:     pr.store,
		Counts:    pr.counts,
	}
	st.Store = storeStatus(st.Store, s.storeHealth())
	if !g.seesCounts {
		// How many projects, users and credentials there are is the
		// host's business, not a tenant's: system admins and metrics
		// readers only.
		st.Counts = Counts{}
	}
	if !g.admin {
		// Causes (paths, PKCS#11 detail) are for admins and the log.
		if st.HSM.Error != "" {
			st.HSM.Error = "unavailable"
		}
		if st.Store.Error != "" {
			st.Store.Error = "unavailable"
		}
		st.HSM.Token = nil
	}
	return st, nil
}

// recountHook, when set (tests), runs at the start of every recount.
var recountHook func()

// runProbe probes the HSM and recounts; the caller holds s.probe.refresh.
func (s *Service) runProbe(ctx context.Context) {
	info := s.keys.Info()
	hsm := HSMStatus{Module: info.Module, TokenLabel: info.TokenLabel, KeyLabels: info.KeyLabels, Healthy: true,
		Token: &info.Token, Schemes: info.Schemes}
	p := &s.probe
	p.checking.Store(time.Now().UnixNano())
	err := s.keys.Check(ctx)
	p.checking.Store(0)
	if err != nil {
		hsm.Healthy, hsm.Error = false, err.Error()
	}
	// The HSM's answer first: the callers taking the last result see it
	// during the recount.
	p.mu.Lock()
	p.hsm = hsm
	p.mu.Unlock()
	s.recount(ctx)
	p.mu.Lock()
	p.at = time.Now()
	p.mu.Unlock()
}

// recount refreshes the counts and store health; the caller holds
// s.probe.refresh.
func (s *Service) recount(ctx context.Context) {
	p := &s.probe
	p.dirty.Store(false) // before counting: a write from now on counts again
	if recountHook != nil {
		recountHook()
	}
	store := StoreStatus{Healthy: true}
	var counts Counts
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		if counts.Projects, err = tx.Count(tableProjects, kv.Query{}); err != nil {
			return err
		}
		if counts.Secrets, err = tx.Count(tableSecrets, kv.Query{}); err != nil {
			return err
		}
		if counts.Users, err = tx.Count(tableUsers, kv.Query{}); err != nil {
			return err
		}
		counts.Credentials, err = tx.Count(tableCredentials, kv.Query{})
		return err
	})
	if err == nil {
		err = s.store.Check(ctx)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		store.Healthy, store.Error = false, err.Error()
		// A failed count keeps the counts it had.
		p.dirty.Store(true)
	} else {
		p.counts = counts
	}
	p.store = store
}

// DegradedError is a failed health check that the daemon is already
// repairing by itself (the HSM reconnect loop): a restart would not help,
// so the systemd watchdog keeps being pinged while STATUS= says why.
type DegradedError struct{ Err error }

func (e *DegradedError) Error() string { return e.Err.Error() }
func (e *DegradedError) Unwrap() error { return e.Err }

// Degraded marks the error for the watchdog (systemd.RunWatchdog).
func (e *DegradedError) Degraded() bool { return true }

// Healthy probes the HSM and the store for the systemd watchdog: nil when
// both answer. A lost HSM token is a *DegradedError: hsm reconnects with
// backoff on its own; so is a store refusing writes (full, or its writes
// failed), which recovers by itself while it serves reads. A check that
// hangs never returns, and the watchdog then restarts the daemon.
func (s *Service) Healthy(ctx context.Context) error {
	if err := s.keys.Check(ctx); err != nil {
		err = fmt.Errorf("HSM: %w", err)
		if ctx.Err() == nil && errors.Is(err, hsm.ErrUnavailable) {
			return &DegradedError{Err: err}
		}
		return err
	}
	if err := s.store.Check(ctx); err != nil {
		return fmt.Errorf("store: %w", err)
	}
	return storeHealthy(s.storeHealth())
}

// TokenLabel names the HSM token in use.
func (s *Service) TokenLabel() string { return s.keys.Info().TokenLabel }

// Health parts, as HealthReport.Failed names them.
const (
	PartHSM   = "hsm"
	PartStore = "store"
	PartAudit = "audit"
)

// HealthReport says whether the HSM, the store and the audit log answer;
// Failed names the parts that do not (no cause, no count: anyone may ask).
type HealthReport struct {
	Failed []string
}

// OK reports whether every part answers.
func (h HealthReport) OK() bool { return len(h.Failed) == 0 }

// Health reports which parts answer, from the status probe (at most one
// real HSM and store probe every statusProbeEvery, however many ask) and
// the store's and audit log's live state.
func (s *Service) Health(ctx context.Context, g Grant) (HealthReport, error) {
	if err := g.require(ActReadHealth); err != nil {
		return HealthReport{}, err
	}
	pr := s.probed(ctx, false)
	hsmOK, store := pr.hsm.Healthy, storeStatus(pr.store, s.storeHealth())
	var h HealthReport
	if !hsmOK {
		h.Failed = append(h.Failed, PartHSM)
	}
	if !store.Healthy {
		h.Failed = append(h.Failed, PartStore)
	}
	if s.audit.failing.Load() {
		h.Failed = append(h.Failed, PartAudit)
	}
	return h, nil
}
