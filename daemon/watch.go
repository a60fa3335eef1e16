package daemon

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// Watching a delivery: GET /v1/deliver/{name}?wait=30s&after_version=N
// waits until the secret bound to the caller under name is at a version
// newer than N, then delivers it as Deliver does; or answers "not
// modified" when the wait ends first.

// MaxDeliveryWait bounds how long one watch request waits.
const MaxDeliveryWait = 5 * time.Minute

// ErrNotModified: a watch's wait ended with no version newer than the
// caller's (HTTP 304).
var ErrNotModified = errors.New("not modified")

// Wire codes of a bad watch.
const (
	CodeInvalidWait         = "invalid_wait"
	CodeInvalidAfterVersion = "invalid_after_version"
)

// watchers wakes the deliveries that wait for a new version. Every
// commit that replaced or deleted a record a delivery depends on (a
// secret rotated, revoked or deleted; a binding removed; a role, user,
// credential or session changed; a policy) closes the current channel
// and starts a new one: the waiters read again, with all of Deliver's
// checks, and go back to waiting if nothing they may see changed. Per
// table, not per secret (the store's commits say which tables they
// wrote), which costs each waiter one read per such commit.
type watchers struct {
	mu sync.Mutex
	ch chan struct{}
}

func (w *watchers) current() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch == nil {
		w.ch = make(chan struct{})
	}
	return w.ch
}

func (w *watchers) wake() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ch != nil {
		close(w.ch)
		w.ch = nil
	}
}

// watchedTables: what a delivery reads. A rotation replaces the secret
// record; anything that ends a caller's right to it replaces or deletes
// one of the others.
var watchedTables = append([]string{tableSecrets, tableBindings, tablePolicies}, identityTables...)

func (s *Service) wakeWatchers(c kv.Commit) {
	for _, t := range watchedTables {
		if c.Touched(t, false) {
			s.watchers.wake()
			return
		}
	}
}

// CheckWatch validates a watch's parameters: wait a Go duration from 0
// to MaxDeliveryWait, afterVersion 0 or more.
func CheckWatch(wait time.Duration, afterVersion int) error {
	if wait < 0 || wait > MaxDeliveryWait {
		return Invalid(CodeInvalidWait, "wait must be a duration from 0s to %s, such as 30s", MaxDeliveryWait)
	}
	if afterVersion < 0 {
		return Invalid(CodeInvalidAfterVersion, "after_version must be a version number (0 or more)")
	}
	return nil
}

// WatchDelivery delivers what Deliver would once the secret bound to the
// caller under req.Name is at a version newer than afterVersion; if it is
// already, at once. It waits at most wait (up to MaxDeliveryWait) and
// then returns ErrNotModified. Each wake-up reads again with all of
// Deliver's checks: a binding removed, a role lost, a token revoked while
// waiting ends the wait with Deliver's not_found (audited), never with
// the new value. A caller with nothing bound under the name gets the
// not_found at once; nobody waits on a name it cannot receive. The
// caller's context ending ends the wait with its error.
func (s *Service) WatchDelivery(ctx context.Context, p Principal, req DeliveryRequest, afterVersion int, wait time.Duration) (Delivery, error) {
	if err := CheckWatch(wait, afterVersion); err != nil {
		return Delivery{}, err
	}
	if !ValidCredentialName(req.Name) || (req.Key != "" && !validKeyName(req.Key, maxKeyName)) {
		return s.Deliver(ctx, p, req)
	}
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		// The channel first: a commit between the read and the wait
		// still wakes this one.
		woken := s.watchers.current()
		l, err := s.lookupDelivery(ctx, p, req)
		if err != nil || l.why != "" || l.rec.Version > afterVersion {
			// Anything but "bound, deliverable, not newer": Deliver says
			// what (and records it).
			return s.Deliver(ctx, p, req)
		}
		select {
		case <-woken:
		case <-timer.C:
			return Delivery{}, ErrNotModified
		case <-ctx.Done():
			return Delivery{}, ctx.Err()
		}
	}
}
