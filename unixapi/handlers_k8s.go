package unixapi

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// KMSBackend is the Kubernetes KMS part of the domain that the HTTP API
// shows (the KMS itself is served over gRPC by k8s/kms).
type KMSBackend interface {
	KMSKeys(ctx context.Context, g daemon.Grant) ([]daemon.KMSKey, error)
}

// k8sRoutes are the Kubernetes integrations' routes.
func (s *Server) k8sRoutes() {
	s.handle("GET /v1/k8s/kms-keys", s.kmsKeys)
	s.handle("GET /v1/k8s/webhook-ca", s.k8sWebhookCA) // handlers_k8s_webhook.go
}

// kmsKeys lists the key ids the KMS used: an admin read of key usage, like
// GET /v1/hsm/keys.
func (s *Server) kmsKeys(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	keys, err := s.b.KMSKeys(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.KMSKeys{Keys: keys}) // never nil: [] when none
	return nil
}
