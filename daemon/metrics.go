package daemon

import (
	"context"
	"crypto/rsa"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/metrics"
)

// Observer is told of each HSM operation and store write transaction
// (*metrics.Metrics is one). It must be cheap and safe for concurrent use.
type Observer interface {
	ObserveHSM(op string, d time.Duration, err error)
	ObserveCommit(d time.Duration, err error)
}

// counters are the domain's event counters for metrics: atomic adds, no
// lock, on the bearer-token path too.
type counters struct {
	bearerHits   atomic.Uint64
	bearerMisses atomic.Uint64
	authFailures atomic.Uint64
	rateLimited  atomic.Uint64
}

// observedKeys times the HSM operations of Keys for an Observer.
type observedKeys struct {
	Keys
	obs Observer
}

func observeKeys(k Keys, obs Observer) Keys {
	if obs == nil {
		return k
	}
	return observedKeys{Keys: k, obs: obs}
}

func (k observedKeys) done(op string, start time.Time, err error) {
	k.obs.ObserveHSM(op, time.Since(start), err)
}

func (k observedKeys) Seal(ctx context.Context, plaintext, aad []byte) (*hsm.Sealed, error) {
	start := time.Now()
	s, err := k.Keys.Seal(ctx, plaintext, aad)
	k.done(metrics.OpSeal, start, err)
	return s, err
}

func (k observedKeys) Unseal(ctx context.Context, s *hsm.Sealed, aad []byte) ([]byte, error) {
	start := time.Now()
	b, err := k.Keys.Unseal(ctx, s, aad)
	k.done(metrics.OpUnseal, start, err)
	return b, err
}

func (k observedKeys) Sign(ctx context.Context, digest []byte) ([]byte, error) {
	start := time.Now()
	b, err := k.Keys.Sign(ctx, digest)
	k.done(metrics.OpSign, start, err)
	return b, err
}

func (k observedKeys) UnwrapImport(ctx context.Context, wrapped []byte) ([]byte, error) {
	start := time.Now()
	b, err := k.Keys.UnwrapImport(ctx, wrapped)
	k.done(metrics.OpUnwrap, start, err)
	return b, err
}

func (k observedKeys) Rewrap(ctx context.Context, s *hsm.Sealed, aad []byte) (*hsm.Sealed, error) {
	start := time.Now()
	n, err := k.Keys.Rewrap(ctx, s, aad)
	k.done(metrics.OpRewrap, start, err)
	return n, err
}

func (k observedKeys) Check(ctx context.Context) error {
	start := time.Now()
	err := k.Keys.Check(ctx)
	k.done(metrics.OpCheck, start, err)
	return err
}

func (k observedKeys) RotateKEK(ctx context.Context) (string, error) {
	start := time.Now()
	l, err := k.Keys.RotateKEK(ctx)
	k.done(metrics.OpRotate, start, err)
	return l, err
}

func (k observedKeys) RotateSigningKey(ctx context.Context) (hsm.KeyVersion, error) {
	start := time.Now()
	v, err := k.Keys.RotateSigningKey(ctx)
	k.done(metrics.OpRotate, start, err)
	return v, err
}

func (k observedKeys) KEKs(ctx context.Context) ([]hsm.KeyVersion, error) {
	start := time.Now()
	v, err := k.Keys.KEKs(ctx)
	k.done(metrics.OpKeyAdmin, start, err)
	return v, err
}

// ImportPublicKey is passed through (no HSM call).
func (k observedKeys) ImportPublicKey() *rsa.PublicKey { return k.Keys.ImportPublicKey() }

// reconnectCounter is an HSM that counts its reconnects (*hsm.HSM does).
type reconnectCounter interface{ Reconnects() uint64 }

// storeSizer is a store that reports its size (kv.Store does).
type storeSizer interface{ Size() kv.Size }

// auditStatser is an audit log that reports its queue (audit.Log does).
type auditStatser interface{ Stats() audit.Stats }

// expiringCache holds the last count of what expires within the warning
// window: counting scans the credentials and secrets, which a scrape every
// few seconds must not do each time.
type expiringCache struct {
	mu                   sync.Mutex
	at                   time.Time
	credentials, secrets int

	kekAt        time.Time // the KEK re-wrap count, which lists the HSM's KEKs
	kekRemaining int
}

// expiringEvery bounds how often the expiring counts are recounted;
// rewrapEvery how often the records still under an old KEK are.
const (
	expiringEvery = time.Minute
	rewrapEvery   = 10 * time.Second
)

