package daemon

// Kubernetes KMS v2 (served over gRPC by k8s/kms). kube-apiserver makes a
// DEK seed, has the plugin encrypt it, and keeps the ciphertext with every
// object the DEK encrypts in etcd. coffer seals the seed the way it seals a
// secret's payload (hsm Seal: a fresh DEK in Go, wrapped by the HSM's
// current KEK in one HSM call) with an AAD of its own, so a KMS ciphertext
// never opens as a secret's envelope, nor the reverse.
//
// key_id is the label of the KEK that wraps (coffer-kek-N): public, and it
// changes with coffer hsm rotate-kek, which tells kube-apiserver (it polls
// Status) to make a new DEK under the new KEK. Ciphertexts under an older
// KEK keep decrypting until that KEK is removed.
//
// Every Encrypt and Decrypt is counted per key id (tableKMSKeys, one small
// record per key id). The first use of a key id in a daemon's life is
// written before the call returns (a crash must not lose the only evidence
// that a KEK wrapped DEKs); later ones are counted in memory and written
// every kmsFlushEvery and when the daemon stops: never a write per call.
// The records are what RemoveKEK asks (kmsKEKInUse): coffer cannot see
// etcd, and silence proves nothing (kube-apiserver caches DEKs and serves
// reads from its watch cache), so a KEK the KMS ever used is removed only
// with --force: the operator's statement that every Secret was rewritten.

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/metrics"
)

const (
	// KMSAnnotationScheme is the one annotation coffer puts on a KMS
	// ciphertext: the version of its envelope. KMS v2 wants annotation
	// keys that are fully qualified domain names (no "/").
	KMSAnnotationScheme = "scheme.kms.coffer.dev"
	// KMSHealthy is the healthz of a healthy plugin, as KMS v2 wants it.
	KMSHealthy = "ok"
	// KMSMaxPlaintext bounds what Encrypt seals: kube-apiserver sends a
	// 32-byte seed (or key); the ciphertext must stay under KMS v2's 1 KiB.
	KMSMaxPlaintext = 128
	// KMSMaxCiphertext is KMS v2's bound on an encrypted DEK source.
	KMSMaxCiphertext = 1024
	// CodeKEKInUse: RemoveKEK of a KEK the Kubernetes KMS may still need.
	CodeKEKInUse = "kek_in_use"

	tableKMSKeys = "kms_keys"

	// kmsEnvelopeV1 is the first byte of a KMS ciphertext, and the value
	// (in decimal) of its scheme annotation.
	kmsEnvelopeV1 byte = 1
	// kmsAAD binds every KMS seal to its purpose and envelope version;
	// secrets use "coffer/secret/v1\x00...", the store key its own.
	kmsAAD = "coffer/k8s-kms/v2\x00"

	kmsFlushEvery  = 30 * time.Second
	kmsHealthEvery = 10 * time.Second
	// kmsMaxLabel bounds a KEK label inside an envelope.
	kmsMaxLabel  = 128
	kmsMaxScheme = 64
)

// kmsScheme is the annotation value of envelope version v1.
var kmsSchemeV1 = []byte(strconv.Itoa(int(kmsEnvelopeV1)))

// KMSKey is what the KMS did with one key id (a KEK label): counts and
// times, nothing secret. It is its wire form as is (coffer k8s kms-keys).
type KMSKey = api.KMSKey

// kmsKeyRecord is a KMSKey in the store (tableKMSKeys, by key id).
type kmsKeyRecord struct {
	Encrypts       int64      `json:"encrypts"`
	Decrypts       int64      `json:"decrypts"`
	FirstEncryptAt *time.Time `json:"first_encrypt_at,omitempty"`
	LastEncryptAt  *time.Time `json:"last_encrypt_at,omitempty"`
	LastDecryptAt  *time.Time `json:"last_decrypt_at,omitempty"`
	RetiredAt      *time.Time `json:"retired_at,omitempty"`
	// UsageUnknown: set by a restore for every retired KEK on the token
	// (the backup may predate its use).
	UsageUnknown bool `json:"usage_unknown,omitempty"`
}

