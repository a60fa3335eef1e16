package daemon

// Signing key rotation. The HSM creates the next signing key version and
// makes it current: new JWTs are signed with it and carry its kid. The
// previous key stays in the JWKS, and keeps verifying bearers, until every
// JWT it signed has expired: its retire_after is the latest expiry of the
// live OAuth2 sessions it may have signed (each JWT is one session and
// expires with it) plus a grace for clock skew and JWKS caches, and is
// kept in the store. After that the key leaves the JWKS at once, and the
// maintenance sweep destroys it on the token. Its public half stays in the
// store for good (SigningKeyHistory), so signatures it made long ago, such
// as audit log checkpoints, can still be checked.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableSigningKeys = "signing_keys"
	// signingKeyGrace keeps a retired key published this long beyond the
	// last expiry of the tokens it signed: relying parties verify with
	// some clock skew (30 s here, a minute in common JOSE libraries).
	signingKeyGrace = 5 * time.Minute
)

// signingKeyRecord is the retirement of an old signing key, by kid. It
// is kept after the key is destroyed on the token, for its public half.
type signingKeyRecord struct {
	Label       string     `json:"label"`
	Kid         string     `json:"kid"`
	Public      JWK        `json:"public"`
	RetiredAt   time.Time  `json:"retired_at"`
	RetireAfter time.Time  `json:"retire_after"`
	DestroyedAt *time.Time `json:"destroyed_at,omitempty"`
}

// ringKey is one signing key on the token.
type ringKey struct {
	label       string
	version     int
	kid         string
	pub         PublicKey
	current     bool
	retiredAt   time.Time // zero for the current key
	retireAfter time.Time
}

func (k ringKey) published(now time.Time) bool { return k.current || now.Before(k.retireAfter) }

// signingKeyRing holds the signing keys that verify JWTs.
type signingKeyRing struct {
	// mint is held shared while a JWT is signed and its session stored,
	// and exclusively while the current key changes, so that a key's
	// retire_after sees every session it signed.
	mint sync.RWMutex
	keys atomic.Pointer[[]ringKey] // current first, then newest first
	// history is every signing key coffer has used, current first: the
	// keys on the token and the public halves of destroyed ones.
	history atomic.Pointer[[]JWK]
}

func (r *signingKeyRing) load() []ringKey {
	if p := r.keys.Load(); p != nil {
		return *p
	}
	return nil
}

// SigningKey is one signing key on the token.
type SigningKey struct {
	Label       string
	Version     int
	Kid         string
	Alg         string // JWS alg: ES256 or PS256
	Current     bool
	Published   bool // in the JWKS and accepted for bearers
	Tokens      int  // live OAuth2 access tokens it signed
	RetiredAt   *time.Time
	RetireAfter *time.Time
}

// SigningKeyRotation is the outcome of RotateSigningKey.
type SigningKeyRotation struct {
	Current  SigningKey
	Previous SigningKey
}

// jwtKeys are the keys JWTs are verified with, by kid.
func (s *Service) jwtKeys() map[string]PublicKey {
	now := s.now()
	ring := s.sig.load()
	out := make(map[string]PublicKey, len(ring))
	for _, k := range ring {
		if k.published(now) {
			out[k.kid] = k.pub
		}
	}
	return out
}

// JWKS returns the public keys that verify coffer's JWTs: the current
// signing key first, then retired keys until their retire_after.
func (s *Service) JWKS() JWKSet {
	now := s.now()
	set := JWKSet{Keys: []JWK{}}
	for _, k := range s.sig.load() {
		if k.published(now) {
			set.Keys = append(set.Keys, PublicJWK(k.pub))
		}
	}
	return set
}

// SigningKeyHistory returns the public half of every signing key coffer
// has used, the current one first, including keys retired from the JWKS
// and destroyed on the token: to check old signatures (audit log
// checkpoints), not bearer tokens.
func (s *Service) SigningKeyHistory() JWKSet {
	set := JWKSet{Keys: []JWK{}}
	if p := s.sig.history.Load(); p != nil {
		set.Keys = append(set.Keys, *p...)
	}
	return set
}

// currentKid is the kid new JWTs carry. The caller holds s.sig.mint.
func (s *Service) currentKid() string {
	for _, k := range s.sig.load() {
		if k.current {
			return k.kid
		}
	}
	return ""
}

// loadSigningKeys reads the signing keys from the token and their
// retirement from the store.
func (s *Service) loadSigningKeys(ctx context.Context) error {
	s.sig.mint.Lock()
	defer s.sig.mint.Unlock()
	return s.reloadSigningKeysLocked(ctx)
}

