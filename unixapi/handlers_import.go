package unixapi

import (
	"net/http"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hostseal"
)

// ImportBodyLimit is the body limit of POST /v1/projects/{p}/secrets:import:
// a sealed file carries its payload base64-encoded twice (in the sealed
// contents, then as ciphertext in the file), so the file of a payload
// that fits a create request is larger than BodyLimit.
const ImportBodyLimit = 16 << 10

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
	if err := decodeJSONLimit(w, r, &f, false, ImportBodyLimit); err != nil {
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
