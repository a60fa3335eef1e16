package daemon

// The Kubernetes external service-account token signer (KEP-740): kube-
// apiserver hands coffer the claims of each ServiceAccount token and gets
// back the JWT header and signature, made by a key in the HSM that never
// leaves it. The key is a family of its own (hsm.K8sKeyBase), never one of
// coffer's token signing keys: a coffer JWT verifier must never accept a
// cluster token, nor the cluster a coffer token.
//
// Rotation makes a new version current; the previous one stays published
// (FetchKeys) until every token it signed has expired: it was retired at
// retired_at, and no token it signed lives longer than the maximum token
// expiration (Sign refuses longer ones), so its retire_after is
// retired_at + max + a grace. The retirement is kept in the store; the
// maintenance sweep destroys the key on the token after that.
//
// Signing is hot (every pod's projected token is refreshed well before
// it expires): a Sign writes nothing to the store and nothing to the audit
// log. kube-apiserver audits the TokenRequest that asked for the token;
// coffer counts signatures and refusals per key in memory (K8sSAKeys, the
// signer's periodic summary line) and logs refusals, at most one line a
// minute. Key creation, rotation and destruction are audited changes.

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableK8sKeys = "k8s_sa_keys"

	// DefaultK8sMaxTokenExpiration is the longest ServiceAccount token
	// coffer signs unless configured otherwise. kube-apiserver defaults
	// --service-account-max-token-expiration to it and, with
	// --service-account-extend-token-expiration (its default), gives pod
	// tokens min(1 year, it).
	DefaultK8sMaxTokenExpiration = 24 * time.Hour
	// MinK8sMaxTokenExpiration is the API's floor (600 s).
	MinK8sMaxTokenExpiration = 10 * time.Minute
	// MaxK8sMaxTokenExpiration caps the setting: a retired key stays
	// published this long.
	MaxK8sMaxTokenExpiration = 365 * 24 * time.Hour

	// K8sRefreshHint is how often kube-apiserver is asked to fetch the
	// keys again: a rotation reaches its OIDC discovery document within it.
	K8sRefreshHint = time.Minute

	// k8sLeeway is the clock skew allowed between the claims'
	// iat/exp and the daemon's clock (kube-apiserver calls over a local
	// socket, so the two clocks are usually one).
	k8sLeeway = time.Minute
	// k8sKeyGrace keeps a retired key published beyond the last expiry
	// of the tokens it signed, for verifiers' clock skew and JWKS caches.
	k8sKeyGrace = 5 * time.Minute
	// MaxK8sClaims bounds the base64url claims of one Sign. kube-apiserver
	// sends about 1 KiB; audiences and the node/pod references make it
	// grow a little, never near this.
	MaxK8sClaims = 64 << 10

	// k8sRefusalLogEvery bounds the refusal log lines.
	k8sRefusalLogEvery = time.Minute
)

// K8sKeyStore is what the signer needs of the HSM: *hsm.HSM is one.
type K8sKeyStore interface {
	K8sKeys(ctx context.Context) ([]hsm.K8sKey, error)
	CreateK8sKey(ctx context.Context) (hsm.K8sKey, error)
	K8sSign(ctx context.Context, label string, digest []byte) ([]byte, error)
	DestroyK8sKey(ctx context.Context, label string) error
}

// K8sSignerConfig configures the signer.
type K8sSignerConfig struct {
	// MaxTokenExpiration is the longest token lifetime (exp - iat) Sign
	// accepts and Metadata announces; 0 means
	// DefaultK8sMaxTokenExpiration. Whole seconds, 10m..1y.
	MaxTokenExpiration time.Duration
}

