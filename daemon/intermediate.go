package daemon

// Intermediate keys (hsm/intermediate.go, issue 16): on a slow token the
// HSM wraps one intermediate key per KEK version and DEKs are wrapped
// under it in software. The daemon keeps the current KEK's intermediate
// key, wrapped (nothing secret), in the store, so that the secrets sealed
// in every run share one and a boot costs the token one unwrap; and it
// moves sealed records of the current KEK to the form the mode wants
// once per KEK (records of a store made before, or under another mode).
// KEK rotation moves every record to the new KEK's intermediate key.

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

// intermediateKeys is what keys with intermediate keys (hsm.HSM) add.
type intermediateKeys interface {
	CurrentIntermediate(ctx context.Context) (*hsm.IntermediateKey, error)
	UseIntermediate(ctx context.Context, ik *hsm.IntermediateKey) error
}

// State records in tableKeyState, per KEK label.
const (
	stateIKPrefix   = "intermediate_key:"  // the wrapped intermediate key
	stateFormPrefix = "intermediate_form:" // progress of moving records to the mode's form
)

// formRecord is the progress of moving the sealed records of one KEK to
// one form (with or without an intermediate key).
type formRecord struct {
	Intermediate bool   `json:"intermediate"`
	Cursor       string `json:"cursor,omitempty"`
	Moved        int    `json:"moved"`
	Done         bool   `json:"done"`
}

// keepIntermediate makes the intermediate key kept for the current KEK
// the one new seals use, or keeps the one the HSM makes now. Nothing to
// do for keys without intermediate keys or a mode that uses none.
func (s *Service) keepIntermediate(ctx context.Context) error {
	ik, ok := s.rawKeys.(intermediateKeys)
	if !ok {
		return nil
	}
	label := s.keys.CurrentKEK()
	var kept hsm.IntermediateKey
	err := s.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableKeyState, stateIKPrefix+label, &kept) })
	found := err == nil
	switch {
	case found:
		if err := ik.UseIntermediate(ctx, &kept); err != nil {
			// A key that does not open is replaced; the records under it
			// still open, each with one more token unwrap.
			s.log.Warn("the kept intermediate key of the KEK does not open; making another", "kek", label, "err", err)
		}
	case !errors.Is(err, kv.ErrNotFound):
		return storeErr(err)
	}
	cur, err := ik.CurrentIntermediate(ctx)
	if err != nil {
		return hsmErr(fmt.Errorf("intermediate key of KEK %s: %w", label, err))
	}
	if cur == nil || (found && sameIK(kept, *cur)) {
		return nil
	}
	return storeErr(s.update(ctx, systemPrincipal, "hsm.intermediate_key", func(tx *kv.Txn, c *change) error {
		c.set("kek", cur.KEK)
		return tx.Put(tableKeyState, stateIKPrefix+cur.KEK, cur)
	}))
}

func sameIK(a, b hsm.IntermediateKey) bool {
	return a.KEK == b.KEK && a.Scheme == b.Scheme && string(a.WrapNonce) == string(b.WrapNonce) && string(a.Wrapped) == string(b.Wrapped)
}

// forgetIntermediate deletes the kept intermediate key and form progress
// of a destroyed KEK.
func forgetIntermediate(tx *kv.Txn, label string) error {
	if err := ignoreNotFound(tx.Delete(tableKeyState, stateIKPrefix+label)); err != nil {
		return err
	}
	return ignoreNotFound(tx.Delete(tableKeyState, stateFormPrefix+label))
}

// startFormMigration moves, in the background, the sealed records of the
// current KEK to the form the mode wants, unless that was done for this
// KEK and form.
func (s *Service) startFormMigration(ctx context.Context) error {
	ik, ok := s.rawKeys.(intermediateKeys)
	if !ok {
		return nil
	}
	cur, err := ik.CurrentIntermediate(ctx)
	if err != nil {
		return hsmErr(fmt.Errorf("intermediate key: %w", err))
	}
	want := cur != nil
	label := s.keys.CurrentKEK()
	var st formRecord
	err = s.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableKeyState, stateFormPrefix+label, &st) })
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return storeErr(err)
	}
	if err == nil && st.Done && st.Intermediate == want {
		return nil
	}
	if st.Intermediate != want {
		st = formRecord{Intermediate: want}
	}
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		if err := s.migrateForm(s.bg, label, st); err != nil && s.bg.Err() == nil {
			s.log.Warn("moving sealed records to the intermediate key form stopped; it resumes at the next start", "kek", label, "err", err)
		}
	}()
	return nil
}