// MetricsState reports the daemon's state for a metrics scrape: health
// (from the status probe, at most every statusProbeEvery), sizes, queues
// and counters. Counts only, never a name. It is for the metrics
// registry, not for a caller: ReadMetrics decides who may see it.
func (s *Service) MetricsState(ctx context.Context) metrics.State {
	st := metrics.State{StoreCompactionDebt: -1, KEKRemaining: -1}
	pr := s.probed(ctx, true)
	st.HSMUp = pr.hsm.Healthy
	store := storeStatus(pr.store, s.storeHealth())
	counts := pr.counts
	st.StoreUp, st.StoreState = store.Healthy, store.State
	st.Records = map[string]int{"project": counts.Projects, "secret": counts.Secrets,
		"user": counts.Users, "credential": counts.Credentials}
	if rc, ok := s.rawKeys.(reconnectCounter); ok {
		st.HSMReconnects = rc.Reconnects()
	}
	if sz, ok := s.store.(storeSizer); ok {
		size := sz.Size()
		st.StoreLSMBytes, st.StoreVlogBytes, st.StoreCompactionDebt = size.LSM, size.Vlog, size.CompactionDebt
	}
	st.AuditUp = !s.audit.failing.Load()
	st.AuditOutbox = s.audit.pending.Load()
	if l, ok := s.auditLog().(auditStatser); ok {
		as := l.Stats()
		st.AuditQueue, st.AuditLost, st.AuditCoalesced, st.AuditLastCheckpoint = as.Queued, as.Lost, as.Coalesced, as.LastCheckpoint
	}
	if rot, ok, err := s.loadKEKRotation(ctx); err == nil && ok {
		s.kek.mu.Lock()
		st.KEKRotationRunning = s.kek.running
		s.kek.mu.Unlock()
		st.KEKRewrapped, st.KEKRewrapFailed = rot.Rewrapped, rot.Failed
	}
	st.KEKRemaining = s.cachedRewrapRemaining(ctx)
	st.ExpiringCredentials, st.ExpiringSecrets = s.expiringCounts(ctx)
	st.BearerCacheHits = s.counters.bearerHits.Load()
	st.BearerCacheMisses = s.counters.bearerMisses.Load()
	st.AuthFailures = s.counters.authFailures.Load()
	st.RateLimited = s.counters.rateLimited.Load()
	return st
}

// cachedRewrapRemaining is rewrapRemaining at most every rewrapEvery
// (however often, and whoever, scrapes); -1 until it could be counted.
func (s *Service) cachedRewrapRemaining(ctx context.Context) int {
	c := &s.expiring
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.kekAt.IsZero() || time.Since(c.kekAt) >= rewrapEvery {
		n, err := s.rewrapRemaining(ctx)
		switch {
		case err == nil:
			c.kekRemaining = n
		case c.kekAt.IsZero():
			c.kekRemaining = -1 // unknown (the HSM does not answer): left out
		} // else the last count stands until the next try
		c.kekAt = time.Now()
	}
	return c.kekRemaining
}

// rewrapRemaining counts the sealed records wrapped by a KEK other than
// the current one (an index count per KEK, no HSM call beyond listing).
func (s *Service) rewrapRemaining(ctx context.Context) (int, error) {
	keks, err := s.rawKeys.KEKs(ctx) // not an operation to count
	if err != nil {
		return 0, err
	}
	n := 0
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		n = 0
		for _, k := range keks {
			if k.Current {
				continue
			}
			c, err := kekRefs(tx, k.Label)
			if err != nil {
				return err
			}
			n += c
		}
		return nil
	})
	return n, err
}

// expiringCounts counts the active credentials and secrets that expire
// within the warning window, at most every expiringEvery.
func (s *Service) expiringCounts(ctx context.Context) (credentials, secrets int) {
	c := &s.expiring
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.at.IsZero() && time.Since(c.at) < expiringEvery {
		return c.credentials, c.secrets
	}
	var nc, ns int
	err := s.eachExpiring(ctx, s.now(), func(table, _, _ string, _ time.Time) {
		if table == tableSecrets {
			ns++
		} else {
			nc++
		}
	})
	if err != nil {
		s.log.Debug("counting what expires failed", "err", err)
		return c.credentials, c.secrets // the last count, retried at the next scrape
	}
	c.at, c.credentials, c.secrets = time.Now(), nc, ns
	return nc, ns
}

// ReadMetrics checks that g may read the metrics (ActReadMetrics); the
// transport then serves the registry.
func (s *Service) ReadMetrics(ctx context.Context, g Grant) error {
	return g.require(ActReadMetrics)
}

// isMetricsReader reports whether p may read metrics and counts: a system
// admin, or a Unix-socket caller (no bearer token) in the metrics group.
func (s *Service) isMetricsReader(p Principal) bool {
	if s.isSystemAdmin(p) {
		return true
	}
	if p.Token != nil || p.Channel != ChannelUnix || !p.HasCred || s.metricsGID == nil {
		return false
	}
	return p.GID == *s.metricsGID || s.groups.contains(p.UID, *s.metricsGID)
}
