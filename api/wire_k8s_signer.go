package api

import "time"

// K8sSAKey is one Kubernetes service-account signing key on the token
// (GET /v1/k8s/sa-keys). Signed counts the tokens it signed since the
// daemon started. A retired key is published (FetchKeys, and so
// kube-apiserver's OIDC discovery) until RetireAfter.
type K8sSAKey struct {
	Label       string     `json:"label"`
	Version     int        `json:"version"`
	Kid         string     `json:"kid"`
	Alg         string     `json:"alg"` // ES256 or RS256
	Current     bool       `json:"current"`
	Published   bool       `json:"published"`
	Signed      uint64     `json:"signed"`
	RetiredAt   *time.Time `json:"retired_at,omitempty"`
	RetireAfter *time.Time `json:"retire_after,omitempty"`
}

// K8sSAKeys is GET /v1/k8s/sa-keys.
type K8sSAKeys struct {
	Keys []K8sSAKey `json:"keys"`
}

// K8sSAKeyRotation is POST /v1/k8s/sa-key:rotate.
type K8sSAKeyRotation struct {
	Current  K8sSAKey  `json:"current"`
	Previous *K8sSAKey `json:"previous,omitempty"`
}