// used reports whether the KMS may have wrapped DEKs under the key id.
func (r kmsKeyRecord) used() bool { return r.Encrypts > 0 || r.Decrypts > 0 || r.UsageUnknown }

// kmsUse is what happened to one key id since the last flush.
type kmsUse struct {
	encrypts, decrypts        int64
	firstEncrypt, lastEncrypt time.Time
	lastDecrypt               time.Time
}

// kmsState is the Service's KMS state in memory.
type kmsState struct {
	mu      sync.Mutex
	pending map[string]*kmsUse // key id -> uses not yet in the store
	stored  map[string]bool    // key ids whose record this daemon wrote (mu)
	// flushMu: one store write of the usage at a time (a flush, a first
	// use), and RemoveKEK's check sees none half-done.
	flushMu sync.Mutex
	loop    sync.Once // starts the flush loop

	// afterTake, in tests, runs in flushKMS between taking the pending uses
	// and writing them.
	afterTake func()

	healthMu  sync.Mutex
	healthAt  time.Time // when health was last known
	healthErr error
	lastOK    atomic.Int64 // unix ns of the last HSM op that succeeded
}

// KMSEncrypt seals a DEK seed with the current KEK. It returns the
// ciphertext, the key id (the KEK's label) and the annotations Decrypt
// needs back.
func (s *Service) KMSEncrypt(ctx context.Context, plaintext []byte) ([]byte, string, map[string][]byte, error) {
	if len(plaintext) == 0 || len(plaintext) > KMSMaxPlaintext {
		return nil, "", nil, Invalid(CodeInvalidArgument, "the plaintext to encrypt is %d bytes; want 1 to %d", len(plaintext), KMSMaxPlaintext)
	}
	s.kmsStartLoop()
	sealed, err := s.kmsSeal(ctx, plaintext)
	if err != nil {
		return nil, "", nil, hsmErr(fmt.Errorf("kms encrypt: %w", err))
	}
	s.kms.lastOK.Store(time.Now().UnixNano())
	ct, err := encodeKMSEnvelope(sealed)
	if err != nil {
		return nil, "", nil, fmt.Errorf("kms encrypt: %w", err)
	}
	// The ciphertext leaves only once its key id's use is on record.
	if err := s.kmsCount(ctx, sealed.KEK, true); err != nil {
		return nil, "", nil, fmt.Errorf("kms encrypt: record the use of %s: %w", sealed.KEK, err)
	}
	return ct, sealed.KEK, map[string][]byte{KMSAnnotationScheme: slices.Clone(kmsSchemeV1)}, nil
}

// directSealer seals with the DEK wrapped by the KEK itself (hsm.HSM),
// whatever the intermediate key mode.
type directSealer interface {
	SealDirect(ctx context.Context, plaintext, aad []byte) (*hsm.Sealed, error)
}

// kmsSeal seals a KMS seed without an intermediate key: the KMS
// ciphertext's binary form has no field for one, and kube-apiserver
// decrypts a seed rarely (it caches the DEKs it derives).
func (s *Service) kmsSeal(ctx context.Context, plaintext []byte) (*hsm.Sealed, error) {
	ds, ok := s.rawKeys.(directSealer)
	if !ok {
		return s.keys.Seal(ctx, plaintext, kmsAADv1())
	}
	start := time.Now()
	sealed, err := ds.SealDirect(ctx, plaintext, kmsAADv1())
	if obs, isObs := s.keys.(observedKeys); isObs {
		obs.done(metrics.OpSeal, start, err)
	}
	if err == nil && sealed.Intermediate != nil {
		return nil, errors.New("the KMS seal has an intermediate key")
	}
	return sealed, err
}

