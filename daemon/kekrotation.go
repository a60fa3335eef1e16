package daemon

// KEK rotation. The HSM creates the next KEK version and makes it current
// (new seals use it at once); then every sealed record still wrapped by an
// older version is re-wrapped: its DEK is unwrapped with the old KEK and
// wrapped with the new one inside the HSM, the payload ciphertext is left
// as it is. The re-wrap runs in the background in batches, one store
// transaction per batch, and records its progress (target KEK, the old KEK
// being walked, a cursor) in the store with each batch, so a daemon that
// stops or crashes carries on where it was at the next start.
//
// Which KEK is current is decided by the token (the highest version, see
// hsm/rotate.go); the store only records progress. Sealed records are
// indexed by the label of their KEK, so the records left to do and the
// records that keep an old KEK alive are counted without reading them.

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/internal/atomicfile"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableKeyState = "key_state"
	indexKEK      = "kek"

	// State records in tableKeyState.
	stateKEKRotation = "kek_rotation"
	stateKEKIndex    = "sealed_kek_index"

	// rewrapBatch bounds the records one re-wrap transaction writes, and
	// rewrapBatchBytes their size (a transaction must stay well under
	// Badger's batch limit).
	rewrapBatch      = 256
	rewrapBatchBytes = 4 << 20
)