// migrateForm re-wraps the sealed records of KEK label (current) whose
// form is not st's, in batches, recording its progress with each.
func (s *Service) migrateForm(ctx context.Context, label string, st formRecord) error {
	for {
		if s.keys.CurrentKEK() != label {
			return nil // rotated meanwhile: the rotation moves them
		}
		var items []rewrapItem
		err := s.store.View(ctx, func(tx *kv.Txn) error {
			return tx.List(tableSealed, kv.Query{Index: indexKEK, Value: label, After: st.Cursor, Limit: rewrapBatch}, func(id string, decode func(any) error) error {
				var r sealedRecord
				if err := decode(&r); err != nil {
					return err
				}
				it := rewrapItem{id: id, was: r}
				if r.Sealed != nil && (r.Sealed.Intermediate != nil) != st.Intermediate {
					var sec secretRecord
					switch err := tx.Get(tableSecrets, id, &sec); {
					case err == nil:
						it.aad = secretAAD(sec.ProjectID, id, r.Version)
					case !errors.Is(err, kv.ErrNotFound):
						return err
					}
				}
				items = append(items, it)
				return nil
			})
		})
		if err != nil {
			return storeErr(err)
		}
		if len(items) == 0 {
			st.Done, st.Cursor = true, ""
			if err := s.saveForm(ctx, label, st); err != nil {
				return err
			}
			if st.Moved > 0 {
				s.log.Info("sealed records moved to the form of the KEK's mode", "kek", label, "intermediate_key", st.Intermediate, "records", st.Moved)
			}
			return nil
		}
		for i := range items {
			it := &items[i]
			if it.aad == nil {
				continue
			}
			next, err := s.keys.Rewrap(ctx, it.was.Sealed, it.aad)
			if errors.Is(err, hsm.ErrOpen) {
				s.log.Warn("sealed record does not open; left as it is", "secret", it.id, "kek", label, "err", err)
				continue
			}
			if err != nil {
				return hsmErr(fmt.Errorf("re-wrap secret %s: %w", it.id, err))
			}
			it.next = next
		}
		if !slices.ContainsFunc(items, func(it rewrapItem) bool { return it.next != nil }) {
			st.Cursor = items[len(items)-1].id // nothing to write: no commit
			continue
		}
		moved := 0
		err = s.update(ctx, systemPrincipal, "hsm.intermediate_form", func(tx *kv.Txn, c *change) error {
			moved = 0
			for _, it := range items {
				if it.next == nil {
					continue
				}
				var cur sealedRecord
				if err := tx.Get(tableSealed, it.id, &cur); err != nil {
					if errors.Is(err, kv.ErrNotFound) {
						continue
					}
					return err
				}
				if !sameEnvelope(cur, it.was) {
					continue // rotated or re-wrapped meanwhile
				}
				if err := putSealed(tx, it.id, sealedRecord{Version: cur.Version, Sealed: it.next}); err != nil {
					return err
				}
				moved++
			}
			next := st
			next.Cursor = items[len(items)-1].id
			next.Moved += moved
			c.set("kek", label, "records", strconv.Itoa(moved))
			return tx.Put(tableKeyState, stateFormPrefix+label, next)
		})
		if err != nil {
			return storeErr(err)
		}
		st.Cursor = items[len(items)-1].id
		st.Moved += moved
	}
}

func (s *Service) saveForm(ctx context.Context, label string, st formRecord) error {
	return storeErr(s.update(ctx, systemPrincipal, "hsm.intermediate_form", func(tx *kv.Txn, c *change) error {
		c.set("kek", label, "done", strconv.FormatBool(st.Done))
		return tx.Put(tableKeyState, stateFormPrefix+label, st)
	}))
}