// KMSDecrypt opens a ciphertext KMSEncrypt made. keyID must be the key id
// Encrypt returned with it (the KEK inside the envelope), annotations the
// ones it returned.
func (s *Service) KMSDecrypt(ctx context.Context, ciphertext []byte, keyID string, annotations map[string][]byte) ([]byte, error) {
	sealed, err := DecodeKMSEnvelope(ciphertext)
	if err != nil {
		return nil, err
	}
	if err := checkKMSAnnotations(annotations); err != nil {
		return nil, err
	}
	if keyID != sealed.KEK {
		return nil, Invalid(CodeInvalidArgument, "key id %q is not the key id of the ciphertext (%q)", kmsShow(keyID), sealed.KEK)
	}
	if !s.isKEKLabel(sealed.KEK) {
		// Not a KEK's label (the import or signing key, say): no HSM call.
		return nil, Invalid(CodeInvalidArgument, "key id %q is not a KEK of this coffer", sealed.KEK)
	}
	s.kmsStartLoop()
	pt, err := s.keys.Unseal(ctx, sealed, kmsAADv1())
	switch {
	case errors.Is(err, hsm.ErrKeyNotFound) || errors.Is(err, hsm.ErrOpen) && !s.kekPresent(ctx, sealed.KEK):
		return nil, NotFound("key id %s: its KEK is not on the HSM token (removed)", sealed.KEK)
	case errors.Is(err, hsm.ErrOpen):
		return nil, Invalid(CodeInvalidArgument, "the ciphertext does not open under key id %s", sealed.KEK)
	case err != nil:
		return nil, hsmErr(fmt.Errorf("kms decrypt under %s: %w", sealed.KEK, err))
	}
	s.kms.lastOK.Store(time.Now().UnixNano())
	if err := s.kmsCount(ctx, sealed.KEK, false); err != nil {
		// The plaintext goes back all the same (kube-apiserver must read
		// its Secrets); the use stays in memory for the next flush.
		s.log.Warn("kms decrypt: recording the first use of a key id failed; it is kept in memory for the next flush", "key_id", sealed.KEK, "err", err)
	}
	return pt, nil
}

// isKEKLabel reports whether label names a version of the KEK: the
// current KEK's label or another version of it (coffer-kek-N), never the
// signing or import key. It asks no HSM.
func (s *Service) isKEKLabel(label string) bool {
	current := s.keys.CurrentKEK()
	if label == current {
		return true
	}
	cb, _, ok := hsm.ParseKeyLabel(current)
	if !ok {
		return false
	}
	b, _, ok := hsm.ParseKeyLabel(label)
	return ok && b == cb
}

// kekPresent reports whether the token holds KEK label (true when it
// cannot tell). Only failures ask it.
func (s *Service) kekPresent(ctx context.Context, label string) bool {
	keks, err := s.keys.KEKs(ctx)
	if err != nil {
		return true
	}
	return slices.ContainsFunc(keks, func(k hsm.KeyVersion) bool { return k.Label == label })
}

// KMSStatus is the plugin's health and the key id Encrypt uses now.
type KMSStatus struct {
	Healthy bool
	Healthz string // KMSHealthy, or why not
	KeyID   string
}

// KMSStatus reports the current key id and whether the HSM answers. It is
// cheap: kube-apiserver asks every minute (and more often while
// unhealthy); an Encrypt or Decrypt that worked, or a check, within
// kmsHealthEvery answers for the HSM.
func (s *Service) KMSStatus(ctx context.Context) KMSStatus {
	s.kmsStartLoop()
	st := KMSStatus{KeyID: s.keys.CurrentKEK(), Healthy: true, Healthz: KMSHealthy}
	now := time.Now()
	if ok := s.kms.lastOK.Load(); ok != 0 && now.Sub(time.Unix(0, ok)) < kmsHealthEvery {
		return st
	}
	s.kms.healthMu.Lock()
	defer s.kms.healthMu.Unlock()
	if s.kms.healthAt.IsZero() || now.Sub(s.kms.healthAt) >= kmsHealthEvery {
		cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err := s.keys.Check(cctx)
		cancel()
		if err != nil {
			s.log.Warn("kms status: the HSM does not answer", "err", err)
		}
		s.kms.healthErr, s.kms.healthAt = err, time.Now()
	}
	if s.kms.healthErr != nil {
		st.Healthy, st.Healthz = false, "the HSM is unavailable"
	}
	return st
}

