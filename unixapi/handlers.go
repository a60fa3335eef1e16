package unixapi

import (
	"encoding/base64"
	"net/http"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

func (s *Server) routes() {
	s.handle("GET /v1/status", s.getStatus)
	s.handle("GET /v1/health", s.handleHealth)
	s.handle("GET /v1/metrics", s.handleMetrics)

	s.handle("POST /v1/projects", s.createProject)
	s.handle("GET /v1/projects", s.listProjects)
	s.handle("GET /v1/projects/{p}", s.getProject)
	s.handle("DELETE /v1/projects/{p}", s.deleteProject)

	s.handle("POST /v1/projects/{p}/secrets", s.createSecret)
	s.handle("GET /v1/projects/{p}/secrets", s.listSecrets)
	s.handle("GET /v1/secrets/{id}", s.getSecret)
	s.handle("POST /v1/secrets/{id}/rotate", s.rotateSecret)
	s.handle("POST /v1/secrets/{id}/revoke", s.revokeSecret)
	s.handle("DELETE /v1/secrets/{id}", s.deleteSecret)
	s.importRoutes()

	s.identityRoutes()
	s.policyRoutes()
	s.oauthRoutes()
	s.deliveryRoutes()
	s.auditRoutes()
	s.backupRoutes()
	s.debugRoutes()
	s.keysRoutes()
	s.k8sRoutes()
	s.k8sSignerRoutes()
}

func (s *Server) getStatus(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadStatus, daemon.Resource{})
	if err != nil {
		return err
	}
	st, err := s.b.Status(r.Context(), g)
	if err != nil {
		return err
	}
	hs := api.HSMStatus{
		Module: st.HSM.Module, TokenLabel: st.HSM.TokenLabel, KeyLabels: st.HSM.KeyLabels,
		Healthy: st.HSM.Healthy, Error: st.HSM.Error,
		Schemes: api.HSMSchemes{
			KEK: string(st.HSM.Schemes.KEK), KEKReason: st.HSM.Schemes.KEKWhy,
			Signing: string(st.HSM.Schemes.Signing), SigningReason: st.HSM.Schemes.SigningWhy,
		},
	}
	if t := st.HSM.Token; t != nil {
		hs.Token = &api.HSMToken{Label: t.Label, Manufacturer: t.Manufacturer, Model: t.Model, Serial: t.Serial, Library: t.Library}
	}
	ss := api.StoreStatus{Healthy: st.Store.Healthy, Error: st.Store.Error, State: st.Store.State, ReserveBytes: st.Store.ReserveBytes}
	if !st.Store.Since.IsZero() {
		ss.Since = &st.Store.Since
	}
	writeJSON(w, http.StatusOK, api.Status{
		Version: st.Version, StartedAt: st.StartedAt, UptimeSeconds: int64(st.Uptime / time.Second), Dev: st.Dev,
		HSM:    hs,
		Store:  ss,
		Counts: api.Counts{Projects: st.Counts.Projects, Secrets: st.Counts.Secrets, Users: st.Counts.Users, Credentials: st.Counts.Credentials},
	})
	return nil
}

