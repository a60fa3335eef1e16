package daemon

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableSecrets = "secrets"
	tableSealed  = "sealed"
	indexProject = "project"

	// MaxPayload bounds a secret's payload. The transport's body limit is
	// lower; this guards callers that bypass it.
	MaxPayload = 64 << 10
	// MaxKeyValues bounds the number of key_values entries.
	MaxKeyValues = 64
)

// Secret statuses.
const (
	StatusActive  = "active"
	StatusExpired = "expired"
	StatusRevoked = "revoked"
)

// secretRecord is the metadata of a secret as stored. It holds nothing
// secret; the sealed payload lives in sealedRecord under the same id.
type secretRecord struct {
	ID          string     `json:"id"`
	ProjectID   string     `json:"project_id"`
	DisplayName string     `json:"display_name"`
	Version     int        `json:"version"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	RotatedAt   *time.Time `json:"rotated_at,omitempty"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
}

// sealedRecord is the envelope of one secret version: payload and
// key_values, sealed together under one DEK.
type sealedRecord struct {
	Version int         `json:"version"`
	Sealed  *hsm.Sealed `json:"sealed"`
}

// Secret is the management projection of a secret: metadata only. It has
// no field that could carry the payload or key_values.
type Secret struct {
	ID          string
	ProjectID   string
	Project     string
	DisplayName string
	Version     int
	Status      string
	CreatedAt   time.Time
	UpdatedAt   time.Time
	RotatedAt   *time.Time
	RevokedAt   *time.Time
	ExpiresAt   *time.Time
	// UnitActions, from RotateSecret only: what the on-rotate actions of
	// the secret's unit bindings came to.
	UnitActions []UnitAction
}

func (r secretRecord) status(now time.Time) string {
	switch {
	case r.RevokedAt != nil:
		return StatusRevoked
	case r.ExpiresAt != nil && !now.Before(*r.ExpiresAt):
		return StatusExpired
	}
	return StatusActive
}

func (r secretRecord) view(project string, now time.Time) Secret {
	return Secret{
		ID: r.ID, ProjectID: r.ProjectID, Project: project, DisplayName: r.DisplayName,
		Version: r.Version, Status: r.status(now), CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
		RotatedAt: r.RotatedAt, RevokedAt: r.RevokedAt, ExpiresAt: r.ExpiresAt,
	}
}

// SecretInput creates a secret.
type SecretInput struct {
	DisplayName string
	Payload     []byte            `redact:"true"` // zeroed by the Service once sealed
	KeyValues   map[string]string `redact:"true"`
	ExpiresAt   *time.Time
}

// RotateInput replaces a secret's payload.
type RotateInput struct {
	Payload []byte `redact:"true"` // zeroed by the Service once sealed
	// KeyValues replaces the key_values when non-nil (an empty map clears
	// them); nil keeps the current ones.
	KeyValues map[string]string `redact:"true"`
	// ExpiresAt replaces the expiry when non-nil.
	ExpiresAt *time.Time
	// CAS, when set, is the version the caller expects to replace.
	CAS *int
}

const maxKeyName = 128

const CodeInvalidKeyValues = "invalid_key_values"

func checkPayload(p []byte) error {
	switch {
	case len(p) == 0:
		return Invalid(CodeInvalidPayload, "payload must be at least one byte")
	case len(p) > MaxPayload:
		return Invalid(CodeInvalidPayload, "payload is larger than %d bytes", MaxPayload)
	}
	return nil
}

func checkKeyValues(m map[string]string) error {
	if len(m) > MaxKeyValues {
		return Invalid(CodeInvalidKeyValues, "at most %d key_values", MaxKeyValues)
	}
	for k := range m {
		if !validKeyName(k, maxKeyName) {
			// The key is not secret (only values are); quote it to help.
			return Invalid(CodeInvalidKeyValues, "key_values key %q: use 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit", k)
		}
	}
	return nil
}

func (s *Service) checkExpiry(t *time.Time) error {
	if t != nil && !t.After(s.now()) {
		return Invalid(CodeInvalidExpiry, "expires_at %s is not in the future", t.UTC().Format(time.RFC3339))
	}
	return nil
}

// secretAAD binds a sealed secret version to its project, id and version,
// so a ciphertext moved to another record fails to open.
func secretAAD(projectID, secretID string, version int) []byte {
	return []byte("coffer/secret/v1\x00" + projectID + "\x00" + secretID + "\x00" + strconv.Itoa(version))
}

