package daemon

import (
	"context"
	"time"

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
	Counts    Counts
}

// HSMStatus says which module, token and keys are in use and whether the
// token answers.
type HSMStatus struct {
	Module     string
	TokenLabel string
	KeyLabels  []string
	Healthy    bool
	Error      string
}

// StoreStatus says whether the store answers.
type StoreStatus struct {
	Healthy bool
	Error   string
}

// Counts are the numbers of records by kind.
type Counts struct {
	Projects int
	Secrets  int
}

// Status reports version, uptime, HSM and store health, and counts. It
// probes the HSM and the store for real; failures are reported, not returned.
func (s *Service) Status(ctx context.Context, g Grant) (Status, error) {
	if err := g.require(ActReadStatus); err != nil {
		return Status{}, err
	}
	info := s.keys.Info()
	st := Status{
		Version:   s.cfg.Version,
		StartedAt: s.started.UTC(),
		Uptime:    time.Since(s.started),
		Dev:       s.cfg.Dev,
		HSM:       HSMStatus{Module: info.Module, TokenLabel: info.TokenLabel, KeyLabels: info.KeyLabels, Healthy: true},
		Store:     StoreStatus{Healthy: true},
	}
	if err := s.keys.Check(ctx); err != nil {
		st.HSM.Healthy, st.HSM.Error = false, err.Error()
	}
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		if st.Counts.Projects, err = tx.Count(tableProjects, kv.Query{}); err != nil {
			return err
		}
		st.Counts.Secrets, err = tx.Count(tableSecrets, kv.Query{})
		return err
	})
	if err == nil {
		err = s.store.Check(ctx)
	}
	if err != nil {
		st.Store.Healthy, st.Store.Error = false, err.Error()
	}
	return st, nil
}
