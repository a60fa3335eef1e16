package unixapi

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// K8sSignerBackend is the Kubernetes service-account signing key part of
// the domain (its signing itself is served by k8s/signer over gRPC).
type K8sSignerBackend interface {
	K8sSAKeys(ctx context.Context, g daemon.Grant) ([]daemon.K8sSAKey, error)
	RotateK8sSAKey(ctx context.Context, g daemon.Grant) (daemon.K8sSAKeyRotation, error)
}

// k8sSignerRoutes: system admins list and rotate the keys (ActManageKeys).
func (s *Server) k8sSignerRoutes() {
	s.handle("GET /v1/k8s/sa-keys", s.k8sSAKeys)
	s.handle("POST /v1/k8s/sa-key:rotate", s.rotateK8sSAKey)
}

func k8sSAKeyWire(k daemon.K8sSAKey) api.K8sSAKey {
	return api.K8sSAKey{
		Label: k.Label, Version: k.Version, Kid: k.Kid, Alg: k.Alg, Current: k.Current, Published: k.Published,
		Signed: k.Signed, RetiredAt: k.RetiredAt, RetireAfter: k.RetireAfter,
	}
}

func (s *Server) k8sSAKeys(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	keys, err := s.b.K8sSAKeys(r.Context(), g)
	if err != nil {
		return err
	}
	out := api.K8sSAKeys{Keys: make([]api.K8sSAKey, 0, len(keys))}
	for _, k := range keys {
		out.Keys = append(out.Keys, k8sSAKeyWire(k))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) rotateK8sSAKey(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	var none struct{}
	if err := decodeJSON(w, r, &none, true); err != nil {
		return err
	}
	rot, err := s.b.RotateK8sSAKey(r.Context(), g)
	if err != nil {
		return err
	}
	out := api.K8sSAKeyRotation{Current: k8sSAKeyWire(rot.Current)}
	if rot.Previous != nil {
		p := k8sSAKeyWire(*rot.Previous)
		out.Previous = &p
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}