// encodePlain frames payload and key_values into one plaintext:
// uvarint(len(payload)) || payload || JSON(key_values). It writes into one
// buffer sized up front, so the caller's clear of the result is the only
// copy to clear (json.Marshal would leave the key_values in its pooled
// buffers).
func encodePlain(payload []byte, kvs map[string]string) ([]byte, error) {
	out := make([]byte, 0, binary.MaxVarintLen64+len(payload)+keyValuesJSONMaxLen(kvs))
	out = binary.AppendUvarint(out, uint64(len(payload)))
	out = append(out, payload...)
	if len(kvs) > 0 {
		out = appendKeyValuesJSON(out, kvs)
	}
	return out, nil
}

// decodePlain splits a plaintext made by encodePlain. payload aliases plain.
func decodePlain(plain []byte) (payload []byte, kvs map[string]string, err error) {
	n, w := binary.Uvarint(plain)
	if w <= 0 || n > uint64(len(plain)-w) {
		return nil, nil, errors.New("malformed sealed plaintext")
	}
	payload = plain[w : w+int(n)]
	if rest := plain[w+int(n):]; len(rest) > 0 {
		if err := json.Unmarshal(rest, &kvs); err != nil {
			return nil, nil, errors.New("malformed sealed key_values")
		}
	}
	return payload, kvs, nil
}

func (s *Service) seal(ctx context.Context, projectID, secretID string, version int, payload []byte, kvs map[string]string) (*hsm.Sealed, error) {
	plain, err := encodePlain(payload, kvs)
	if err != nil {
		return nil, err
	}
	defer clear(plain)
	sealed, err := s.keys.Seal(ctx, plain, secretAAD(projectID, secretID, version))
	if err != nil {
		return nil, hsmErr(fmt.Errorf("seal secret %s version %d: %w", secretID, version, err))
	}
	return sealed, nil
}

// open unseals the current version of a secret. The caller must clear the
// returned plaintext; payload and key_values alias it.
func (s *Service) open(ctx context.Context, rec secretRecord, blob sealedRecord) (plain, payload []byte, kvs map[string]string, err error) {
	if blob.Sealed == nil || blob.Version != rec.Version {
		return nil, nil, nil, fmt.Errorf("secret %s: sealed version %d does not match record version %d", rec.ID, blob.Version, rec.Version)
	}
	plain, err = s.keys.Unseal(ctx, blob.Sealed, secretAAD(rec.ProjectID, rec.ID, rec.Version))
	if errors.Is(err, hsm.ErrOpen) {
		return nil, nil, nil, fmt.Errorf("open secret %s version %d: %w", rec.ID, rec.Version, err)
	}
	if err != nil {
		return nil, nil, nil, hsmErr(fmt.Errorf("open secret %s version %d: %w", rec.ID, rec.Version, err))
	}
	payload, kvs, err = decodePlain(plain)
	if err != nil {
		clear(plain)
		return nil, nil, nil, fmt.Errorf("open secret %s version %d: %w", rec.ID, rec.Version, err)
	}
	return plain, payload, kvs, nil
}

// CreateSecret seals in.Payload and in.KeyValues and stores a new secret
// in the grant's project.
func (s *Service) CreateSecret(ctx context.Context, g Grant, in SecretInput) (Secret, error) {
	defer clear(in.Payload)
	if err := g.require(ActManageProject); err != nil {
		return Secret{}, err
	}
	return s.createSecret(ctx, g, in, nil)
}

// createSecret checks, seals and stores a new secret in the grant's
// project. also, when set, runs in the same transaction (an import records
// its sealed file there); target goes to the audit event.
func (s *Service) createSecret(ctx context.Context, g Grant, in SecretInput, also func(tx *kv.Txn, rec secretRecord) error, target ...string) (Secret, error) {
	if err := checkDisplayName(in.DisplayName); err != nil {
		return Secret{}, err
	}
	if err := checkPayload(in.Payload); err != nil {
		return Secret{}, err
	}
	if err := checkKeyValues(in.KeyValues); err != nil {
		return Secret{}, err
	}
	if err := s.checkExpiry(in.ExpiresAt); err != nil {
		return Secret{}, err
	}
	now := s.now()
	rec := secretRecord{
		ID: newID(), ProjectID: g.project.ID, DisplayName: in.DisplayName, Version: 1,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: utcPtr(in.ExpiresAt),
	}
	sealed, err := s.seal(ctx, rec.ProjectID, rec.ID, rec.Version, in.Payload, in.KeyValues)
	if err != nil {
		return Secret{}, err
	}
	err = s.update(ctx, g.principal, "secret.create", func(tx *kv.Txn, c *change) error {
		c.set("project", rec.ProjectID, "secret", rec.ID, "version", "1")
		c.set(target...)
		if _, err := liveProject(tx, rec.ProjectID); err != nil {
			return err
		}
		if also != nil {
			if err := also(tx, rec); err != nil {
				return err
			}
		}
		if err := tx.Put(tableSecrets, rec.ID, rec, kv.Index{Name: indexProject, Value: rec.ProjectID}); err != nil {
			return err
		}
		return putSealed(tx, rec.ID, sealedRecord{Version: rec.Version, Sealed: sealed})
	})
	if err != nil {
		return Secret{}, storeErr(err)
	}
	return rec.view(g.project.Name, now), nil
}

