package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/coffer-hsm/coffer/kv"
)

// StoreCheck is what CheckStore found.
type StoreCheck struct {
	kv.Report
	Commits uint64 // the store's commit count
	Secrets int    // secrets whose sealed version was opened
}

// checkProblems bounds the problems a check lists.
const checkProblems = 100

// CheckStore checks the store of cfg.StateDir offline (no daemon may have
// it open): it opens it as the daemon does, with every start-up check
// (files, witness), verifies every table's checksums and every index
// against its records (kv.Store.Verify), and opens every secret's sealed
// version with the HSM against its record (the same version, bound to
// the same project, id and version), proving both intact. A store that
// does not open is an error; problems found in an open one are listed.
func CheckStore(ctx context.Context, cfg Config) (out StoreCheck, err error) {
	if cfg.StateDir == "" {
		return out, errors.New("no state directory configured")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	keys, err := restoreKeys(ctx, cfg) // like a restore, a check never makes keys
	if err != nil {
		return out, err
	}
	defer keys.Close()
	store, err := openStore(ctx, cfg, keys)
	if err != nil {
		var locked *kv.LockedError
		if errors.As(err, &locked) {
			return out, fmt.Errorf("the store in %s is in use (a daemon has it open): stop it before checking", cfg.StateDir)
		}
		return out, err
	}
	defer func() {
		store.Close()
		// Run by root for a daemon that runs as its own user, the check
		// made files (a value log, the witness): they are that user's,
		// or the daemon could not start on its store again.
		if oerr := matchOwner(cfg.StateDir, cfg.StateDir); oerr != nil && err == nil {
			err = fmt.Errorf("give the state directory's files back to its owner: %w", oerr)
		}
	}()
	out.Report, err = store.Verify(ctx, checkProblems)
	if err != nil {
		return out, err
	}
	out.Commits = store.Commits()
	s := &Service{cfg: cfg, keys: keys, store: store, log: cfg.Logger}
	err = s.checkSealed(ctx, &out)
	return out, err
}

// checkSealed opens every secret's sealed version, a page of secrets at a
// time, and reports sealed versions without a secret.
func (s *Service) checkSealed(ctx context.Context, out *StoreCheck) error {
	problem := func(format string, args ...any) {
		if len(out.Problems) < checkProblems {
			out.Problems = append(out.Problems, fmt.Sprintf(format, args...))
		} else {
			out.More++
		}
	}
	type pair struct {
		rec  secretRecord
		blob sealedRecord
		err  error
	}
	after := ""
	for {
		var page []pair
		err := s.store.View(ctx, func(tx *kv.Txn) error {
			return tx.List(tableSecrets, kv.Query{After: after, Limit: sweepBatch}, func(id string, decode func(any) error) error {
				var p pair
				if err := decode(&p.rec); err != nil {
					return err
				}
				p.err = tx.Get(tableSealed, id, &p.blob)
				page = append(page, p)
				after = id
				return nil
			})
		})
		if err != nil {
			return fmt.Errorf("check sealed secrets: %w", err)
		}
		for _, p := range page {
			if p.err != nil {
				problem("secret %s: its sealed version: %v", p.rec.ID, p.err)
				continue
			}
			plain, _, _, err := s.open(ctx, p.rec, p.blob)
			clear(plain)
			if err != nil {
				problem("secret %s: %v", p.rec.ID, err)
				continue
			}
			out.Secrets++
		}
		if len(page) < sweepBatch {
			break
		}
	}
	return s.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableSealed, kv.Query{}, func(id string, _ func(any) error) error {
			var rec secretRecord
			if err := tx.Get(tableSecrets, id, &rec); errors.Is(err, kv.ErrNotFound) {
				problem("sealed version %s: no secret has it", id)
			} else if err != nil {
				return err
			}
			return nil
		})
	})
}