// KMSKeys lists the key ids the KMS used, with counts and times, and
// whether removing each needs --force.
func (s *Service) KMSKeys(ctx context.Context, g Grant) ([]KMSKey, error) {
	if err := g.require(ActManageKeys); err != nil {
		return nil, err
	}
	keks, err := s.keys.KEKs(ctx)
	if err != nil {
		return nil, hsmErr(fmt.Errorf("list KEKs: %w", err))
	}
	present := map[string]bool{}
	for _, k := range keks {
		present[k.Label] = true
	}
	recs, err := s.kmsRecords(ctx)
	if err != nil {
		return nil, err
	}
	current := s.keys.CurrentKEK()
	out := make([]KMSKey, 0, len(recs))
	for id, r := range recs {
		k := KMSKey{
			KeyID: id, Current: id == current, Present: present[id], Encrypts: r.Encrypts, Decrypts: r.Decrypts,
			FirstEncryptAt: r.FirstEncryptAt, LastEncryptAt: r.LastEncryptAt, LastDecryptAt: r.LastDecryptAt, RetiredAt: r.RetiredAt,
			UsageUnknown: r.UsageUnknown, NeedsForce: id != current && present[id] && r.used(),
		}
		out = append(out, k)
	}
	slices.SortFunc(out, func(a, b KMSKey) int {
		_, va, _ := hsm.ParseKeyLabel(a.KeyID)
		_, vb, _ := hsm.ParseKeyLabel(b.KeyID)
		if va != vb {
			return va - vb
		}
		return strings.Compare(a.KeyID, b.KeyID)
	})
	return out, nil
}

// kmsRecords reads the stored records and adds what is pending in memory.
func (s *Service) kmsRecords(ctx context.Context) (map[string]kmsKeyRecord, error) {
	recs := map[string]kmsKeyRecord{}
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		clear(recs)
		return tx.List(tableKMSKeys, kv.Query{}, func(id string, decode func(any) error) error {
			var r kmsKeyRecord
			if err := decode(&r); err != nil {
				return err
			}
			recs[id] = r
			return nil
		})
	})
	if err != nil {
		return nil, storeErr(err)
	}
	s.kms.mu.Lock()
	for id, u := range s.kms.pending {
		r := recs[id]
		u.addTo(&r)
		recs[id] = r
	}
	s.kms.mu.Unlock()
	return recs, nil
}

