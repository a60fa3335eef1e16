package daemon

import (
	"errors"
	"fmt"
	"time"

	"github.com/coffer-hsm/coffer/internal/diskspace"
	"github.com/coffer-hsm/coffer/kv"
)

// Storage faults, as the daemon sees them (kv's health.go does the work):
// while the store's filesystem is short of room, or after a write to it
// failed, state changes are refused and reads (deliveries, bearer tokens,
// lists) go on; status and the watchdog say why.

// storeHealther is a store that reports its health (kv.Store does).
type storeHealther interface{ Health() kv.Health }

// storeProber is a store that can check its directory still takes a
// write (kv.Store does).
type storeProber interface{ Probe() error }

// storeLoser is a store that says when it has stopped serving for good.
type storeLoser interface{ Lost() <-chan struct{} }

// storeFault maps a store error to the daemon's: a full filesystem to
// 507 store_full, anything else to 503 store_unavailable. The cause goes
// to the log through the transport, never to the caller.
func storeFault(err error) error {
	if errors.Is(err, kv.ErrFull) {
		return &Error{Class: ErrUnavailable, Code: CodeStoreFull,
			Message: "the store's filesystem is full: state changes are refused until there is room again (reads go on)", Err: err}
	}
	if errors.Is(err, kv.ErrFailed) {
		return unavailable(CodeStoreUnavailable, "the store cannot write: state changes are refused until its filesystem is writable again (reads go on)", err)
	}
	return unavailable(CodeStoreUnavailable, "the store is unavailable", err)
}

// storeHealth is the store's health, or OK for a store that does not say.
func (s *Service) storeHealth() kv.Health {
	if h, ok := s.store.(storeHealther); ok {
		return h.Health()
	}
	return kv.Health{State: kv.StateOK}
}

// StoreLost is closed when the store stops serving for good (it could not
// be reopened after its storage failed): the daemon should exit and let
// its service manager start it again once the filesystem is repaired.
// Nil (never ready) for a store that cannot be lost.
func (s *Service) StoreLost() <-chan struct{} {
	if l, ok := s.store.(storeLoser); ok {
		return l.Lost()
	}
	return nil
}

// storeStatus overlays the store's live health on st: a store refusing
// writes is not healthy, and says why.
func storeStatus(st StoreStatus, h kv.Health) StoreStatus {
	st.State = h.State.String()
	st.FreeBytes, st.ReserveBytes = h.Avail, h.Reserve
	if h.State == kv.StateOK {
		return st
	}
	st.Healthy = false
	st.Since = h.Since.UTC().Truncate(time.Second)
	switch h.State {
	case kv.StateFull:
		st.Error = fmt.Sprintf("full: its filesystem has %s free, less than the %s kept for the store; state changes are refused until there is room (reads go on)",
			diskspace.Bytes(h.Avail), diskspace.Bytes(h.Reserve))
	case kv.StateFailed:
		st.Error = fmt.Sprintf("failed: a write failed (%v); state changes are refused until the filesystem is writable again (reads go on)", errors.Unwrap(h.Err))
	case kv.StateLost:
		st.Error = fmt.Sprintf("lost: the store could not be reopened after a failed write (%v); restart coffer once the filesystem is repaired", errors.Unwrap(h.Err))
	}
	return st
}

// storeHealthy is the store's part of Healthy: a store refusing writes is
// degraded (it recovers by itself: the watchdog keeps being pinged and
// deliveries keep being served), a lost one is not.
func storeHealthy(h kv.Health) error {
	switch h.State {
	case kv.StateFull, kv.StateFailed:
		return &DegradedError{Err: fmt.Errorf("store: %w", h.Err)}
	case kv.StateLost:
		return fmt.Errorf("store: %w", h.Err)
	}
	return nil
}
