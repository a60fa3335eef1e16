package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"strconv"
	"sync"
	"time"
)

// AuthLimit limits failed authentications per caller, so that tokens
// cannot be guessed online: each caller (the connection's uid, vsock CID
// or VM, whatever token it presents) has a bucket of Burst attempts that
// fails empty and refills by one every Refill. Successes cost nothing. An
// empty bucket refuses the next attempt with 429 rate_limited before any
// token is looked up.
//
// System admins (uid 0, the admin group) are not limited: they can issue
// themselves any credential, so a guess gains them nothing, and the many
// services that run as root must not lock each other out with one stale
// token.
//
// kube-apiserver (the Kubernetes webhook channel) is never refused, but its
// failures are counted and audited like anyone's (see limitRefuses).
type AuthLimit struct {
	// Burst is how many failures in a row a caller may have; 0 means
	// DefaultAuthFailBurst, negative turns the limit off.
	Burst int
	// Refill is how often one failure is forgiven; 0 means
	// DefaultAuthFailRefill.
	Refill time.Duration
}

const (
	DefaultAuthFailBurst  = 10
	DefaultAuthFailRefill = time.Second

	// maxLimitKeys bounds the memory of one limiter: callers (or OAuth2
	// clients) with failures not yet forgiven.
	maxLimitKeys = 4096
	// clientLimitFactor sizes the per-client_id bucket of the OAuth2 grant:
	// this many times the burst and the refill rate of a caller's, so that
	// one caller (itself limited) cannot lock a client out, while many
	// callers guessing the same client's secret together are still
	// stopped.
	clientLimitFactor = 5
)

// limiter is a set of token buckets by key, charged only by failures.
type limiter struct {
	mu      sync.Mutex
	now     func() time.Time
	burst   float64
	refill  time.Duration // one failure forgiven per refill
	max     int
	buckets map[string]*bucket
}

// bucket is one key's remaining attempts at a time. Tokens may go below
// zero: failures that were admitted together (concurrent requests) all
// count, and all must be waited off.
type bucket struct {
	tokens float64
	at     time.Time
}

func newLimiter(burst int, refill time.Duration, max int, now func() time.Time) *limiter {
	return &limiter{now: now, burst: float64(burst), refill: refill, max: max, buckets: map[string]*bucket{}}
}

// level returns b's tokens at now.
func (l *limiter) level(b *bucket, now time.Time) float64 {
	if d := now.Sub(b.at); d > 0 {
		return min(l.burst, b.tokens+float64(d)/float64(l.refill))
	}
	return b.tokens
}

// wait returns how long key must wait before its next attempt; 0: it may
// try now.
func (l *limiter) wait(key string) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		return 0
	}
	t := l.level(b, l.now())
	if t >= 1 {
		return 0
	}
	return time.Duration(math.Ceil((1 - t) * float64(l.refill)))
}

// fail charges key with one failed attempt. It reports whether that
// emptied the bucket (the moment worth a log line).
func (l *limiter) fail(key string) (emptied bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := l.now()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= l.max {
			l.evict(now)
		}
		b = &bucket{tokens: l.burst, at: now}
		l.buckets[key] = b
	}
	t := l.level(b, now)
	b.tokens, b.at = t-1, now
	return t >= 1 && b.tokens < 1
}

// evict makes room for a new key: it drops every bucket that has refilled
// (it is the same as no bucket), and when none has, the fullest one, which
// has the least failure left to remember.
func (l *limiter) evict(now time.Time) {
	var fullest string
	most := math.Inf(-1)
	for k, b := range l.buckets {
		t := l.level(b, now)
		if t >= l.burst {
			delete(l.buckets, k)
			continue
		}
		if t > most {
			fullest, most = k, t
		}
	}
	if len(l.buckets) >= l.max {
		delete(l.buckets, fullest)
	}
}