// kmsKEKInUse is RemoveKEK's question (without --force): a conflict when
// the Kubernetes KMS ever used the KEK (see the top of this file). It holds
// flushMu, so a flush that took the pending uses but has not committed
// them yet cannot hide them.
func (s *Service) kmsKEKInUse(ctx context.Context, label string) error {
	s.kms.flushMu.Lock()
	defer s.kms.flushMu.Unlock()
	var r kmsKeyRecord
	err := s.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableKMSKeys, label, &r) })
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return storeErr(err)
	}
	s.kms.mu.Lock()
	if u := s.kms.pending[label]; u != nil {
		u.addTo(&r)
	}
	s.kms.mu.Unlock()
	if !r.used() {
		return nil
	}
	now := s.now()
	if r.RetiredAt == nil {
		// Not seen retired yet (the flush records it): from now on.
		if err := s.kmsRetire(ctx, label, now); err != nil {
			return err
		}
	}
	usage := fmt.Sprintf("%d encrypts, %d decrypts", r.Encrypts, r.Decrypts)
	if t := latest(r.LastEncryptAt, r.LastDecryptAt); t != nil {
		usage += fmt.Sprintf(", last used %s, %s ago", t.Format(time.RFC3339), now.Sub(*t).Truncate(time.Second))
	}
	if r.UsageUnknown {
		usage += "; usage since the store's restore from a backup unknown"
	}
	return Conflict(CodeKEKInUse, "KEK %s may have wrapped Kubernetes KMS DEKs (%s): etcd may still hold objects under it, and "+
		"kube-apiserver caches DEKs and serves reads from its watch cache, so a quiet KEK is no proof. "+
		"Rewrite every Secret (kubectl get secrets -A -o json | kubectl replace -f -), restart kube-apiserver, "+
		"check 'coffer k8s kms-keys' on every host that shares the HSM, then remove it with --force",
		label, usage)
}

func latest(ts ...*time.Time) *time.Time {
	var out *time.Time
	for _, t := range ts {
		if t != nil && (out == nil || t.After(*out)) {
			out = t
		}
	}
	return out
}

// kmsCount records one Encrypt (or Decrypt) under key id. The first use
// of a key id in this daemon's life is written to the store before it
// returns; later ones wait in memory for the flush.
func (s *Service) kmsCount(ctx context.Context, id string, encrypt bool) error {
	now := s.now()
	s.kms.mu.Lock()
	if s.kms.stored[id] {
		s.kms.pendingUse(id).count(encrypt, now)
		s.kms.mu.Unlock()
		return nil
	}
	s.kms.mu.Unlock()
	return s.kmsFirstUse(ctx, id, encrypt, now)
}

// kmsFirstUse writes the record of key id with this use, in one change
// (k8s.kms_usage) through the audited path the flush takes. What it could
// not write stays pending.
func (s *Service) kmsFirstUse(ctx context.Context, id string, encrypt bool, now time.Time) error {
	s.kms.flushMu.Lock()
	defer s.kms.flushMu.Unlock()
	s.kms.mu.Lock()
	if s.kms.stored[id] { // another call wrote it meanwhile
		s.kms.pendingUse(id).count(encrypt, now)
		s.kms.mu.Unlock()
		return nil
	}
	s.kms.mu.Unlock()
	u := &kmsUse{}
	u.count(encrypt, now)
	err := s.update(ctx, systemPrincipal, "k8s.kms_usage", func(tx *kv.Txn, c *change) error {
		var r kmsKeyRecord
		if err := tx.Get(tableKMSKeys, id, &r); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		u.addTo(&r)
		c.set("key_id", id, "first_use", "true")
		return tx.Put(tableKMSKeys, id, r)
	})
	s.kms.mu.Lock()
	defer s.kms.mu.Unlock()
	if err != nil {
		s.kms.pendingUse(id).merge(u)
		return storeErr(err)
	}
	s.kms.markStored(id)
	return nil
}

// count adds one use at now.
func (u *kmsUse) count(encrypt bool, now time.Time) {
	if encrypt {
		u.encrypts++
		if u.firstEncrypt.IsZero() {
			u.firstEncrypt = now
		}
		u.lastEncrypt = now
	} else {
		u.decrypts++
		u.lastDecrypt = now
	}
}

// markStored notes that id's record is in the store; the caller holds k.mu.
func (k *kmsState) markStored(id string) {
	if k.stored == nil {
		k.stored = map[string]bool{}
	}
	k.stored[id] = true
}

