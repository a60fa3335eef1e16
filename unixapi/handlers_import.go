package unixapi

import (
	"net/http"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hostseal"
)

func (s *Server) importRoutes() {
	s.handle("GET /v1/hsm/import-key", s.getImportKey)
	s.handle("POST /v1/projects/{p}/secrets:import", s.importSecret)
}

func (s *Server) getImportKey(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadImportKey, daemon.Resource{})
	if err != nil {
		return err
	}
	k, err := s.b.ImportKey(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.ImportKey{PublicKeyPEM: k.PublicKeyPEM, Fingerprint: k.Fingerprint, Algorithm: k.Algorithm})
	return nil
}

// importSecret takes a sealed file (coffer seal) as its body and answers
// like a secret create.
func (s *Server) importSecret(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageProject, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	var f hostseal.File
	if err := decodeJSONLimit(w, r, &f, false, api.ImportBodyLimit); err != nil {
		return err
	}
	sec, err := s.b.ImportSecret(r.Context(), g, &f)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/secrets/"+sec.ID)
	writeJSON(w, http.StatusCreated, secretWire(sec))
	return nil
}
