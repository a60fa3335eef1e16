package daemon

// Sealed import (fleet provisioning): a secret sealed offline to this
// host's import key (package hostseal, `coffer seal`) is opened with the
// HSM and stored like a created secret. Its plaintext exists only here,
// between the unwrap and the reseal under the KEK, and is zeroed then.
// Each sealed file imports once: its id is recorded in the transaction
// that stores the secret.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coffer-hsm/coffer/hostseal"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

const tableImports = "imports"

// ImportAlgorithm names how a DEK is wrapped to the import key: RSA-OAEP
// with SHA-256 and MGF1-SHA-256 (the JWA name, RFC 7518 §4.3).
const ImportAlgorithm = "RSA-OAEP-256"

// ImportKey is the public half of this host's import key.
type ImportKey struct {
	PublicKeyPEM string
	Fingerprint  string
	Algorithm    string
}

// importRecord remembers a sealed file that was imported, by its id. It
// holds nothing secret.
type importRecord struct {
	ID             string    `json:"id"` // the sealed file's id
	ProjectID      string    `json:"project_id"`
	SecretID       string    `json:"secret_id"`
	KeyFingerprint string    `json:"key_fingerprint"`
	SealedAt       time.Time `json:"sealed_at"`
	ImportedAt     time.Time `json:"imported_at"`
}

// ImportKey returns the HSM import key's public half, for `coffer seal`.
func (s *Service) ImportKey(ctx context.Context, g Grant) (ImportKey, error) {
	if err := g.require(ActReadImportKey); err != nil {
		return ImportKey{}, err
	}
	pub := s.keys.ImportPublicKey()
	pemKey, err := hostseal.EncodePublicKey(pub)
	if err != nil {
		return ImportKey{}, err
	}
	fp, err := hostseal.Fingerprint(pub)
	if err != nil {
		return ImportKey{}, err
	}
	return ImportKey{PublicKeyPEM: string(pemKey), Fingerprint: fp, Algorithm: ImportAlgorithm}, nil
}

// ImportSecret opens a sealed file with the HSM import key and creates
// its secret in the grant's project as CreateSecret does (display name
// from the file). The file must be sealed to this host and for this
// project, and not imported before.
func (s *Service) ImportSecret(ctx context.Context, g Grant, f *hostseal.File) (Secret, error) {
	if err := g.require(ActManageProject); err != nil {
		return Secret{}, err
	}
	fp, err := hostseal.Fingerprint(s.keys.ImportPublicKey())
	if err != nil {
		return Secret{}, err
	}
	refused := func(err error) (Secret, error) {
		// A refused import is worth a record: someone sent this host a
		// file it will not take. The file's id is a public random value.
		s.recordFailure(g.principal, "secret.create", map[string]string{"project": g.project.ID, "sealed": auditValue(f.ID)}, err)
		return Secret{}, err
	}
	c, err := hostseal.Open(ctx, f, fp, s.keys.UnwrapImport)
	if err != nil {
		return refused(openError(f, fp, err))
	}
	defer c.Clear()
	if f.Project != g.project.Name && f.Project != g.project.ID {
		return refused(Invalid(CodeSealedProjectMismatch, "the file is sealed for project %q, not %s", f.Project, g.project.Name))
	}
	now := s.now()
	record := func(tx *kv.Txn, rec secretRecord) error {
		var prev importRecord
		err := tx.Get(tableImports, f.ID, &prev)
		if err == nil {
			return Invalid(CodeSealedSecretReplayed, "sealed secret %s was imported already, at %s as secret %s",
				f.ID, prev.ImportedAt.UTC().Format(time.RFC3339), prev.SecretID)
		}
		if !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		return tx.Put(tableImports, f.ID, importRecord{
			ID: f.ID, ProjectID: rec.ProjectID, SecretID: rec.ID, KeyFingerprint: f.KeyFingerprint,
			SealedAt: f.CreatedAt.UTC(), ImportedAt: now,
		})
	}
	return s.createSecret(ctx, g, SecretInput{DisplayName: f.DisplayName, Payload: c.Payload, KeyValues: c.KeyValues},
		record, "sealed", f.ID)
}

// openError maps a failed hostseal.Open to the caller's error. The
// messages name fields of the file, never its contents.
func openError(f *hostseal.File, fp string, err error) error {
	switch {
	case errors.Is(err, hostseal.ErrWrongHost):
		return Invalid(CodeSealedForOtherHost, "the file is sealed to import key %s; this host's is %s (coffer hsm import-key)", f.KeyFingerprint, fp)
	case errors.Is(err, hostseal.ErrMalformed):
		return Invalid(CodeInvalidSealedSecret, "not a sealed secret: %v", err)
	case errors.Is(err, hostseal.ErrTampered), errors.Is(err, hsm.ErrOpen):
		return &Error{Class: ErrInvalidArgument, Code: CodeInvalidSealedSecret,
			Message: "the sealed file does not verify: it was changed after sealing, or is damaged", Err: err}
	}
	return hsmErr(fmt.Errorf("import sealed secret %s: %w", f.ID, err))
}