// kmsRetire records that key id (a KEK that is not current) was retired
// at, unless a retirement is recorded already.
func (s *Service) kmsRetire(ctx context.Context, id string, at time.Time) error {
	return storeErr(s.update(ctx, systemPrincipal, "k8s.kms_usage", func(tx *kv.Txn, c *change) error {
		var r kmsKeyRecord
		if err := tx.Get(tableKMSKeys, id, &r); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		if r.RetiredAt != nil {
			return nil
		}
		r.RetiredAt = &at
		c.set("key_id", id, "retired", "true")
		return tx.Put(tableKMSKeys, id, r)
	}))
}

// pendingUse returns the pending uses of id; the caller holds k.mu.
func (k *kmsState) pendingUse(id string) *kmsUse {
	if k.pending == nil {
		k.pending = map[string]*kmsUse{}
	}
	u := k.pending[id]
	if u == nil {
		u = &kmsUse{}
		k.pending[id] = u
	}
	return u
}

// addTo adds the uses to a record.
func (u *kmsUse) addTo(r *kmsKeyRecord) {
	r.Encrypts += u.encrypts
	r.Decrypts += u.decrypts
	if !u.firstEncrypt.IsZero() && (r.FirstEncryptAt == nil || u.firstEncrypt.Before(*r.FirstEncryptAt)) {
		t := u.firstEncrypt
		r.FirstEncryptAt = &t
	}
	if !u.lastEncrypt.IsZero() && (r.LastEncryptAt == nil || u.lastEncrypt.After(*r.LastEncryptAt)) {
		t := u.lastEncrypt
		r.LastEncryptAt = &t
	}
	if !u.lastDecrypt.IsZero() && (r.LastDecryptAt == nil || u.lastDecrypt.After(*r.LastDecryptAt)) {
		t := u.lastDecrypt
		r.LastDecryptAt = &t
	}
}

// merge adds o's uses to u.
func (u *kmsUse) merge(o *kmsUse) {
	u.encrypts += o.encrypts
	u.decrypts += o.decrypts
	if !o.firstEncrypt.IsZero() && (u.firstEncrypt.IsZero() || o.firstEncrypt.Before(u.firstEncrypt)) {
		u.firstEncrypt = o.firstEncrypt
	}
	if o.lastEncrypt.After(u.lastEncrypt) {
		u.lastEncrypt = o.lastEncrypt
	}
	if o.lastDecrypt.After(u.lastDecrypt) {
		u.lastDecrypt = o.lastDecrypt
	}
}

// kmsStartLoop starts the flush loop once, on the first KMS call (the
// daemon serves no KMS without one).
func (s *Service) kmsStartLoop() {
	s.kms.loop.Do(func() {
		if s.bg.Err() != nil {
			return
		}
		s.bgWG.Add(1)
		go func() {
			defer s.bgWG.Done()
			s.kmsFlushLoop(s.bg)
		}()
	})
}

// kmsFlushLoop writes the pending uses every kmsFlushEvery, and once more
// when ctx ends (the daemon stops).
func (s *Service) kmsFlushLoop(ctx context.Context) {
	t := time.NewTicker(kmsFlushEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			s.logKMSFlush(s.flushKMS(fctx))
			cancel()
			return
		case <-t.C:
			s.logKMSFlush(s.flushKMS(ctx))
		}
	}
}

func (s *Service) logKMSFlush(err error) {
	if err != nil {
		s.log.Warn("writing the Kubernetes KMS key usage failed; it is kept in memory for the next try", "err", err)
	}
}

