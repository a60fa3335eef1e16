package api

import "time"

// KMSKeys is GET /v1/k8s/kms-keys: the key ids the Kubernetes KMS used,
// oldest first.
type KMSKeys struct {
	Keys []KMSKey `json:"keys"`
}

// KMSKey is what the Kubernetes KMS did with one key id (the label of the
// KEK that wrapped its DEKs): counts and times, nothing secret.
type KMSKey struct {
	KeyID    string `json:"key_id"`
	Current  bool   `json:"current"`
	Present  bool   `json:"present"` // the KEK is still on the token
	Encrypts int64  `json:"encrypts"`
	Decrypts int64  `json:"decrypts"`

	FirstEncryptAt *time.Time `json:"first_encrypt_at,omitempty"`
	LastEncryptAt  *time.Time `json:"last_encrypt_at,omitempty"`
	LastDecryptAt  *time.Time `json:"last_decrypt_at,omitempty"`
	// RetiredAt: when the daemon first saw the KEK no longer current.
	RetiredAt *time.Time `json:"retired_at,omitempty"`
	// UsageUnknown: the store was restored from a backup, so the KMS may
	// have used the KEK after the backup.
	UsageUnknown bool `json:"usage_unknown,omitempty"`
	// NeedsForce: coffer hsm remove-kek takes this retired KEK only with
	// --force, once every Secret is rewritten and kube-apiserver restarted.
	NeedsForce bool `json:"needs_force,omitempty"`
}
