package daemon

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

const (
	// DefaultExpiryWarning is how far ahead expiring credentials and
	// secrets are warned about.
	DefaultExpiryWarning = 7 * 24 * time.Hour
	sweepEvery           = 10 * time.Minute
	warnEvery            = 24 * time.Hour
	firstWarnAfter       = time.Minute
	// sweepBatch bounds one sweep transaction.
	sweepBatch = 1000
)

// RunMaintenance runs the daemon's housekeeping until ctx ends: it deletes
// expired sessions and rotated tokens past their grace every 10 minutes
// (and retired signing keys past their retire_after, see signingkeys.go),
// and a minute after start and then once a day logs a warning for each
// active credential or secret that expires within the configured window.
// Every lastUseFlushEvery, and once more when ctx ends, it writes the last
// uses of bearers kept in memory to the store (credusage.go).
func (s *Service) RunMaintenance(ctx context.Context) {
	sweep := time.NewTicker(sweepEvery)
	defer sweep.Stop()
	warn := time.NewTicker(warnEvery)
	defer warn.Stop()
	// The first warnings a minute after start, not during it: they read
	// every credential and secret.
	first := time.NewTimer(firstWarnAfter)
	defer first.Stop()
	flush := time.NewTicker(lastUseFlushEvery)
	defer flush.Stop()
	for {
		select {
		case <-ctx.Done():
			// The last uses of bearers into the store before the daemon
			// stops (and its audit log closes).
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.logFlushLastUse(s.flushLastUse(fctx))
			cancel()
			return
		case <-flush.C:
			s.logFlushLastUse(s.flushLastUse(ctx))
		case <-first.C:
			s.WarnExpiring(ctx)
		case <-sweep.C:
			if n, err := s.Sweep(ctx); err != nil {
				s.log.Warn("sweep failed", "err", err)
			} else if n > 0 {
				s.log.Info("swept expired sessions and tokens", "deleted", n)
			}
			s.sweepKeys(ctx)
			if err := s.forgetGoneClocks(ctx); err != nil {
				s.log.Warn("dropping the last-use clocks of deleted credentials failed", "err", err)
			}
		case <-warn.C:
			s.WarnExpiring(ctx)
		}
	}
}

// Sweep deletes expired sessions (with their tokens) and rotated tokens
// past their grace, and returns how many records went.
func (s *Service) Sweep(ctx context.Context) (int, error) {
	now := s.now()
	total := 0
	batch := sweepBatch
	for {
		var sessions, tokens []string
		err := s.scanPaged(ctx, tableSessions, func(id string, decode func(any) error) error {
			var rec sessionRecord
			if err := decode(&rec); err != nil {
				return err
			}
			if rec.expired(now) {
				if sessions = append(sessions, id); len(sessions) == batch {
					return errStopScan
				}
			}
			return nil
		})
		if err == nil {
			err = s.scanPaged(ctx, tableTokens, func(id string, decode func(any) error) error {
				var rec tokenRecord
				if err := decode(&rec); err != nil {
					return err
				}
				if rec.NotAfter != nil && !now.Before(*rec.NotAfter) {
					if tokens = append(tokens, id); len(tokens) == batch {
						return errStopScan
					}
				}
				return nil
			})
		}
		if err != nil {
			return total, err
		}
		if len(sessions) == 0 && len(tokens) == 0 {
			return total, nil
		}
		err = s.update(ctx, systemPrincipal, "session.sweep", func(tx *kv.Txn, c *change) error {
			c.set("sessions", strconv.Itoa(len(sessions)), "tokens", strconv.Itoa(len(tokens)))
			for _, id := range sessions {
				if err := deleteSession(tx, id, now); err != nil {
					return err
				}
			}
			for _, id := range tokens {
				if err := ignoreNotFound(tx.Delete(tableTokens, id)); err != nil {
					return err
				}
			}
			return nil
		})
		if errors.Is(err, kv.ErrTxnTooBig) && batch > 1 {
			// Sessions with many tokens: fewer per transaction.
			batch /= 2
			continue
		}
		if err != nil {
			return total, err
		}
		total += len(sessions) + len(tokens)
		if len(sessions) < batch && len(tokens) < batch {
			return total, nil
		}
	}
}

// sweepKeys destroys signing keys past their retire_after and resumes an
// interrupted KEK re-wrap.
func (s *Service) sweepKeys(ctx context.Context) {
	if _, err := s.sweepSigningKeys(ctx); err != nil {
		s.log.Warn("signing key sweep failed", "err", err)
	}
	if _, err := s.sweepK8sKeys(ctx); err != nil {
		s.log.Warn("Kubernetes signing key sweep failed", "err", err)
	}
	s.resumeInterruptedRotation(ctx)
}

// WarnExpiring logs one warning per active credential or secret that
// expires within the warning window, and returns how many it warned about.
func (s *Service) WarnExpiring(ctx context.Context) int {
	now := s.now()
	n := 0
	err := s.eachExpiring(ctx, now, func(table, id, project string, at time.Time) {
		n++
		what := "credential"
		if table == tableSecrets {
			what = "secret"
		}
		s.log.Warn(what+" expires soon", what, id, "project", project, "expires_at", at.Format(time.RFC3339), "in", at.Sub(now).Round(time.Minute).String())
	})
	if err != nil {
		s.log.Warn("expiry check failed", "err", err)
	}
	return n
}

// eachExpiring calls f for each active (not revoked) credential and
// secret that expires within the warning window from now, with its table
// (tableCredentials or tableSecrets), ids and expiry, reading a page at a
// time (scanPaged). Nothing when the warning is off.
func (s *Service) eachExpiring(ctx context.Context, now time.Time, f func(table, id, project string, at time.Time)) error {
	window := s.cfg.ExpiryWarning
	if window == 0 {
		window = DefaultExpiryWarning
	}
	if window < 0 {
		return nil
	}
	horizon := now.Add(window)
	soon := func(t *time.Time) bool { return t != nil && now.Before(*t) && !t.After(horizon) }
	err := s.scanPaged(ctx, tableCredentials, func(_ string, decode func(any) error) error {
		var rec credentialRecord
		if err := decode(&rec); err != nil {
			return err
		}
		if rec.RevokedAt == nil && soon(rec.ExpiresAt) {
			f(tableCredentials, rec.ID, rec.ProjectID, *rec.ExpiresAt)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return s.scanPaged(ctx, tableSecrets, func(_ string, decode func(any) error) error {
		var rec secretRecord
		if err := decode(&rec); err != nil {
			return err
		}
		if rec.RevokedAt == nil && soon(rec.ExpiresAt) {
			f(tableSecrets, rec.ID, rec.ProjectID, *rec.ExpiresAt)
		}
		return nil
	})
}

// logFlushLastUse logs a failed flush of last uses (retried at the next).
func (s *Service) logFlushLastUse(err error) {
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("writing the credentials' last use failed; retried later", "err", err)
	}
}