func projectWire(p daemon.Project) api.Project {
	return api.Project{ID: p.ID, Name: p.Name, Policies: nonNil(p.Policies), CreatedAt: p.CreatedAt}
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageProjects, daemon.Resource{})
	if err != nil {
		return err
	}
	var req api.ProjectCreateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	p, err := s.b.CreateProject(r.Context(), g, req.Name)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/projects/"+p.Name)
	writeJSON(w, http.StatusCreated, projectWire(p))
	return nil
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageProjects, daemon.Resource{})
	if err != nil {
		return err
	}
	page, err := pageOf(r)
	if err != nil {
		return err
	}
	ps, next, err := s.b.ListProjects(r.Context(), g, page)
	if err != nil {
		return err
	}
	out := api.List[api.Project]{Items: make([]api.Project, 0, len(ps)), Next: next}
	for _, p := range ps {
		out.Items = append(out.Items, projectWire(p))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadProject, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	p, err := s.b.GetProject(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, projectWire(p))
	return nil
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageProjects, daemon.Resource{})
	if err != nil {
		return err
	}
	if err := s.b.DeleteProject(r.Context(), g, r.PathValue("p")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func secretWire(sec daemon.Secret) api.Secret {
	return api.Secret{
		ID: sec.ID, Project: sec.Project, ProjectID: sec.ProjectID, DisplayName: sec.DisplayName,
		Version: sec.Version, Status: sec.Status, CreatedAt: sec.CreatedAt, UpdatedAt: sec.UpdatedAt,
		RotatedAt: sec.RotatedAt, RevokedAt: sec.RevokedAt, ExpiresAt: sec.ExpiresAt,
		UnitActions: unitActionsWire(sec.UnitActions),
	}
}

func unitActionsWire(as []daemon.UnitAction) []api.UnitAction {
	if as == nil {
		return nil
	}
	out := make([]api.UnitAction, len(as))
	for i, a := range as {
		out[i] = api.UnitAction{Unit: a.Unit, Binding: a.BindingID, Action: a.Action, Result: a.Result, Error: a.Error}
	}
	return out
}

// decodePayload decodes a standard-base64 payload. Its errors never quote
// the input.
func decodePayload(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, daemon.Invalid(daemon.CodeInvalidPayload, "payload must be standard base64")
	}
	if len(b) == 0 {
		return nil, daemon.Invalid(daemon.CodeInvalidPayload, "payload must be at least one byte")
	}
	return b, nil
}

func parseExpiry(s string) (*time.Time, error) {
	if s == "" {
		return nil, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return nil, daemon.Invalid(daemon.CodeInvalidExpiry, "expires_at must be an RFC 3339 time such as 2030-01-02T15:04:05Z")
	}
	return &t, nil
}

func (s *Server) createSecret(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageProject, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	var req api.SecretCreateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	payload, err := decodePayload(req.Payload)
	if err != nil {
		return err
	}
	exp, err := parseExpiry(req.ExpiresAt)
	if err != nil {
		clear(payload)
		return err
	}
	sec, err := s.b.CreateSecret(r.Context(), g, daemon.SecretInput{
		DisplayName: req.DisplayName, Payload: payload, KeyValues: req.KeyValues, ExpiresAt: exp,
	})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/secrets/"+sec.ID)
	writeJSON(w, http.StatusCreated, secretWire(sec))
	return nil
}

func (s *Server) listSecrets(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadProject, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	var f daemon.SecretFilter
	if v := r.URL.Query().Get("expiring_within"); v != "" {
		if f.ExpiringWithin, err = daemon.ParseWindow("expiring_within", v, time.Now()); err != nil {
			return err
		}
	}
	page, err := pageOf(r)
	if err != nil {
		return err
	}
	secs, next, err := s.b.ListSecrets(r.Context(), g, f, page)
	if err != nil {
		return err
	}
	out := api.List[api.Secret]{Items: make([]api.Secret, 0, len(secs)), Next: next}
	for _, sec := range secs {
		out.Items = append(out.Items, secretWire(sec))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getSecret(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadSecret, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	sec, err := s.b.GetSecret(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, secretWire(sec))
	return nil
}

func (s *Server) rotateSecret(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageSecret, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	var req api.SecretRotateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	payload, err := decodePayload(req.Payload)
	if err != nil {
		return err
	}
	exp, err := parseExpiry(req.ExpiresAt)
	if err != nil {
		clear(payload)
		return err
	}
	sec, err := s.b.RotateSecret(r.Context(), g, daemon.RotateInput{
		Payload: payload, KeyValues: req.KeyValues, ExpiresAt: exp, CAS: req.CAS,
	})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, secretWire(sec))
	return nil
}

func (s *Server) revokeSecret(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageSecret, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	var none struct{}
	if err := decodeJSON(w, r, &none, true); err != nil {
		return err
	}
	sec, err := s.b.RevokeSecret(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, secretWire(sec))
	return nil
}

func (s *Server) deleteSecret(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageSecret, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	if err := s.b.DeleteSecret(r.Context(), g); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