// reloadSigningKeysLocked rebuilds the ring. An old key without a
// retirement record (the token rotated but the store did not record it: a
// crash in between, or a store restored from an older backup) is retired
// now, after the last live JWT that may carry it. The caller holds
// s.sig.mint exclusively.
func (s *Service) reloadSigningKeysLocked(ctx context.Context) error {
	vs, err := s.keys.SigningKeys(ctx)
	if err != nil {
		return hsmErr(fmt.Errorf("list signing keys: %w", err))
	}
	recs := map[string]signingKeyRecord{} // by kid
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableSigningKeys, kv.Query{}, func(id string, decode func(any) error) error {
			var r signingKeyRecord
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
	var ring []ringKey
	var missing []signingKeyRecord
	for _, v := range vs {
		kid, err := jwtKeyID(v.Public)
		if err != nil {
			return fmt.Errorf("signing key %s: %w", v.Label, err)
		}
		k := ringKey{label: v.Label, version: v.Version, kid: kid, pub: v.Public, current: v.Current}
		if !k.current {
			rec, ok := recs[kid]
			if !ok || rec.DestroyedAt != nil {
				until, err := s.lastJWTExpiry(ctx, kid, now)
				if err != nil {
					return err
				}
				rec = signingKeyRecord{Label: v.Label, Kid: kid, Public: PublicJWK(v.Public), RetiredAt: now, RetireAfter: retireAfter(until)}
				missing = append(missing, rec)
			}
			k.retiredAt, k.retireAfter = rec.RetiredAt, rec.RetireAfter
		}
		ring = append(ring, k)
	}
	if !slices.ContainsFunc(ring, func(k ringKey) bool { return k.current }) {
		return hsmErr(errors.New("the HSM token lists no current signing key"))
	}
	slices.SortFunc(ring, func(a, b ringKey) int {
		switch {
		case a.current:
			return -1
		case b.current:
			return 1
		}
		return b.version - a.version
	})
	s.sig.keys.Store(&ring)
	history := make([]JWK, 0, len(ring)+len(recs))
	onToken := map[string]bool{}
	for _, k := range ring {
		history = append(history, PublicJWK(k.pub))
		onToken[k.kid] = true
	}
	var gone []signingKeyRecord
	for kid, r := range recs {
		if !onToken[kid] && r.Public.Kid == kid {
			gone = append(gone, r)
		}
	}
	slices.SortFunc(gone, func(a, b signingKeyRecord) int { return b.RetiredAt.Compare(a.RetiredAt) })
	for _, r := range gone {
		history = append(history, r.Public)
	}
	s.sig.history.Store(&history)
	if len(missing) == 0 {
		return nil
	}
	return storeErr(s.update(ctx, systemPrincipal, "hsm.signing_key_record", func(tx *kv.Txn, c *change) error {
		c.set("keys", strconv.Itoa(len(missing)))
		for _, r := range missing {
			if err := tx.Put(tableSigningKeys, r.Kid, r); err != nil {
				return err
			}
		}
		return nil
	}))
}

// retireAfter is when a key whose last JWT expires at until leaves the
// JWKS: after the grace, rounded up to a whole second (the wire shows
// seconds; never earlier than that).
func retireAfter(until time.Time) time.Time {
	t := until.Add(signingKeyGrace).UTC()
	if r := t.Truncate(time.Second); r.Before(t) {
		return r.Add(time.Second)
	}
	return t
}

func timePtr(t time.Time) *time.Time {
	u := t.UTC()
	return &u
}

// lastJWTExpiry is the latest expiry of a live OAuth2 session that kid may
// have signed (sessions made before kids were recorded count for every
// key), or now if there is none.
func (s *Service) lastJWTExpiry(ctx context.Context, kid string, now time.Time) (time.Time, error) {
	last := now
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableSessions, kv.Query{}, func(_ string, decode func(any) error) error {
			var r sessionRecord
			if err := decode(&r); err != nil {
				return err
			}
			if r.Kind == SessionOAuth2 && (r.Kid == kid || r.Kid == "") && r.ExpiresAt != nil && r.ExpiresAt.After(last) {
				last = *r.ExpiresAt
			}
			return nil
		})
	})
	return last, storeErr(err)
}