// flushKMS writes the uses kept in memory into the key ids' records, and
// records the retirement of key ids no longer current, in one change
// (k8s.kms_usage, by the daemon). What it could not write stays pending.
func (s *Service) flushKMS(ctx context.Context) error {
	s.kms.flushMu.Lock()
	defer s.kms.flushMu.Unlock()
	current := s.keys.CurrentKEK()
	// Key ids stored as current but no longer current are retired now.
	var retire []string
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		retire = retire[:0]
		return tx.List(tableKMSKeys, kv.Query{}, func(id string, decode func(any) error) error {
			var r kmsKeyRecord
			if err := decode(&r); err != nil {
				return err
			}
			if id != current && r.RetiredAt == nil {
				retire = append(retire, id)
			}
			return nil
		})
	})
	if err != nil {
		return storeErr(err)
	}
	s.kms.mu.Lock()
	batch := s.kms.pending
	s.kms.pending = nil
	s.kms.mu.Unlock()
	if len(batch) == 0 && len(retire) == 0 {
		return nil
	}
	if s.kms.afterTake != nil {
		s.kms.afterTake()
	}
	var written []string
	now := s.now()
	err = s.update(ctx, systemPrincipal, "k8s.kms_usage", func(tx *kv.Txn, c *change) error {
		ids := slices.Collect(maps.Keys(batch))
		for _, id := range retire {
			if batch[id] == nil {
				ids = append(ids, id)
			}
		}
		slices.Sort(ids)
		written = written[:0]
		for _, id := range ids {
			var r kmsKeyRecord
			err := tx.Get(tableKMSKeys, id, &r)
			if err != nil && !errors.Is(err, kv.ErrNotFound) {
				return err
			}
			if u := batch[id]; u != nil {
				if errors.Is(err, kv.ErrNotFound) && u.encrypts == 0 && u.decrypts == 0 {
					continue // only looked at (RemoveKEK): nothing to keep
				}
				u.addTo(&r)
			}
			if id != current && r.RetiredAt == nil {
				t := now
				r.RetiredAt = &t
			}
			if err := tx.Put(tableKMSKeys, id, r); err != nil {
				return err
			}
			written = append(written, id)
		}
		c.set("key_ids", strconv.Itoa(len(written)))
		return nil
	})
	if err != nil {
		// Back into memory, for the next flush.
		s.kms.mu.Lock()
		for id, u := range batch {
			s.kms.pendingUse(id).merge(u)
		}
		s.kms.mu.Unlock()
		return storeErr(err)
	}
	s.kms.mu.Lock()
	for _, id := range written {
		s.kms.markStored(id)
	}
	s.kms.mu.Unlock()
	return nil
}

// markKMSRestored runs when a store is restored from a backup (offline):
// the backup may predate the KMS's use of any KEK still on the token, and
// the token is not rolled back with the store. So every KEK on the token
// but the current one is marked used by the KMS with its usage unknown,
// retired now: removing it needs --force. It returns how many it marked.
func markKMSRestored(ctx context.Context, store *kv.Store, keys Keys, now time.Time) (int, error) {
	keks, err := keys.KEKs(ctx)
	if err != nil {
		return 0, fmt.Errorf("list the KEKs on the token: %w", err)
	}
	current := keys.CurrentKEK()
	n := 0
	err = store.Update(ctx, func(tx *kv.Txn) error {
		n = 0
		for _, k := range keks {
			if k.Label == current {
				continue
			}
			var r kmsKeyRecord
			if err := tx.Get(tableKMSKeys, k.Label, &r); err != nil && !errors.Is(err, kv.ErrNotFound) {
				return err
			}
			r.UsageUnknown = true
			if r.RetiredAt == nil {
				t := now
				r.RetiredAt = &t
			}
			if err := tx.Put(tableKMSKeys, k.Label, r); err != nil {
				return err
			}
			n++
		}
		return nil
	})
	return n, err
}

// kmsAADv1 is the AAD of an envelope of version 1.
func kmsAADv1() []byte { return []byte(kmsAAD + "1") }

// checkKMSAnnotations accepts exactly the annotations Encrypt returns.
func checkKMSAnnotations(a map[string][]byte) error {
	v, ok := a[KMSAnnotationScheme]
	if !ok {
		return Invalid(CodeInvalidArgument, "the annotation %s is missing", KMSAnnotationScheme)
	}
	if !bytes.Equal(v, kmsSchemeV1) {
		return Invalid(CodeInvalidArgument, "annotation %s is %q; this coffer knows scheme %s", KMSAnnotationScheme, kmsShow(string(v)), kmsSchemeV1)
	}
	if len(a) != 1 {
		return Invalid(CodeInvalidArgument, "unexpected annotations: coffer sets %s only", KMSAnnotationScheme)
	}
	return nil
}

