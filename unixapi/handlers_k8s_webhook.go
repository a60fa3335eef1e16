package unixapi

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// K8sWebhookBackend is the Kubernetes webhooks part of the domain (the
// webhooks themselves are served over HTTPS by k8s/webhook).
type K8sWebhookBackend interface {
	K8sWebhookInfo(ctx context.Context, g daemon.Grant) (daemon.K8sWebhook, error)
}

// k8sWebhookCA is for system admins: the serving key is an HSM key
// (ActManageKeys), and the answer names files on the host.
func (s *Server) k8sWebhookCA(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageKeys, daemon.Resource{})
	if err != nil {
		return err
	}
	k, err := s.b.K8sWebhookInfo(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.K8sWebhook{
		Server: k.Server, TokenReviewPath: k.TokenReviewPath, SubjectAccessReviewPath: k.SubjectAccessReviewPath,
		CertificateAuthority: string(k.CertificatePEM), BearerFile: k.BearerFile, ClientCAFile: k.ClientCAFile,
		Audiences: nonNil(k.Audiences),
	})
	return nil
}