// GetSecret returns the metadata of the grant's secret, as read when the
// request was authorized (one consistent snapshot, no second read).
func (s *Service) GetSecret(ctx context.Context, g Grant) (Secret, error) {
	if g.action != ActReadSecret && g.action != ActManageSecret {
		return Secret{}, Forbidden("not authorized to %s", ActReadSecret)
	}
	return g.secret.view(g.project.Name, s.now()), nil
}

// SecretFilter narrows a secret list.
type SecretFilter struct {
	// ExpiringWithin > 0: only active secrets whose expires_at is within
	// this span from now.
	ExpiringWithin time.Duration
}

// ListSecrets lists the secrets of the grant's project in creation order
// (a filter may leave a page shorter than its limit; Next goes on).
func (s *Service) ListSecrets(ctx context.Context, g Grant, f SecretFilter, page Page) ([]Secret, string, error) {
	if g.action != ActReadProject && g.action != ActManageProject {
		return nil, "", Forbidden("not authorized to %s", ActReadProject)
	}
	now := s.now()
	var out []Secret
	next, err := s.list(ctx, tableSecrets, kv.Query{Index: indexProject, Value: g.project.ID}, page, func(decode func(any) error) error {
		var rec secretRecord
		if err := decode(&rec); err != nil {
			return err
		}
		v := rec.view(g.project.Name, now)
		if f.ExpiringWithin > 0 && (v.Status != StatusActive || v.ExpiresAt == nil || v.ExpiresAt.After(now.Add(f.ExpiringWithin))) {
			return nil
		}
		out = append(out, v)
		return nil
	})
	return out, next, err
}

// errRetryRotate signals that the secret changed between reading and
// writing a rotation; without a CAS the rotation starts over.
var errRetryRotate = errors.New("secret changed during rotation")

// RotateSecret seals a new payload as the next version and destroys the
// previous ciphertext.
func (s *Service) RotateSecret(ctx context.Context, g Grant, in RotateInput) (Secret, error) {
	defer clear(in.Payload)
	if err := g.require(ActManageSecret); err != nil {
		return Secret{}, err
	}
	if err := checkPayload(in.Payload); err != nil {
		return Secret{}, err
	}
	if err := checkKeyValues(in.KeyValues); err != nil {
		return Secret{}, err
	}
	if err := s.checkExpiry(in.ExpiresAt); err != nil {
		return Secret{}, err
	}
	if in.CAS != nil && *in.CAS < 1 {
		return Secret{}, Invalid(CodeInvalidArgument, "cas must be a version number (1 or more)")
	}
	for range 5 {
		sec, err := s.rotateOnce(ctx, g, in)
		if !errors.Is(err, errRetryRotate) {
			return sec, err
		}
	}
	return Secret{}, Conflict(CodeVersionConflict, "secret %s is being rotated concurrently; try again", g.secretID)
}