// len returns the number of keys remembered.
func (l *limiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// authGate applies the AuthLimit: one limiter by caller, one by OAuth2
// client_id.
type authGate struct {
	callers *limiter
	clients *limiter
	log     *slog.Logger
}

// newAuthGate returns the gate for cfg, or nil when the limit is off.
func newAuthGate(cfg AuthLimit, now func() time.Time, log *slog.Logger) *authGate {
	if cfg.Burst < 0 {
		return nil
	}
	if cfg.Burst == 0 {
		cfg.Burst = DefaultAuthFailBurst
	}
	if cfg.Refill <= 0 {
		cfg.Refill = DefaultAuthFailRefill
	}
	return &authGate{
		callers: newLimiter(cfg.Burst, cfg.Refill, maxLimitKeys, now),
		clients: newLimiter(clientLimitFactor*cfg.Burst, max(cfg.Refill/clientLimitFactor, 1), maxLimitKeys, now),
		log:     log,
	}
}

// callerKey names the caller a failure is charged to: who the transport
// says is connected, never what the request claims. Every process of one
// uid is the same caller (they can act for each other anyway).
func callerKey(p Principal) string {
	switch {
	case p.Channel == ChannelUnix && p.HasCred:
		return "unix uid=" + strconv.FormatUint(uint64(p.UID), 10)
	case p.Channel == ChannelVsock:
		return "vsock cid=" + strconv.FormatUint(uint64(p.CID), 10)
	case p.Channel == ChannelHybridVsock && p.VM != "":
		return "hybrid-vsock vm=" + p.VM
	default:
		return "anonymous (" + string(p.Channel) + ")"
	}
}

// limitRefuses reports whether the limiter may refuse p's attempts; when
// not, p's failures are still charged (and warned of) and audited, only
// the refusal is waived. The one such caller is kube-apiserver
// (ChannelKubernetes): it forwards in TokenReviews the bearers of all its
// own clients, so every review comes from this one caller, and refusing
// it would let anyone who can reach the apiserver lock every coffer token
// out of the cluster with a dozen garbage bearers. Guessing through it
// gains nothing: coffer tokens hold at least 128 random bits. (System
// admins are exempt differently: their failures are not charged at all,
// see authFailed.)
func limitRefuses(p Principal) bool {
	return p.Channel != ChannelKubernetes
}

// admit refuses an authentication attempt by p (for an OAuth2 client when
// clientID is not empty) whose failures used up its attempts, unless the
// limiter never refuses p (limitRefuses). It is called before the token
// is looked at.
func (g *authGate) admit(p Principal, clientID string) error {
	if g == nil || !limitRefuses(p) {
		return nil
	}
	wait := g.callers.wait(callerKey(p))
	if clientID != "" {
		wait = max(wait, g.clients.wait(clientID))
	}
	if wait > 0 {
		return rateLimited(wait)
	}
	return nil
}

// failed charges a failed authentication to p (and to the OAuth2 client).
// A client_id that cannot exist is not charged: no guess under it can
// succeed, and it must not fill the table.
func (g *authGate) failed(p Principal, clientID string) {
	if g == nil {
		return
	}
	key := callerKey(p)
	if g.callers.fail(key) {
		g.log.Warn("too many failed authentications: refusing further attempts for a while", "caller", key)
	}
	if clientID != "" && validTokenID(clientID) && g.clients.fail(clientID) {
		g.log.Warn("too many failed authentications of an oauth2 client: refusing further attempts for a while", "client_id", clientID)
	}
}

// authFailed charges a failed authentication to p (and to the OAuth2
// client), unless p is a system admin.
func (s *Service) authFailed(p Principal, clientID string) {
	s.counters.authFailures.Add(1)
	if s.authGate != nil && !s.isSystemAdmin(p) {
		s.authGate.failed(p, clientID)
	}
}

// RetryAfterError carries how long a rate-limited caller should wait; it
// is the cause of a CodeRateLimited error.
type RetryAfterError struct{ After time.Duration }

func (e *RetryAfterError) Error() string { return "retry after " + e.After.String() }

// RetrySeconds is After in whole seconds, rounded up, at least 1: the
// value of a Retry-After header.
func (e *RetryAfterError) RetrySeconds() int64 {
	return max(1, int64(math.Ceil(e.After.Seconds())))
}

// RetryAfterOf returns the wait a rate-limited error asks for.
func RetryAfterOf(err error) (*RetryAfterError, bool) {
	var r *RetryAfterError
	ok := errors.As(err, &r)
	return r, ok
}

func rateLimited(wait time.Duration) error {
	r := &RetryAfterError{After: wait}
	return &Error{
		Class:   ErrRateLimited,
		Code:    CodeRateLimited,
		Message: fmt.Sprintf("too many failed authentications; retry in %d seconds", r.RetrySeconds()),
		Err:     r,
	}
}
