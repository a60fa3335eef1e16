package daemon

import (
	"context"
	"crypto/sha256"
	"errors"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// bearerInfo is everything a live bearer token stands for, as read from
// the store at one identity generation: the session's identity, its user,
// its project and the user's role there.
type bearerInfo struct {
	ident    *TokenIdentity
	user     *userRecord    // shared with other entries: never modified
	project  *projectRecord // shared with other entries: never modified
	held     Role
	until    time.Time // zero: no time limit
	gen      uint64
	verifier []byte    // opaque tokens: the stored verifier
	tokenID  string    // opaque tokens: the token record's id
	used     *useClock // its credential's last use (credusage.go)
	// elsewhere: a JWT whose aud does not name coffer's issuer, minted for
	// other services (oidc.go). It is described (introspection,
	// /v1/authorize) but not a bearer on coffer's own API.
	elsewhere bool
	// aud is a JWT's audience (nil for an opaque token).
	aud []string
}

// bearerCache keeps bearerInfo of recently used tokens, so the request
// path does not read the store (six records and a rule compilation) for
// every call. An entry is used only while the identity generation it was
// read at is current: every commit that replaces or deletes a record a
// token depends on — a credential rotated, revoked or deleted, a session
// revoked or swept, a user changed or deleted, a role changed, a project
// deleted — bumps the generation (caches.go), which empties the cache in
// effect.
type bearerCache struct {
	mu  sync.RWMutex
	m   map[[32]byte]*bearerInfo
	max int
}

// DefaultBearerCacheSize is the default bound of the bearer cache.
const DefaultBearerCacheSize = 100_000

func (c *bearerCache) get(k [32]byte) *bearerInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.m[k]
}

func (c *bearerCache) put(k [32]byte, b *bearerInfo) {
	if c.max <= 0 {
		return // off
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[[32]byte]*bearerInfo)
	}
	if len(c.m) >= c.max {
		// Drop an eighth, in map order (random enough; no LRU bookkeeping
		// on the read path).
		n := c.max / 8
		for k := range c.m {
			delete(c.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.m[k] = b
}

// cacheKey is the public token id for opaque tokens (the secret is
// checked against the entry's verifier) and a hash of the whole token for
// JWTs (whose signature was checked when the entry was made).
func cacheKey(bearer string) ([32]byte, *ParsedToken) {
	if LooksLikeJWT(bearer) {
		return sha256.Sum256([]byte(bearer)), nil
	}
	tok, err := ParseToken(bearer)
	if err != nil {
		return [32]byte{}, nil
	}
	return sha256.Sum256([]byte("id:" + tok.ID)), &tok
}

// lookupBearer resolves a bearer token to its live session, from the cache
// when it can. Every bad token is the same 401; what gave it away is
// recorded as a denial of action by p.
func (s *Service) lookupBearer(ctx context.Context, p Principal, bearer, action string) (*bearerInfo, error) {
	now := s.now()
	gen := s.idGen.Load()
	key, tok := cacheKey(bearer)
	if b := s.bearers.get(key); b != nil && b.gen == gen && (b.until.IsZero() || now.Before(b.until)) {
		if b.verifier == nil || (tok != nil && tok.Matches(b.verifier)) {
			b.used.touch(now)
			s.counters.bearerHits.Add(1)
			return b, nil
		}
	}
	s.counters.bearerMisses.Add(1)
	b := &bearerInfo{gen: gen}
	var tokenID string
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		r, tid, err := s.resolveBearerAt(tx, bearer, now, &gen)
		tokenID = tid
		if err != nil {
			return err
		}
		if b.ident, err = s.identityOf(r); err != nil {
			return err
		}
		var project projectRecord
		if err := s.getProject(tx, r.session.ProjectID, &project, gen); err != nil {
			return err
		}
		b.project = shared(&s.ids.projects, project.ID, gen, project)
		if b.held, err = s.roleOfAt(tx, r.user.ID, r.session.ProjectID, gen); err != nil {
			return err
		}
		if tok != nil {
			// As checkToken read and matched it. Never cache an opaque
			// token without one: a hit would then skip the secret check.
			if len(r.verifier) == 0 {
				return badToken("token without a verifier")
			}
			b.verifier, b.tokenID = r.verifier, tok.ID
		}
		b.user, b.until, b.elsewhere, b.aud = shared(&s.ids.users, r.user.ID, gen, r.user), r.until, r.elsewhere, r.aud
		return nil
	})
	var bad *errBadToken
	if errors.As(err, &bad) {
		if tok != nil {
			tokenID = displayTokenID(*tok)
		}
		s.tokenRefused(ctx, p, action, tokenID, err)
		return nil, errUnauthenticated()
	}
	if err != nil {
		return nil, storeErr(err)
	}
	b.ident.cache = b
	b.used = s.lastUse.clock(b.ident.CredentialID)
	b.used.touch(now)
	s.bearers.put(key, b)
	return b, nil
}