// kmsShow bounds a value from the caller before it goes into a message.
func kmsShow(s string) string {
	if len(s) > 64 {
		s = s[:64] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}

// A KMS ciphertext (envelope version 1) is
//
//	0x01 || field(kek label) || field(scheme) || field(wrap nonce) ||
//	field(wrapped DEK) || field(nonce) || field(ciphertext)
//
// where field(b) is a big-endian uint16 length and b: the hsm.Sealed of the
// seed, in binary (kube-apiserver keeps it once per DEK, and bounds it to
// 1 KiB). Nothing in it is secret; the KEK label is its key id.

// encodeKMSEnvelope encodes s.
func encodeKMSEnvelope(s *hsm.Sealed) ([]byte, error) {
	fields := [][]byte{[]byte(s.KEK), []byte(s.Scheme), s.WrapNonce, s.WrappedDEK, s.Nonce, s.Ciphertext}
	n := 1
	for _, f := range fields {
		n += 2 + len(f)
	}
	if n > KMSMaxCiphertext {
		return nil, fmt.Errorf("the envelope is %d bytes, over KMS v2's %d", n, KMSMaxCiphertext)
	}
	out := make([]byte, 0, n)
	out = append(out, kmsEnvelopeV1)
	for _, f := range fields {
		out = binary.BigEndian.AppendUint16(out, uint16(len(f)))
		out = append(out, f...)
	}
	return out, nil
}

// DecodeKMSEnvelope parses a KMS ciphertext. It checks the form only; the
// HSM and AES-GCM check the rest.
func DecodeKMSEnvelope(b []byte) (*hsm.Sealed, error) {
	bad := func(format string, args ...any) (*hsm.Sealed, error) {
		return nil, Invalid(CodeInvalidArgument, "not a coffer KMS ciphertext: "+format, args...)
	}
	if len(b) == 0 {
		return bad("empty")
	}
	if len(b) > KMSMaxCiphertext {
		return bad("%d bytes, over %d", len(b), KMSMaxCiphertext)
	}
	if b[0] != kmsEnvelopeV1 {
		return bad("unknown version %d", b[0])
	}
	rest := b[1:]
	var fields [6][]byte
	for i := range fields {
		if len(rest) < 2 {
			return bad("truncated")
		}
		n := int(binary.BigEndian.Uint16(rest))
		rest = rest[2:]
		if n > len(rest) {
			return bad("truncated")
		}
		fields[i], rest = rest[:n:n], rest[n:]
	}
	if len(rest) != 0 {
		return bad("%d trailing bytes", len(rest))
	}
	label, scheme := fields[0], fields[1]
	switch {
	case len(label) == 0 || len(label) > kmsMaxLabel || !printable(label):
		return bad("bad key label")
	case len(scheme) > kmsMaxScheme || !printable(scheme):
		return bad("bad scheme")
	case len(fields[3]) == 0:
		return bad("no wrapped key")
	case len(fields[4]) != 12:
		return bad("nonce of %d bytes", len(fields[4]))
	case len(fields[5]) < 16:
		return bad("ciphertext too short")
	}
	return &hsm.Sealed{
		KEK: string(label), Scheme: string(scheme),
		WrapNonce: slices.Clone(fields[2]), WrappedDEK: slices.Clone(fields[3]),
		Nonce: slices.Clone(fields[4]), Ciphertext: slices.Clone(fields[5]),
	}, nil
}

// printable: ASCII from '!' to '~'.
func printable(b []byte) bool {
	for _, c := range b {
		if c < '!' || c > '~' {
			return false
		}
	}
	return true
}
