package daemon

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// restartCount starts rec's authentication count again for the token a
// rotation issues: max_authn is what each issued token may do, so a used-up
// one-time credential rotated is usable once more. During a grace the old
// token's authentications count against the same new budget; an exhausted
// credential's old token gets no grace at all (it could not be in use, and
// must not come back with the new count). It returns the grace to give the
// old token.
func restartCount(tx *kv.Txn, rec *credentialRecord, grace time.Duration, c *change) (time.Duration, error) {
	if err := withUse(tx, rec); err != nil {
		return 0, err
	}
	if rec.AuthnCount == 0 {
		return grace, nil
	}
	if rec.MaxAuthn > 0 && rec.AuthnCount >= rec.MaxAuthn {
		grace = 0
	}
	c.set("previous_authn_count", strconv.Itoa(rec.AuthnCount))
	rec.AuthnCount = 0
	return grace, tx.Put(tableCredentialUse, rec.ID, credentialUse{LastUsedAt: rec.LastUsedAt})
}

// When a credential was last used is the most asked-for view of a token
// system. An authentication (login, OAuth2 token) records it with its
// count (countAuthn). A bearer — an access token, a login's session, an
// OAuth2 client's JWT — is used on every request, and a write per request
// would cost every request a commit: its uses are kept in memory instead
// (lastUse), shown by reads at once, and written to the credential's usage
// record (tableCredentialUse, which ends no cached token, caches.go) every
// lastUseFlushEvery and when the daemon stops, as one change the daemon
// itself records. A crash loses at most that much of it.
const (
	lastUseFlushEvery = 30 * time.Second
	// lastUseResolution: a bearer's use is recorded at most once a second
	// per credential, so the request path only reads its clock.
	lastUseResolution = time.Second
	// lastUseFlushBatch bounds one flush transaction.
	lastUseFlushBatch = 512
)

// lastUse is the in-memory last use of the credentials whose bearers were
// used since the daemon started, by credential id. The bearer cache keeps
// a pointer to its credential's clock, so a cached request touches it
// without a lookup.
type lastUse struct {
	clocks  sync.Map   // credential id -> *useClock
	flushMu sync.Mutex // one flush at a time
}

type useClock struct {
	at      atomic.Int64 // unix nanoseconds of the last use; 0: none
	flushed atomic.Int64 // the last use a flush wrote (or found older)
}

// touch records a use at now. Its cost on the request path is one atomic
// load; a compare-and-swap at most once per lastUseResolution.
func (c *useClock) touch(now time.Time) {
	if c == nil {
		return
	}
	t := now.UnixNano()
	if old := c.at.Load(); t-old >= int64(lastUseResolution) {
		c.at.CompareAndSwap(old, t)
	}
}

// clock returns the clock of credential id, made on first use.
func (l *lastUse) clock(id string) *useClock {
	if v, ok := l.clocks.Load(id); ok {
		return v.(*useClock)
	}
	v, _ := l.clocks.LoadOrStore(id, new(useClock))
	return v.(*useClock)
}

// get returns the last use of credential id kept in memory, if any.
func (l *lastUse) get(id string) *time.Time {
	v, ok := l.clocks.Load(id)
	if !ok {
		return nil
	}
	at := v.(*useClock).at.Load()
	if at == 0 {
		return nil
	}
	t := time.Unix(0, at).UTC()
	return &t
}

// withLastUse shows in rec the last use kept in memory when it is newer
// than the stored one.
func (s *Service) withLastUse(rec *credentialRecord) {
	if t := s.lastUse.get(rec.ID); t != nil && (rec.LastUsedAt == nil || t.After(*rec.LastUsedAt)) {
		rec.LastUsedAt = t
	}
}

// errNothingToFlush ends a flush transaction that would write nothing.
var errNothingToFlush = errors.New("no last use to write")

// flushLastUse writes the last uses kept in memory that are newer than
// the stored ones into the credentials' usage records: one change
// (credential.last_used, by the daemon) per lastUseFlushBatch credentials.
// Clocks of credentials that are gone are dropped. What a failed flush did
// not write is written by the next one.
func (s *Service) flushLastUse(ctx context.Context) error {
	s.lastUse.flushMu.Lock()
	defer s.lastUse.flushMu.Unlock()
	type due struct {
		id    string
		clock *useClock
		at    int64
	}
	var dues []due
	s.lastUse.clocks.Range(func(k, v any) bool {
		c := v.(*useClock)
		if at := c.at.Load(); at > c.flushed.Load() {
			dues = append(dues, due{id: k.(string), clock: c, at: at})
		}
		return true
	})
	slices.SortFunc(dues, func(a, b due) int { return strings.Compare(a.id, b.id) })
	for len(dues) > 0 {
		batch := dues[:min(len(dues), lastUseFlushBatch)]
		dues = dues[len(batch):]
		var gone []string
		err := s.update(ctx, systemPrincipal, "credential.last_used", func(tx *kv.Txn, c *change) error {
			gone = gone[:0]
			n := 0
			for _, d := range batch {
				var rec credentialRecord
				if err := tx.Get(tableCredentials, d.id, &rec); errors.Is(err, kv.ErrNotFound) {
					gone = append(gone, d.id)
					continue
				} else if err != nil {
					return err
				}
				if err := withUse(tx, &rec); err != nil {
					return err
				}
				at := time.Unix(0, d.at).UTC()
				if rec.LastUsedAt != nil && !at.After(*rec.LastUsedAt) {
					continue
				}
				if err := tx.Put(tableCredentialUse, rec.ID, credentialUse{AuthnCount: rec.AuthnCount, LastUsedAt: &at}); err != nil {
					return err
				}
				n++
			}
			if n == 0 {
				return errNothingToFlush
			}
			c.set("credentials", strconv.Itoa(n))
			return nil
		})
		if err != nil && !errors.Is(err, errNothingToFlush) {
			return err
		}
		for _, d := range batch {
			d.clock.flushed.Store(d.at)
		}
		for _, id := range gone {
			s.lastUse.clocks.Delete(id)
		}
	}
	return nil
}

// forgetGoneClocks drops the clocks of credentials deleted since their
// last use was written (a flush drops those used since).
func (s *Service) forgetGoneClocks(ctx context.Context) error {
	s.lastUse.flushMu.Lock()
	defer s.lastUse.flushMu.Unlock()
	var ids []string
	s.lastUse.clocks.Range(func(k, _ any) bool {
		ids = append(ids, k.(string))
		return true
	})
	var gone []string
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		for _, id := range ids {
			err := tx.Get(tableCredentials, id, &credentialState{})
			if errors.Is(err, kv.ErrNotFound) {
				gone = append(gone, id)
			} else if err != nil {
				return err
			}
		}
		return nil
	})
	for _, id := range gone {
		s.lastUse.clocks.Delete(id)
	}
	return err
}