func (s *Service) rotateOnce(ctx context.Context, g Grant, in RotateInput) (Secret, error) {
	var rec secretRecord
	var blob sealedRecord
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		if err := tx.Get(tableSecrets, g.secretID, &rec); err != nil {
			return err
		}
		if rec.RevokedAt != nil || in.KeyValues != nil {
			return nil
		}
		return tx.Get(tableSealed, g.secretID, &blob)
	})
	if errors.Is(err, kv.ErrNotFound) {
		return Secret{}, NotFound("secret %s not found", g.secretID)
	}
	if err != nil {
		return Secret{}, storeErr(err)
	}
	if rec.RevokedAt != nil {
		return Secret{}, Conflict(CodeSecretRevoked, "secret %s is revoked and cannot be rotated", rec.ID)
	}
	if in.CAS != nil && *in.CAS != rec.Version {
		return Secret{}, Conflict(CodeVersionConflict, "secret %s is at version %d, not %d", rec.ID, rec.Version, *in.CAS)
	}
	kvs := in.KeyValues
	if kvs == nil {
		plain, _, old, err := s.open(ctx, rec, blob)
		if err != nil {
			return Secret{}, err
		}
		kvs = old
		defer clear(plain)
	}
	prev := rec.Version
	var jobs []unitJob
	now := s.now()
	rec.Version++
	rec.UpdatedAt, rec.RotatedAt = now, &now
	if in.ExpiresAt != nil {
		rec.ExpiresAt = utcPtr(in.ExpiresAt)
	}
	sealed, err := s.seal(ctx, rec.ProjectID, rec.ID, rec.Version, in.Payload, kvs)
	if err != nil {
		return Secret{}, err
	}
	err = s.update(ctx, g.principal, "secret.rotate", func(tx *kv.Txn, c *change) error {
		c.set("project", rec.ProjectID, "secret", rec.ID, "version", strconv.Itoa(rec.Version))
		var cur secretRecord
		if err := tx.Get(tableSecrets, rec.ID, &cur); err != nil {
			return notFoundAs(err, "secret %s not found", rec.ID)
		}
		if cur.Version != prev || cur.RevokedAt != nil {
			return errRetryRotate
		}
		// The units to act on once this commits: the bindings as this
		// transaction sees them.
		bs, err := secretBindings(tx, rec.ID)
		if err != nil {
			return err
		}
		jobs = jobs[:0]
		for _, b := range bs {
			if a := b.onRotate(); b.Kind == BindUnit && a != OnRotateNone {
				jobs = append(jobs, unitJob{binding: b.ID, unit: b.Unit, action: a})
			}
		}
		if err := tx.Put(tableSecrets, rec.ID, rec, kv.Index{Name: indexProject, Value: rec.ProjectID}); err != nil {
			return err
		}
		// Overwriting the sealed record drops the previous ciphertext and
		// its wrapped DEK; Badger discards the old value at compaction.
		return putSealed(tx, rec.ID, sealedRecord{Version: rec.Version, Sealed: sealed})
	})
	switch {
	case errors.Is(err, errRetryRotate) && in.CAS != nil:
		return Secret{}, Conflict(CodeVersionConflict, "secret %s changed while rotating; version %d is no longer current", rec.ID, prev)
	case errors.Is(err, errRetryRotate):
		return Secret{}, err
	case err != nil:
		return Secret{}, storeErr(err)
	}
	out := rec.view(g.project.Name, now)
	out.UnitActions = s.runUnitActions(ctx, g.principal, rec.ID, rec.Version, jobs)
	return out, nil
}

// RevokeSecret marks the secret revoked and destroys its ciphertext. The
// metadata stays for the record; revoking twice is not an error.
func (s *Service) RevokeSecret(ctx context.Context, g Grant) (Secret, error) {
	if err := g.require(ActManageSecret); err != nil {
		return Secret{}, err
	}
	var rec secretRecord
	now := s.now()
	err := s.update(ctx, g.principal, "secret.revoke", func(tx *kv.Txn, c *change) error {
		c.set("project", g.project.ID, "secret", g.secretID)
		if err := tx.Get(tableSecrets, g.secretID, &rec); err != nil {
			return notFoundAs(err, "secret %s not found", g.secretID)
		}
		if rec.RevokedAt != nil {
			return nil
		}
		rec.RevokedAt, rec.UpdatedAt = &now, now
		if err := tx.Put(tableSecrets, rec.ID, rec, kv.Index{Name: indexProject, Value: rec.ProjectID}); err != nil {
			return err
		}
		return ignoreNotFound(tx.Delete(tableSealed, rec.ID))
	})
	if err != nil {
		return Secret{}, storeErr(err)
	}
	return rec.view(g.project.Name, now), nil
}

// DeleteSecret deletes the secret, its metadata and its ciphertext.
func (s *Service) DeleteSecret(ctx context.Context, g Grant) error {
	if err := g.require(ActManageSecret); err != nil {
		return err
	}
	// One transaction holds it all: updates run one after another (kv's
	// committer), so no binding can be made between.
	err := s.update(ctx, g.principal, "secret.delete", func(tx *kv.Txn, c *change) error {
		c.set("project", g.project.ID, "secret", g.secretID)
		if err := tx.Delete(tableSecrets, g.secretID); err != nil {
			return notFoundAs(err, "secret %s not found", g.secretID)
		}
		if err := deleteBindingsOf(tx, g.secretID); err != nil {
			return err
		}
		return ignoreNotFound(tx.Delete(tableSealed, g.secretID))
	})
	return storeErr(err)
}

// notFoundAs turns a store's not-found into the caller's not_found error,
// and leaves any other error as it is.
func notFoundAs(err error, format string, args ...any) error {
	if errors.Is(err, kv.ErrNotFound) {
		return NotFound(format, args...)
	}
	return err
}

func ignoreNotFound(err error) error {
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	return err
}

func utcPtr(t *time.Time) *time.Time {
	if t == nil {
		return nil
	}
	u := t.UTC().Truncate(time.Second)
	return &u
}