// kekRotationRecord is the persisted progress of moving every sealed
// record to Target.
type kekRotationRecord struct {
	Target   string `json:"target"`
	Previous string `json:"previous,omitempty"`
	// Source and Cursor say where the walk is: the old KEK whose index is
	// being read, and the last sealed record id handled there.
	Source string `json:"source,omitempty"`
	Cursor string `json:"cursor,omitempty"`
	// A pass walks every old KEK once. Another pass follows a pass that
	// re-wrapped something, to catch a record written with the previous
	// KEK by a seal that was in flight when the KEK changed; a pass that
	// re-wraps nothing ends the rotation.
	Pass          int        `json:"pass"`
	PassRewrapped int        `json:"pass_rewrapped"`
	PassFailed    int        `json:"pass_failed"`
	Rewrapped     int        `json:"rewrapped"`
	Failed        int        `json:"failed"` // records that did not open in the last pass
	StartedAt     time.Time  `json:"started_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	FinishedAt    *time.Time `json:"finished_at,omitempty"`
}

// kekRotator is the Service's KEK rotation state in memory.
type kekRotator struct {
	mu      sync.Mutex // serialises starting, removing and the running flag
	running bool
	done    chan struct{} // closed when the running re-wrap ends
	// afterBatch, when set (tests), runs after each committed batch.
	afterBatch func()
}

// KEKVersion is one KEK on the token and how many sealed records it wraps.
type KEKVersion struct {
	Label   string
	Version int
	Current bool
	Scheme  string // aes-256-gcm or rsa-3072-oaep-sha256
	Records int
}

// KEK rotation states.
const (
	RotationRunning     = "running"
	RotationInterrupted = "interrupted" // resumes at the next start or maintenance sweep
	RotationDone        = "done"
)

// KEKRotation is the progress of the last KEK rotation.
type KEKRotation struct {
	Target     string
	Previous   string
	State      string
	Rewrapped  int
	Failed     int
	Remaining  int // sealed records still wrapped by another KEK
	StartedAt  time.Time
	FinishedAt *time.Time
}

// HSMKeys lists the keys on the token and what uses them.
type HSMKeys struct {
	KEKs        []KEKVersion
	SigningKeys []SigningKey
	Rotation    *KEKRotation
}

// sealedIndexes are the index entries of a sealed record.
func sealedIndexes(r sealedRecord) []kv.Index {
	if r.Sealed == nil {
		return nil
	}
	return []kv.Index{{Name: indexKEK, Value: r.Sealed.KEK}}
}

// putSealed writes a sealed record with its KEK index.
func putSealed(tx *kv.Txn, id string, r sealedRecord) error {
	return tx.Put(tableSealed, id, r, sealedIndexes(r)...)
}

// kekRefs counts the sealed records wrapped by label. This is the one place
// that says whether a KEK is still needed.
func kekRefs(tx *kv.Txn, label string) (int, error) {
	return tx.Count(tableSealed, kv.Query{Index: indexKEK, Value: label})
}

// storeKeyKEK is the KEK that seals StateDir/store.key ("" when there is
// none, as in unit tests over a bare store).
func (s *Service) storeKeyKEK() (string, error) {
	if s.cfg.StateDir == "" {
		return "", nil
	}
	f, err := readStoreKeyFile(filepath.Join(s.cfg.StateDir, storeKeyName))
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	return f.Sealed.KEK, nil
}

// rewrapStoreKey moves StateDir/store.key to the current KEK, like the
// sealed records (only its wrapped DEK changes); a start does the same
// (openStore).
func (s *Service) rewrapStoreKey(ctx context.Context) error {
	if s.cfg.StateDir == "" {
		return nil
	}
	path := filepath.Join(s.cfg.StateDir, storeKeyName)
	f, err := readStoreKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	target := s.keys.CurrentKEK()
	if f.Sealed.KEK == target {
		return nil
	}
	from := f.Sealed.KEK
	next, err := s.keys.Rewrap(ctx, f.Sealed, []byte(storeKeyAAD))
	if err != nil {
		return hsmErr(fmt.Errorf("re-wrap store key %s: %w", path, err))
	}
	f.Sealed = next
	b, err := json.Marshal(f)
	if err != nil {
		return fmt.Errorf("encode store key: %w", err)
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("write store key %s: %w", path, err)
	}
	s.log.Info("re-wrapped the store key under the current KEK", "path", path, "from_kek", from, "to_kek", target)
	return nil
}

// ensureKEKIndex indexes sealed records written before the KEK index
// existed, once.
func (s *Service) ensureKEKIndex(ctx context.Context) error {
	var marker struct {
		Done bool `json:"done"`
	}
	err := s.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableKeyState, stateKEKIndex, &marker) })
	if err == nil && marker.Done {
		return nil
	}
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return storeErr(err)
	}
	after, n := "", 0
	for {
		var ids []string
		err := s.store.View(ctx, func(tx *kv.Txn) error {
			return tx.List(tableSealed, kv.Query{After: after, Limit: rewrapBatch}, func(id string, _ func(any) error) error {
				ids = append(ids, id)
				return nil
			})
		})
		if err != nil {
			return storeErr(err)
		}
		if len(ids) == 0 {
			break
		}
		err = s.update(ctx, systemPrincipal, "hsm.kek_index", func(tx *kv.Txn, c *change) error {
			c.set("records", strconv.Itoa(len(ids)))
			for _, id := range ids {
				var r sealedRecord
				if err := tx.Get(tableSealed, id, &r); err != nil {
					if errors.Is(err, kv.ErrNotFound) {
						continue
					}
					return err
				}
				if err := putSealed(tx, id, r); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return storeErr(err)
		}
		n += len(ids)
		after = ids[len(ids)-1]
	}
	marker.Done = true
	if err := s.update(ctx, systemPrincipal, "hsm.kek_index", func(tx *kv.Txn, c *change) error {
		c.set("done", "true")
		return tx.Put(tableKeyState, stateKEKIndex, marker)
	}); err != nil {
		return storeErr(err)
	}
	if n > 0 {
		s.log.Info("indexed sealed records by KEK", "records", n)
	}
	return nil
}

func (s *Service) loadKEKRotation(ctx context.Context) (kekRotationRecord, bool, error) {
	var st kekRotationRecord
	err := s.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableKeyState, stateKEKRotation, &st) })
	if errors.Is(err, kv.ErrNotFound) {
		return kekRotationRecord{}, false, nil
	}
	if err != nil {
		return kekRotationRecord{}, false, storeErr(err)
	}
	return st, true, nil
}

// oldKEKs returns the labels of the KEKs on the token other than target,
// oldest first.
func (s *Service) oldKEKs(ctx context.Context, target string) ([]string, error) {
	keks, err := s.keys.KEKs(ctx)
	if err != nil {
		return nil, hsmErr(fmt.Errorf("list KEKs: %w", err))
	}
	var out []string
	for _, k := range keks {
		if k.Label != target {
			out = append(out, k.Label)
		}
	}
	return out, nil
}

// resumeKEKRotation runs at start: it indexes old records if needed and
// starts the re-wrap when a rotation is unfinished, when the token has a
// newer KEK than the last rotation recorded (a crash right after the key
// was made), or when any sealed record is wrapped by a KEK that is not
// current.
func (s *Service) resumeKEKRotation(ctx context.Context) error {
	if err := s.ensureKEKIndex(ctx); err != nil {
		return err
	}
	need, err := s.rewrapNeeded(ctx)
	if err != nil || !need {
		return err
	}
	s.kek.mu.Lock()
	defer s.kek.mu.Unlock()
	s.startRewrapLocked()
	return nil
}

func (s *Service) rewrapNeeded(ctx context.Context) (bool, error) {
	target := s.keys.CurrentKEK()
	st, ok, err := s.loadKEKRotation(ctx)
	if err != nil {
		return false, err
	}
	if ok && (st.FinishedAt == nil || st.Target != target) {
		return true, nil
	}
	old, err := s.oldKEKs(ctx, target)
	if err != nil {
		return false, err
	}
	refs := 0
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		for _, l := range old {
			n, err := kekRefs(tx, l)
			if err != nil {
				return err
			}
			refs += n
		}
		return nil
	})
	if err != nil {
		return false, storeErr(err)
	}
	// Records that did not open in the last pass are not retried at every
	// start and sweep; anything beyond them is (a seal that was in flight
	// when the KEK changed).
	if ok && refs <= st.Failed {
		return false, nil
	}
	return refs > 0, nil
}

// startRewrapLocked starts the background re-wrap unless it runs. The
// caller holds s.kek.mu.
func (s *Service) startRewrapLocked() {
	if s.kek.running || s.bg.Err() != nil {
		return
	}
	s.kek.running = true
	done := make(chan struct{})
	s.kek.done = done
	s.bgWG.Add(1)
	go func() {
		defer s.bgWG.Done()
		err := s.rewrap(s.bg)
		s.kek.mu.Lock()
		s.kek.running = false
		s.kek.mu.Unlock()
		close(done)
		if err != nil {
			s.log.Warn("KEK re-wrap stopped; it resumes at the next start or maintenance sweep", "err", err)
		}
	}()
}

// rewrap moves every sealed record wrapped by an old KEK to the current
// one, resuming from the persisted state, until a pass finds nothing to do.
func (s *Service) rewrap(ctx context.Context) error {
	target := s.keys.CurrentKEK()
	st, ok, err := s.loadKEKRotation(ctx)
	if err != nil {
		return err
	}
	if !ok || st.Target != target || st.FinishedAt != nil {
		prev := st.Target
		if prev == target {
			prev = st.Previous
		}
		now := s.now()
		st = kekRotationRecord{Target: target, Previous: prev, StartedAt: now, UpdatedAt: now}
		if err := s.saveKEKRotation(ctx, st); err != nil {
			return err
		}
	}
	s.log.Info("KEK re-wrap running", "target", target, "pass", st.Pass, "rewrapped", st.Rewrapped)
	if err := s.rewrapStoreKey(ctx); err != nil {
		return err
	}
	for {
		old, err := s.oldKEKs(ctx, target)
		if err != nil {
			return err
		}
		start := 0
		for i, l := range old {
			if l == st.Source {
				start = i
			}
		}
		if st.Source != "" && (len(old) == 0 || old[start] != st.Source) {
			st.Source, st.Cursor = "", "" // its KEK is gone: nothing left there
		}
		for _, l := range old[start:] {
			if st.Source != l {
				st.Source, st.Cursor = l, ""
			}
			for {
				n, err := s.rewrapBatch(ctx, &st)
				if err != nil {
					return err
				}
				if n == 0 {
					break
				}
				if hook := s.kek.afterBatch; hook != nil {
					hook()
				}
			}
		}
		now := s.now()
		st.UpdatedAt = now
		if st.PassRewrapped == 0 {
			st.Failed, st.FinishedAt = st.PassFailed, &now
			st.Source, st.Cursor = "", ""
			if err := s.saveKEKRotation(ctx, st); err != nil {
				return err
			}
			s.log.Info("KEK re-wrap finished", "target", target, "rewrapped", st.Rewrapped, "failed", st.Failed)
			return nil
		}
		st.Pass++
		st.PassRewrapped, st.PassFailed, st.Source, st.Cursor = 0, 0, "", ""
		if err := s.saveKEKRotation(ctx, st); err != nil {
			return err
		}
	}
}

func (s *Service) saveKEKRotation(ctx context.Context, st kekRotationRecord) error {
	return s.saveKEKRotationAs(ctx, systemPrincipal, "hsm.kek_rewrap", st)
}

// saveKEKRotationAs records the rotation's state as a change of p's.
func (s *Service) saveKEKRotationAs(ctx context.Context, p Principal, action string, st kekRotationRecord) error {
	return storeErr(s.update(ctx, p, action, func(tx *kv.Txn, c *change) error {
		c.set("kek", st.Target, "previous", st.Previous, "pass", strconv.Itoa(st.Pass))
		if st.FinishedAt != nil {
			c.set("rewrapped", strconv.Itoa(st.Rewrapped), "failed", strconv.Itoa(st.Failed), "finished", "true")
		}
		return tx.Put(tableKeyState, stateKEKRotation, st)
	}))
}

type rewrapItem struct {
	id   string
	was  sealedRecord
	aad  []byte
	next *hsm.Sealed // nil: could not be re-wrapped
}

// rewrapBatch re-wraps the next batch of records under st.Source after
// st.Cursor and commits them with the new progress. It returns how many
// records it looked at (0: st.Source is done).
func (s *Service) rewrapBatch(ctx context.Context, st *kekRotationRecord) (int, error) {
	var items []rewrapItem
	errFull := errors.New("batch full")
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		size := 0
		err := tx.List(tableSealed, kv.Query{Index: indexKEK, Value: st.Source, After: st.Cursor, Limit: rewrapBatch}, func(id string, decode func(any) error) error {
			if size >= rewrapBatchBytes {
				return errFull
			}
			var r sealedRecord
			if err := decode(&r); err != nil {
				return err
			}
			it := rewrapItem{id: id, was: r}
			var sec secretRecord
			switch err := tx.Get(tableSecrets, id, &sec); {
			case err == nil:
				it.aad = secretAAD(sec.ProjectID, id, r.Version)
			case !errors.Is(err, kv.ErrNotFound):
				return err
			}
			if r.Sealed != nil {
				size += len(r.Sealed.Ciphertext)
			}
			items = append(items, it)
			return nil
		})
		if errors.Is(err, errFull) {
			return nil
		}
		return err
	})
	if err != nil {
		return 0, storeErr(err)
	}
	if len(items) == 0 {
		return 0, nil
	}
	for i := range items {
		it := &items[i]
		if it.aad == nil || it.was.Sealed == nil {
			s.log.Warn("KEK re-wrap: sealed record without its secret; left as it is", "secret", it.id, "kek", st.Source)
			continue
		}
		next, err := s.keys.Rewrap(ctx, it.was.Sealed, it.aad)
		if errors.Is(err, hsm.ErrOpen) {
			s.log.Warn("KEK re-wrap: sealed record does not open; left as it is", "secret", it.id, "kek", st.Source, "err", err)
			continue
		}
		if err != nil {
			return 0, hsmErr(fmt.Errorf("re-wrap secret %s: %w", it.id, err))
		}
		it.next = next
	}
	var next kekRotationRecord
	commit := func(tx *kv.Txn) error {
		next = *st
		written, failed := 0, 0
		for _, it := range items {
			if it.next == nil {
				failed++
				continue
			}
			var cur sealedRecord
			if err := tx.Get(tableSealed, it.id, &cur); err != nil {
				if errors.Is(err, kv.ErrNotFound) {
					continue // deleted or revoked meanwhile
				}
				return err
			}
			if !sameEnvelope(cur, it.was) {
				continue // rotated meanwhile: sealed anew with the current KEK
			}
			if err := putSealed(tx, it.id, sealedRecord{Version: cur.Version, Sealed: it.next}); err != nil {
				return err
			}
			written++
		}
		now := s.now()
		next.Cursor = items[len(items)-1].id
		next.Rewrapped += written
		next.PassRewrapped += written
		next.PassFailed += failed
		next.UpdatedAt = now
		return tx.Put(tableKeyState, stateKEKRotation, next)
	}
	// rewrapBatchBytes counts ciphertexts only: records with large key
	// values can still make a batch too big for one transaction. Then the
	// first half goes now (the cursor stops at its end) and the rest with
	// the next batch.
	for {
		err = s.update(ctx, systemPrincipal, "hsm.kek_rewrap", func(tx *kv.Txn, c *change) error {
			c.set("kek", st.Target, "records", strconv.Itoa(len(items)))
			return commit(tx)
		})
		if errors.Is(err, kv.ErrTxnTooBig) && len(items) > 1 {
			items = items[:len(items)/2]
			continue
		}
		break
	}
	if err != nil {
		return 0, storeErr(err)
	}
	*st = next
	return len(items), nil
}

// sameEnvelope reports whether a sealed record is still the one read.
func sameEnvelope(a, b sealedRecord) bool {
	if a.Version != b.Version || a.Sealed == nil || b.Sealed == nil {
		return false
	}
	return a.Sealed.KEK == b.Sealed.KEK && bytes.Equal(a.Sealed.WrapNonce, b.Sealed.WrapNonce) &&
		bytes.Equal(a.Sealed.WrappedDEK, b.Sealed.WrappedDEK)
}

// waitRewrap waits for a running re-wrap to end.
func (s *Service) waitRewrap(ctx context.Context) error {
	s.kek.mu.Lock()
	done := s.kek.done
	s.kek.mu.Unlock()
	if done == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// RotateKEK creates the next KEK version on the token, makes it current
// and starts re-wrapping every sealed record in the background. It returns
// the rotation as started.
func (s *Service) RotateKEK(ctx context.Context, g Grant) (KEKRotation, error) {
	if err := g.require(ActManageKeys); err != nil {
		return KEKRotation{}, err
	}
	s.kek.mu.Lock()
	defer s.kek.mu.Unlock()
	if err := s.refuseDuringRotationLocked(ctx, "start another"); err != nil {
		return KEKRotation{}, err
	}
	// The token changes first and the store records it after: ask the
	// audit trail before the change it could not record.
	if err := s.auditAdmits(); err != nil {
		return KEKRotation{}, err
	}
	prev := s.keys.CurrentKEK()
	label, err := s.keys.RotateKEK(ctx)
	if err != nil {
		return KEKRotation{}, hsmErr(fmt.Errorf("rotate KEK: %w", err))
	}
	now := s.now()
	st := kekRotationRecord{Target: label, Previous: prev, StartedAt: now, UpdatedAt: now}
	if err := s.saveKEKRotationAs(ctx, g.principal, "hsm.kek_rotate", st); err != nil {
		// The token is ahead of the store: the next start or sweep
		// notices the old records and re-wraps them.
		return KEKRotation{}, err
	}
	var remaining int
	if err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		remaining, err = kekRefs(tx, prev)
		return err
	}); err != nil {
		s.log.Warn("count records to re-wrap", "err", err)
	}
	s.log.Info("KEK rotated; re-wrapping sealed records", "from", prev, "to", label, "records", remaining)
	if err := s.keepIntermediate(ctx); err != nil {
		s.log.Warn("intermediate key of the new KEK not kept; the next start makes another", "kek", label, "err", err)
	}
	s.startRewrapLocked()
	return KEKRotation{Target: label, Previous: prev, State: RotationRunning, Remaining: remaining, StartedAt: now}, nil
}

// refuseDuringRotationLocked returns a conflict while a rotation runs or is
// unfinished (and restarts an interrupted one). The caller holds s.kek.mu.
func (s *Service) refuseDuringRotationLocked(ctx context.Context, what string) error {
	if s.kek.running {
		return Conflict(CodeConflict, "a KEK rotation is running; cannot %s until it is done (see coffer hsm keys)", what)
	}
	st, ok, err := s.loadKEKRotation(ctx)
	if err != nil {
		return err
	}
	if ok && (st.FinishedAt == nil || st.Target != s.keys.CurrentKEK()) {
		s.startRewrapLocked()
		return Conflict(CodeConflict, "an interrupted KEK rotation to %s is resuming; cannot %s until it is done (see coffer hsm keys)", st.Target, what)
	}
	return nil
}

// RemoveKEKOptions modify RemoveKEK.
type RemoveKEKOptions struct {
	// Force removes a KEK the Kubernetes KMS may still need (kms.go): the
	// operator says every Secret was rewritten under a newer key id.
	// Nothing else is forced.
	Force bool
}

// RemoveKEK destroys an old KEK on the token once no sealed record uses
// it and the Kubernetes KMS no longer needs it (kms.go). The current KEK,
// a KEK still in use and any removal during a rotation are conflicts.
func (s *Service) RemoveKEK(ctx context.Context, g Grant, label string, opts RemoveKEKOptions) error {
	if err := g.require(ActManageKeys); err != nil {
		return err
	}
	s.kek.mu.Lock()
	defer s.kek.mu.Unlock()
	keks, err := s.keys.KEKs(ctx)
	if err != nil {
		return hsmErr(fmt.Errorf("list KEKs: %w", err))
	}
	found := false
	for _, k := range keks {
		found = found || k.Label == label
	}
	if !found {
		return NotFound("no KEK %q on the HSM token", label)
	}
	if label == s.keys.CurrentKEK() {
		return Conflict(CodeConflict, "KEK %s is the current KEK", label)
	}
	if err := s.refuseDuringRotationLocked(ctx, "remove a KEK"); err != nil {
		return err
	}
	var refs int
	if err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		refs, err = kekRefs(tx, label)
		return err
	}); err != nil {
		return storeErr(err)
	}
	if refs > 0 {
		return Conflict(CodeConflict, "KEK %s still wraps %d sealed records; rotate the KEK first", label, refs)
	}
	switch sk, err := s.storeKeyKEK(); {
	case err != nil:
		return fmt.Errorf("remove KEK %s: %w", label, err)
	case sk == label:
		return Conflict(CodeConflict, "KEK %s still seals the store key (%s); rotate the KEK first", label, storeKeyName)
	}
	if !opts.Force {
		if err := s.kmsKEKInUse(ctx, label); err != nil {
			return err
		}
	}
	if err := s.auditAdmits(); err != nil { // before the change, as RotateKEK
		return err
	}
	switch err := s.keys.DestroyKEK(ctx, label); {
	case errors.Is(err, hsm.ErrKeyNotFound):
		return NotFound("no KEK %q on the HSM token", label)
	case errors.Is(err, hsm.ErrKeyCurrent):
		return Conflict(CodeConflict, "KEK %s is the current KEK", label)
	case err != nil:
		return hsmErr(fmt.Errorf("destroy KEK %s: %w", label, err))
	}
	// The change is on the token; its record goes to the store's trail.
	return storeErr(s.update(ctx, g.principal, "hsm.kek_remove", func(tx *kv.Txn, c *change) error {
		c.set("kek", label)
		if opts.Force {
			c.set("force", "true")
		}
		return forgetIntermediate(tx, label)
	}))
}

// HSMKeys lists the KEK versions and signing keys on the token with what
// uses them, and the progress of the last KEK rotation.
func (s *Service) HSMKeys(ctx context.Context, g Grant) (HSMKeys, error) {
	if err := g.require(ActManageKeys); err != nil {
		return HSMKeys{}, err
	}
	keks, err := s.keys.KEKs(ctx)
	if err != nil {
		return HSMKeys{}, hsmErr(fmt.Errorf("list KEKs: %w", err))
	}
	sigs, err := s.signingKeys(ctx)
	if err != nil {
		return HSMKeys{}, err
	}
	st, ok, err := s.loadKEKRotation(ctx)
	if err != nil {
		return HSMKeys{}, err
	}
	out := HSMKeys{SigningKeys: sigs}
	remaining := 0
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		out.KEKs = out.KEKs[:0]
		remaining = 0
		for _, k := range keks {
			n, err := kekRefs(tx, k.Label)
			if err != nil {
				return err
			}
			out.KEKs = append(out.KEKs, KEKVersion{Label: k.Label, Version: k.Version, Current: k.Current, Scheme: k.Scheme, Records: n})
			if !k.Current {
				remaining += n
			}
		}
		return nil
	})
	if err != nil {
		return HSMKeys{}, storeErr(err)
	}
	if ok {
		s.kek.mu.Lock()
		running := s.kek.running
		s.kek.mu.Unlock()
		r := KEKRotation{
			Target: st.Target, Previous: st.Previous, Rewrapped: st.Rewrapped, Failed: st.Failed,
			Remaining: remaining, StartedAt: st.StartedAt, FinishedAt: st.FinishedAt,
		}
		switch {
		case running:
			r.State = RotationRunning
			r.FinishedAt = nil
		case st.FinishedAt != nil:
			r.State = RotationDone
		default:
			r.State = RotationInterrupted
		}
		out.Rotation = &r
	}
	return out, nil
}

// resumeInterruptedRotation restarts a re-wrap that stopped on an error;
// the maintenance sweep calls it.
func (s *Service) resumeInterruptedRotation(ctx context.Context) {
	need, err := s.rewrapNeeded(ctx)
	if err != nil {
		s.log.Warn("KEK rotation check failed", "err", err)
		return
	}
	if need {
		s.kek.mu.Lock()
		s.startRewrapLocked()
		s.kek.mu.Unlock()
	}
}