// signingKeys projects the ring with how many live JWTs each key signed.
func (s *Service) signingKeys(ctx context.Context) ([]SigningKey, error) {
	now := s.now()
	tokens := map[string]int{}
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableSessions, kv.Query{}, func(_ string, decode func(any) error) error {
			var r sessionRecord
			if err := decode(&r); err != nil {
				return err
			}
			if r.Kind == SessionOAuth2 && r.Kid != "" && !r.expired(now) {
				tokens[r.Kid]++
			}
			return nil
		})
	})
	if err != nil {
		return nil, storeErr(err)
	}
	var out []SigningKey
	for _, k := range s.sig.load() {
		sk := SigningKey{Label: k.label, Version: k.version, Kid: k.kid, Alg: jwsAlgOf(k.pub), Current: k.current, Published: k.published(now), Tokens: tokens[k.kid]}
		if !k.current {
			sk.RetiredAt, sk.RetireAfter = timePtr(k.retiredAt), timePtr(k.retireAfter)
		}
		out = append(out, sk)
	}
	return out, nil
}

func (s *Service) signingKeyView(label string) SigningKey {
	now := s.now()
	for _, k := range s.sig.load() {
		if k.label == label {
			sk := SigningKey{Label: k.label, Version: k.version, Kid: k.kid, Alg: jwsAlgOf(k.pub), Current: k.current, Published: k.published(now)}
			if !k.current {
				sk.RetiredAt, sk.RetireAfter = timePtr(k.retiredAt), timePtr(k.retireAfter)
			}
			return sk
		}
	}
	return SigningKey{Label: label}
}

// RotateSigningKey creates the next signing key and makes it current. The
// previous key stays published until its retire_after.
func (s *Service) RotateSigningKey(ctx context.Context, g Grant) (SigningKeyRotation, error) {
	if err := g.require(ActManageKeys); err != nil {
		return SigningKeyRotation{}, err
	}
	s.sig.mint.Lock()
	defer s.sig.mint.Unlock()
	var prev ringKey
	for _, k := range s.sig.load() {
		if k.current {
			prev = k
		}
	}
	if err := s.auditAdmits(); err != nil { // before the token changes, as RotateKEK
		return SigningKeyRotation{}, err
	}
	v, err := s.keys.RotateSigningKey(ctx)
	if err != nil {
		return SigningKeyRotation{}, hsmErr(fmt.Errorf("rotate signing key: %w", err))
	}
	now := s.now()
	until, err := s.lastJWTExpiry(ctx, prev.kid, now)
	if err == nil {
		rec := signingKeyRecord{Label: prev.label, Kid: prev.kid, Public: PublicJWK(prev.pub), RetiredAt: now, RetireAfter: retireAfter(until)}
		err = storeErr(s.update(ctx, g.principal, "hsm.signing_key_rotate", func(tx *kv.Txn, c *change) error {
			c.set("from", prev.label, "to", v.Label, "retired_kid", rec.Kid)
			return tx.Put(tableSigningKeys, rec.Kid, rec)
		}))
	}
	// The ring must follow the token even when the store failed (a
	// missing record is made again by the reload).
	if rerr := s.reloadSigningKeysLocked(ctx); rerr != nil || err != nil {
		return SigningKeyRotation{}, errors.Join(err, rerr)
	}
	s.log.Info("signing key rotated", "from", prev.label, "to", v.Label, "kid", s.currentKid())
	return SigningKeyRotation{Current: s.signingKeyView(v.Label), Previous: s.signingKeyView(prev.label)}, nil
}

// sweepSigningKeys destroys retired signing keys past their retire_after
// on the token (their public halves stay in the store); it returns how
// many went.
func (s *Service) sweepSigningKeys(ctx context.Context) (int, error) {
	now := s.now()
	var due []ringKey
	for _, k := range s.sig.load() {
		if !k.current && !now.Before(k.retireAfter) {
			due = append(due, k)
		}
	}
	if len(due) == 0 {
		return 0, nil
	}
	s.sig.mint.Lock()
	defer s.sig.mint.Unlock()
	n := 0
	for _, k := range due {
		if err := s.auditAdmits(); err != nil { // before the token changes: try again at the next sweep
			return n, err
		}
		switch err := s.keys.DestroySigningKey(ctx, k.label); {
		case errors.Is(err, hsm.ErrKeyCurrent):
			continue
		case err != nil && !errors.Is(err, hsm.ErrKeyNotFound):
			return n, hsmErr(fmt.Errorf("destroy signing key %s: %w", k.label, err))
		}
		err := s.update(ctx, systemPrincipal, "hsm.signing_key_destroy", func(tx *kv.Txn, c *change) error {
			c.set("key", k.label, "kid", k.kid)
			var r signingKeyRecord
			if err := tx.Get(tableSigningKeys, k.kid, &r); err != nil {
				return err
			}
			r.DestroyedAt = &now
			return tx.Put(tableSigningKeys, k.kid, r)
		})
		if err != nil {
			return n, storeErr(err)
		}
		n++
		s.log.Info("retired signing key destroyed", "key", k.label, "kid", k.kid)
	}
	return n, s.reloadSigningKeysLocked(ctx)
}