// k8sKeyRecord is the retirement of an old K8s key, by kid.
type k8sKeyRecord struct {
	Label       string     `json:"label"`
	Kid         string     `json:"kid"`
	Alg         string     `json:"alg"`
	Public      []byte     `json:"public"` // PKIX DER
	RetiredAt   time.Time  `json:"retired_at"`
	RetireAfter time.Time  `json:"retire_after"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// k8sRingKey is one K8s key on the token.
type k8sRingKey struct {
	label       string
	version     int
	kid         string
	alg         string
	pkix        []byte
	header      string // base64url JWT header: {"alg","kid","typ":"JWT"}
	current     bool
	retiredAt   time.Time // zero for the current key
	retireAfter time.Time
	signed      *atomic.Uint64 // since the daemon started
}

func (k k8sRingKey) published(now time.Time) bool { return k.current || now.Before(k.retireAfter) }

type k8sRing struct {
	keys     []k8sRingKey // current first, then newest first
	loadedAt time.Time
}

// k8sSigner is the signer's state in the Service.
type k8sSigner struct {
	// mu serialises key changes (start, rotation, sweep); Sign only
	// loads ring.
	mu      sync.Mutex
	enabled atomic.Bool
	maxExp  atomic.Int64 // seconds; 0 until Start
	ring    atomic.Pointer[k8sRing]

	countersMu sync.Mutex
	counters   map[string]*atomic.Uint64 // signatures by kid

	refused     atomic.Uint64
	refusedLog  atomic.Uint64 // refusals already counted in a log line
	lastRefusal atomic.Int64  // unix nanos of the last refusal line
}

func (k *k8sSigner) counter(kid string) *atomic.Uint64 {
	k.countersMu.Lock()
	defer k.countersMu.Unlock()
	if k.counters == nil {
		k.counters = map[string]*atomic.Uint64{}
	}
	c := k.counters[kid]
	if c == nil {
		c = new(atomic.Uint64)
		k.counters[kid] = c
	}
	return c
}

func (k *k8sSigner) maxExpiration() time.Duration {
	if s := k.maxExp.Load(); s > 0 {
		return time.Duration(s) * time.Second
	}
	return DefaultK8sMaxTokenExpiration
}

// K8sSAKey is one Kubernetes service-account signing key.
type K8sSAKey struct {
	Label       string
	Version     int
	Kid         string
	Alg         string // ES256 or RS256
	Current     bool
	Published   bool   // returned by FetchKeys
	Signed      uint64 // tokens signed since the daemon started
	RetiredAt   *time.Time
	RetireAfter *time.Time
}

// K8sSAKeyRotation is the outcome of RotateK8sSAKey.
type K8sSAKeyRotation struct {
	Current  K8sSAKey
	Previous *K8sSAKey // nil when there was no key before
}

// K8sPublicKey is a key FetchKeys returns.
type K8sPublicKey struct {
	KeyID                    string
	PKIX                     []byte
	ExcludeFromOIDCDiscovery bool
}

// K8sKeySet is FetchKeys' answer.
type K8sKeySet struct {
	Keys []K8sPublicKey
	// DataTimestamp changes when the set does: the last key change, or
	// the last retirement that took a key out of it.
	DataTimestamp time.Time
	RefreshHint   time.Duration
}

// K8sSignerStats are the signer's counters since the daemon started.
type K8sSignerStats struct {
	Enabled bool
	Signed  uint64
	Refused uint64
}

func (s *Service) k8sKeyStore() (K8sKeyStore, error) {
	ks, ok := s.rawKeys.(K8sKeyStore)
	if !ok {
		return nil, hsmErr(errors.New("the HSM in use does not hold Kubernetes signing keys"))
	}
	return ks, nil
}

// StartK8sSigner enables the Kubernetes signer: it checks cfg, creates the
// first K8s key when the token has none (an audited change) and loads the
// keys. Sign, FetchKeys and Metadata answer from then on.
func (s *Service) StartK8sSigner(ctx context.Context, cfg K8sSignerConfig) error {
	maxExp := cfg.MaxTokenExpiration
	if maxExp == 0 {
		maxExp = DefaultK8sMaxTokenExpiration
	}
	if maxExp < MinK8sMaxTokenExpiration || maxExp > MaxK8sMaxTokenExpiration || maxExp%time.Second != 0 {
		return Invalid(CodeInvalidArgument, "the Kubernetes signer's maximum token expiration must be whole seconds from %s to %s, not %s",
			MinK8sMaxTokenExpiration, MaxK8sMaxTokenExpiration, maxExp)
	}
	ks, err := s.k8sKeyStore()
	if err != nil {
		return err
	}
	s.k8s.mu.Lock()
	defer s.k8s.mu.Unlock()
	s.k8s.maxExp.Store(int64(maxExp / time.Second))
	keys, err := ks.K8sKeys(ctx)
	if err != nil {
		return hsmErr(fmt.Errorf("list Kubernetes signing keys: %w", err))
	}
	if len(keys) == 0 {
		if err := s.auditAdmits(); err != nil {
			return err
		}
		k, err := ks.CreateK8sKey(ctx)
		if err != nil {
			return hsmErr(fmt.Errorf("create Kubernetes signing key: %w", err))
		}
		kid, _ := k8sKeyID(k.Public)
		if err := s.update(ctx, systemPrincipal, "k8s.sa_key_create", func(_ *kv.Txn, c *change) error {
			c.set("key", k.Label, "kid", kid, "alg", k.Alg)
			return nil
		}); err != nil {
			return storeErr(err)
		}
	}
	if err := s.reloadK8sKeysLocked(ctx); err != nil {
		return err
	}
	s.k8s.enabled.Store(true)
	cur := s.k8s.ring.Load().keys[0]
	s.log.Info("Kubernetes service-account signer enabled", "key", cur.label, "kid", cur.kid, "alg", cur.alg,
		"max_token_expiration", maxExp.String())
	return nil
}

// k8sKeyID is the RFC 7638 thumbprint (SHA-256, base64url) of pub.
func k8sKeyID(pub crypto.PublicKey) (string, error) {
	tp, err := (&jose.JSONWebKey{Key: pub}).Thumbprint(crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("key id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(tp), nil
}

// k8sHeader is the JWT header a key signs under: only alg, kid and typ,
// as kube-apiserver requires.
func k8sHeader(alg, kid string) (string, error) {
	b, err := json.Marshal(struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}{alg, kid, "JWT"})
	if err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// reloadK8sKeysLocked rebuilds the ring from the token and the store. An
// old key without a retirement record (the token rotated and the store did
// not record it: a crash in between, or a store restored from an older
// backup) is retired now, with a full maximum token lifetime ahead. The
// caller holds s.k8s.mu.
func (s *Service) reloadK8sKeysLocked(ctx context.Context) error {
	ks, err := s.k8sKeyStore()
	if err != nil {
		return err
	}
	vs, err := ks.K8sKeys(ctx)
	if err != nil {
		return hsmErr(fmt.Errorf("list Kubernetes signing keys: %w", err))
	}
	if len(vs) == 0 {
		return hsmErr(errors.New("the HSM token holds no Kubernetes signing key"))
	}
	recs := map[string]k8sKeyRecord{}
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableK8sKeys, kv.Query{}, func(id string, decode func(any) error) error {
			var r k8sKeyRecord
			if err := decode(&r); err != nil {
				return err
			}
			recs[id] = r
			return nil
		})
	})
	if err != nil {
		return storeErr(err)
	}
	now := s.now()
	var ring []k8sRingKey
	var missing []k8sKeyRecord
	for _, v := range vs {
		kid, err := k8sKeyID(v.Public)
		if err != nil {
			return fmt.Errorf("the Kubernetes signing key %s: %w", v.Label, err)
		}
		der, err := x509.MarshalPKIXPublicKey(v.Public)
		if err != nil {
			return fmt.Errorf("the Kubernetes signing key %s: %w", v.Label, err)
		}
		hdr, err := k8sHeader(v.Alg, kid)
		if err != nil {
			return fmt.Errorf("the Kubernetes signing key %s: %w", v.Label, err)
		}
		k := k8sRingKey{label: v.Label, version: v.Version, kid: kid, alg: v.Alg, pkix: der, header: hdr, current: v.Current,
			signed: s.k8s.counter(kid)}
		if !k.current {
			rec, ok := recs[kid]
			if !ok || rec.DestroyedAt != nil {
				rec = k8sKeyRecord{Label: v.Label, Kid: kid, Alg: v.Alg, Public: der, RetiredAt: now,
					RetireAfter: k8sRetireAfter(now, s.k8s.maxExpiration())}
				missing = append(missing, rec)
			}
			k.retiredAt, k.retireAfter = rec.RetiredAt, rec.RetireAfter
		}
		ring = append(ring, k)
	}
	slices.SortFunc(ring, func(a, b k8sRingKey) int {
		switch {
		case a.current:
			return -1
		case b.current:
			return 1
		}
		return b.version - a.version
	})
	s.k8s.ring.Store(&k8sRing{keys: ring, loadedAt: now})
	if len(missing) == 0 {
		return nil
	}
	return storeErr(s.update(ctx, systemPrincipal, "k8s.sa_key_record", func(tx *kv.Txn, c *change) error {
		c.set("keys", strconv.Itoa(len(missing)))
		for _, r := range missing {
			if err := tx.Put(tableK8sKeys, r.Kid, r); err != nil {
				return err
			}
		}
		return nil
	}))
}

// k8sRetireAfter is when a key retired at t leaves FetchKeys: after the
// longest token it may have signed, plus the grace, rounded up to a second.
func k8sRetireAfter(t time.Time, maxExp time.Duration) time.Time {
	u := t.Add(maxExp + k8sKeyGrace).UTC()
	if r := u.Truncate(time.Second); r.Before(u) {
		return r.Add(time.Second)
	}
	return u
}

func (s *Service) k8sRing() (*k8sRing, error) {
	r := s.k8s.ring.Load()
	if !s.k8s.enabled.Load() || r == nil || len(r.keys) == 0 {
		return nil, unavailable(CodeUnavailable, "the Kubernetes service-account signer is not enabled", nil)
	}
	return r, nil
}

// K8sSign signs the claims of a ServiceAccount token. claims is the JWT's
// payload segment exactly as kube-apiserver sends it (base64url, no
// padding); the answer is the header and signature segments (base64url),
// so that header.claims.signature is the token. The claims must be a JSON
// object with iss and sub (strings), iat and exp (integers), all by those
// exact names (a registered claim name in another case, such as "EXP", is
// refused: verifiers read names exactly and would see no exp), exp after
// iat, exp - iat at most the maximum token expiration and exp no later
// than now plus that (iat and exp within a minute of the clock);
// otherwise the call is refused with invalid_argument and nothing signed.
func (s *Service) K8sSign(ctx context.Context, claims []byte) (header, sig []byte, err error) {
	ring, err := s.k8sRing()
	if err != nil {
		return nil, nil, err
	}
	if err := CheckK8sClaims(claims, s.now(), s.k8s.maxExpiration()); err != nil {
		s.k8sRefusal(ctx, err)
		return nil, nil, err
	}
	ks, err := s.k8sKeyStore()
	if err != nil {
		return nil, nil, err
	}
	cur := ring.keys[0]
	h := sha256.New()
	h.Write([]byte(cur.header))
	h.Write([]byte{'.'})
	h.Write(claims)
	raw, err := ks.K8sSign(ctx, cur.label, h.Sum(nil))
	if err != nil {
		return nil, nil, hsmErr(fmt.Errorf("sign a Kubernetes token with %s: %w", cur.label, err))
	}
	cur.signed.Add(1)
	out := make([]byte, base64.RawURLEncoding.EncodedLen(len(raw)))
	base64.RawURLEncoding.Encode(out, raw)
	return []byte(cur.header), out, nil
}

// k8sRefusal counts a refused Sign and logs it, at most one line a minute
// (with how many were refused since the last line). The reason names the
// claim at fault, never its value.
func (s *Service) k8sRefusal(ctx context.Context, err error) {
	n := s.k8s.refused.Add(1)
	now := time.Now().UnixNano()
	last := s.k8s.lastRefusal.Load()
	if now-last < int64(k8sRefusalLogEvery) || !s.k8s.lastRefusal.CompareAndSwap(last, now) {
		return
	}
	prev := s.k8s.refusedLog.Swap(n)
	s.log.WarnContext(ctx, "Kubernetes token signing refused", "reason", err.Error(), "refused_since_last_line", n-prev)
}

// K8sPublicKeys returns the keys that verify ServiceAccount tokens: the
// current key and retired keys until their retire_after, all in OIDC
// discovery (each signed tokens that are still valid).
func (s *Service) K8sPublicKeys(context.Context) (K8sKeySet, error) {
	ring, err := s.k8sRing()
	if err != nil {
		return K8sKeySet{}, err
	}
	now := s.now()
	set := K8sKeySet{DataTimestamp: ring.loadedAt, RefreshHint: K8sRefreshHint}
	for _, k := range ring.keys {
		if k.published(now) {
			set.Keys = append(set.Keys, K8sPublicKey{KeyID: k.kid, PKIX: slices.Clone(k.pkix)})
		} else if k.retireAfter.After(set.DataTimestamp) {
			set.DataTimestamp = k.retireAfter // the set changed then
		}
	}
	return set, nil
}

// K8sMaxTokenExpiration is what Metadata announces.
func (s *Service) K8sMaxTokenExpiration() (time.Duration, error) {
	if _, err := s.k8sRing(); err != nil {
		return 0, err
	}
	return s.k8s.maxExpiration(), nil
}

// K8sSignerStats returns the signer's counters.
func (s *Service) K8sSignerStats() K8sSignerStats {
	st := K8sSignerStats{Enabled: s.k8s.enabled.Load(), Refused: s.k8s.refused.Load()}
	s.k8s.countersMu.Lock()
	for _, c := range s.k8s.counters {
		st.Signed += c.Load()
	}
	s.k8s.countersMu.Unlock()
	return st
}

func (s *Service) k8sKeyViews() []K8sSAKey {
	ring := s.k8s.ring.Load()
	if ring == nil {
		return []K8sSAKey{}
	}
	now := s.now()
	out := make([]K8sSAKey, 0, len(ring.keys))
	for _, k := range ring.keys {
		v := K8sSAKey{Label: k.label, Version: k.version, Kid: k.kid, Alg: k.alg, Current: k.current,
			Published: k.published(now), Signed: k.signed.Load()}
		if !k.current {
			v.RetiredAt, v.RetireAfter = timePtr(k.retiredAt), timePtr(k.retireAfter)
		}
		out = append(out, v)
	}
	return out
}

// K8sSAKeys lists the Kubernetes signing keys on the token, the current
// one first. A daemon whose signer is not enabled lists them too.
func (s *Service) K8sSAKeys(ctx context.Context, g Grant) ([]K8sSAKey, error) {
	if err := g.require(ActManageKeys); err != nil {
		return nil, err
	}
	s.k8s.mu.Lock()
	defer s.k8s.mu.Unlock()
	if !s.k8s.enabled.Load() {
		ks, err := s.k8sKeyStore()
		if err != nil {
			return nil, err
		}
		if vs, err := ks.K8sKeys(ctx); err != nil {
			return nil, hsmErr(fmt.Errorf("list Kubernetes signing keys: %w", err))
		} else if len(vs) == 0 {
			return []K8sSAKey{}, nil
		}
		if err := s.reloadK8sKeysLocked(ctx); err != nil {
			return nil, err
		}
	}
	return s.k8sKeyViews(), nil
}

// RotateK8sSAKey creates the next Kubernetes signing key and makes it
// current. The previous key stays published until its retire_after: the
// rotation time plus the maximum token expiration (and a grace).
func (s *Service) RotateK8sSAKey(ctx context.Context, g Grant) (K8sSAKeyRotation, error) {
	if err := g.require(ActManageKeys); err != nil {
		return K8sSAKeyRotation{}, err
	}
	ks, err := s.k8sKeyStore()
	if err != nil {
		return K8sSAKeyRotation{}, err
	}
	s.k8s.mu.Lock()
	defer s.k8s.mu.Unlock()
	if err := s.auditAdmits(); err != nil { // before the token changes
		return K8sSAKeyRotation{}, err
	}
	before, err := ks.K8sKeys(ctx)
	if err != nil {
		return K8sSAKeyRotation{}, hsmErr(fmt.Errorf("list Kubernetes signing keys: %w", err))
	}
	v, err := ks.CreateK8sKey(ctx)
	if err != nil {
		return K8sSAKeyRotation{}, hsmErr(fmt.Errorf("rotate Kubernetes signing key: %w", err))
	}
	now := s.now()
	kid, err := k8sKeyID(v.Public)
	if err != nil {
		return K8sSAKeyRotation{}, err
	}
	var prev *hsm.K8sKey
	for i := range before {
		if before[i].Current {
			prev = &before[i]
		}
	}
	err = s.update(ctx, g.principal, "k8s.sa_key_rotate", func(tx *kv.Txn, c *change) error {
		c.set("to", v.Label, "kid", kid, "alg", v.Alg)
		if prev == nil {
			return nil
		}
		pkid, err := k8sKeyID(prev.Public)
		if err != nil {
			return err
		}
		der, err := x509.MarshalPKIXPublicKey(prev.Public)
		if err != nil {
			return err
		}
		c.set("from", prev.Label, "retired_kid", pkid)
		return tx.Put(tableK8sKeys, pkid, k8sKeyRecord{Label: prev.Label, Kid: pkid, Alg: prev.Alg, Public: der,
			RetiredAt: now, RetireAfter: k8sRetireAfter(now, s.k8s.maxExpiration())})
	})
	err = storeErr(err)
	// The ring follows the token even when the store failed (the reload
	// records a missing retirement).
	if rerr := s.reloadK8sKeysLocked(ctx); rerr != nil || err != nil {
		return K8sSAKeyRotation{}, errors.Join(err, rerr)
	}
	var out K8sSAKeyRotation
	for _, k := range s.k8sKeyViews() {
		switch {
		case k.Label == v.Label:
			out.Current = k
		case prev != nil && k.Label == prev.Label:
			p := k
			out.Previous = &p
		}
	}
	s.log.Info("Kubernetes signing key rotated", "to", v.Label, "kid", kid)
	return out, nil
}

// sweepK8sKeys destroys retired Kubernetes signing keys past their
// retire_after on the token; it returns how many went.
func (s *Service) sweepK8sKeys(ctx context.Context) (int, error) {
	ring := s.k8s.ring.Load()
	if ring == nil {
		return 0, nil
	}
	now := s.now()
	var due []k8sRingKey
	for _, k := range ring.keys {
		if !k.current && !now.Before(k.retireAfter) {
			due = append(due, k)
		}
	}
	if len(due) == 0 {
		return 0, nil
	}
	ks, err := s.k8sKeyStore()
	if err != nil {
		return 0, err
	}
	s.k8s.mu.Lock()
	defer s.k8s.mu.Unlock()
	n := 0
	for _, k := range due {
		if err := s.auditAdmits(); err != nil {
			return n, err
		}
		switch err := ks.DestroyK8sKey(ctx, k.label); {
		case errors.Is(err, hsm.ErrKeyCurrent):
			continue
		case err != nil && !errors.Is(err, hsm.ErrKeyNotFound):
			return n, hsmErr(fmt.Errorf("destroy Kubernetes signing key %s: %w", k.label, err))
		}
		err := s.update(ctx, systemPrincipal, "k8s.sa_key_destroy", func(tx *kv.Txn, c *change) error {
			c.set("key", k.label, "kid", k.kid)
			var r k8sKeyRecord
			if err := tx.Get(tableK8sKeys, k.kid, &r); err != nil {
				return err
			}
			r.DestroyedAt = &now
			return tx.Put(tableK8sKeys, k.kid, r)
		})
		if err != nil {
			return n, storeErr(err)
		}
		n++
		s.log.Info("retired Kubernetes signing key destroyed", "key", k.label, "kid", k.kid)
	}
	return n, s.reloadK8sKeysLocked(ctx)
}

// CheckK8sClaims validates a ServiceAccount token's claims segment (see
// K8sSign) at now against the maximum token expiration maxExp. Errors are
// invalid_argument and name the claim at fault, never a claim's value.
func CheckK8sClaims(b64 []byte, now time.Time, maxExp time.Duration) error {
	bad := func(format string, args ...any) error {
		return Invalid(CodeInvalidArgument, "Kubernetes token claims: "+format, args...)
	}
	if len(b64) == 0 {
		return bad("empty")
	}
	if len(b64) > MaxK8sClaims {
		return bad("longer than %d bytes", MaxK8sClaims)
	}
	raw := make([]byte, base64.RawURLEncoding.DecodedLen(len(b64)))
	n, err := base64.RawURLEncoding.Strict().Decode(raw, b64)
	if err != nil {
		return bad("not base64url without padding")
	}
	raw = raw[:n]
	claims, err := decodeK8sClaims(raw)
	if err != nil {
		return bad("%s", err.Error())
	}
	for _, name := range []string{"iss", "sub"} {
		v, ok := claims[name]
		if !ok {
			return bad("%s is missing", name)
		}
		var str string
		if json.Unmarshal(v, &str) != nil || str == "" {
			return bad("%s is not a non-empty string", name)
		}
	}
	times := map[string]int64{}
	for _, name := range []string{"iat", "exp", "nbf"} {
		v, ok := claims[name]
		if !ok {
			if name == "nbf" {
				continue
			}
			return bad("%s is missing", name)
		}
		t, ok := numericDate(v)
		if !ok {
			return bad("%s is not a whole number of seconds", name)
		}
		times[name] = t
	}
	iat, exp := times["iat"], times["exp"]
	maxS, leeway, nowS := int64(maxExp/time.Second), int64(k8sLeeway/time.Second), now.Unix()
	switch {
	case exp <= iat:
		return bad("exp is not after iat")
	case exp-iat > maxS:
		return bad("exp - iat is %ds, more than the maximum token expiration of %ds", exp-iat, maxS)
	case iat > nowS+leeway:
		return bad("iat is in the future")
	case exp > nowS+maxS+leeway:
		return bad("exp is more than the maximum token expiration (%ds) from now", maxS)
	case exp <= nowS-leeway:
		return bad("exp is in the past")
	}
	if nbf, ok := times["nbf"]; ok && nbf >= exp {
		return bad("nbf is not before exp")
	}
	return nil
}

// registeredClaims are the RFC 7519 registered claim names, by folded
// name (see foldClaim).
var registeredClaims = map[string]string{}

func init() {
	for _, n := range []string{"iss", "sub", "aud", "exp", "nbf", "iat", "jti"} {
		registeredClaims[foldClaim(n)] = n
	}
}

// decodeK8sClaims reads a JSON object of claims, by exact name, refusing
// a claim named twice, even in another case (verifiers disagree on which
// one counts, see foldClaim), a name that folds to a registered claim's
// but is not spelled exactly so ("EXP", "Exp", "ISS": go-jose and
// kube-apiserver read claim names exactly, and would see no exp), and
// anything but one object.
func decodeK8sClaims(raw []byte) (map[string]json.RawMessage, error) {
	if t := bytes.TrimLeft(raw, " \t\r\n"); len(t) == 0 || t[0] != '{' {
		return nil, errors.New("not a JSON object")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errors.New("not valid JSON")
	}
	// encoding/json keeps the last of a name given twice: the object had
	// more members than the map has names then.
	if topLevelMembers(raw) != len(m) {
		return nil, errors.New("a claim appears twice")
	}
	folded := make(map[string]bool, len(m))
	for name := range m {
		f := foldClaim(name)
		if folded[f] {
			return nil, errors.New("a claim appears twice")
		}
		folded[f] = true
	}
	for _, name := range slices.Sorted(maps.Keys(m)) { // one answer for one input
		if reg, ok := registeredClaims[foldClaim(name)]; ok && name != reg {
			return nil, fmt.Errorf("a claim is named %s in another case", reg)
		}
	}
	return m, nil
}

// topLevelMembers counts the members of raw, a valid JSON object: the
// commas outside strings at depth one, plus one unless it is empty.
func topLevelMembers(raw []byte) int {
	depth, commas, inString, escaped, empty := 0, 0, false, false, true
	for _, c := range raw {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
			continue
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			depth++
			continue
		case c == '}' || c == ']':
			depth--
			continue
		case c == ',' && depth == 1:
			commas++
		}
		if depth == 1 && c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			empty = false
		}
	}
	if empty {
		return 0
	}
	return commas + 1
}

// foldClaim maps every rune of a claim name to the least rune of its
// case folding orbit. JSON readers differ: Go's encoding/json matches
// claim names without regard to case ("exp", "EXP" and "Exp" are one
// claim to it), go-jose's fork of it, which kube-apiserver's verifier
// uses, matches them exactly. Refusing names that fold together leaves
// no room for two readers to see different claims.
func foldClaim(name string) string {
	return strings.Map(func(r rune) rune {
		m := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			m = min(m, f)
		}
		return m
	}, name)
}

// numericDate reads an RFC 7519 NumericDate that is a whole number of
// seconds (kube-apiserver writes integers).
func numericDate(v json.RawMessage) (int64, bool) {
	if len(v) == 0 || (v[0] != '-' && (v[0] < '0' || v[0] > '9')) {
		return 0, false // a string, even of digits, is not a NumericDate
	}
	var n json.Number
	if json.Unmarshal(v, &n) != nil {
		return 0, false
	}
	if i, err := n.Int64(); err == nil {
		return i, i >= 0
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || f < 0 || f > 1<<40 {
		return 0, false
	}
	return int64(f), true
}
