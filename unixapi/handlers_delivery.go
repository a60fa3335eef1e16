package unixapi

import (
	"net/http"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/daemon"
)

// Binding says who may receive a secret's payload.
type Binding struct {
	ID         string    `json:"id"`
	SecretID   string    `json:"secret_id"`
	Kind       string    `json:"kind"`
	Unit       string    `json:"unit,omitempty"`
	Credential string    `json:"credential,omitempty"`
	User       string    `json:"user,omitempty"`
	UserID     string    `json:"user_id,omitempty"`
	Name       string    `json:"name,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
}

// BindingCreateRequest is POST /v1/secrets/{id}/bindings: {unit,
// credential} or {user, name}.
type BindingCreateRequest struct {
	Unit       string `json:"unit,omitempty"`
	Credential string `json:"credential,omitempty"`
	User       string `json:"user,omitempty"`
	Name       string `json:"name,omitempty"`
}

func (s *Server) deliveryRoutes() {
	s.handle("POST /v1/secrets/{id}/bindings", s.createBinding)
	s.handle("GET /v1/secrets/{id}/bindings", s.listBindings)
	s.handle("DELETE /v1/secrets/{id}/bindings/{b}", s.deleteBinding)
	s.handle("GET /v1/deliver/{name}", s.deliver)
}

func bindingWire(b daemon.Binding) Binding {
	return Binding{ID: b.ID, SecretID: b.SecretID, Kind: b.Kind, Unit: b.Unit, Credential: b.Credential, User: b.User, UserID: b.UserID, Name: b.Name, CreatedAt: b.CreatedAt}
}

func (s *Server) createBinding(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageBindings, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	var req BindingCreateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	b, err := s.b.CreateBinding(r.Context(), g, daemon.BindingInput(req))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/secrets/"+b.SecretID+"/bindings/"+b.ID)
	writeJSON(w, http.StatusCreated, bindingWire(b))
	return nil
}

func (s *Server) listBindings(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadSecret, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	bs, err := s.b.ListBindings(r.Context(), g)
	if err != nil {
		return err
	}
	out := List[Binding]{Items: make([]Binding, 0, len(bs))}
	for _, b := range bs {
		out.Items = append(out.Items, bindingWire(b))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteBinding(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageBindings, daemon.Resource{Secret: r.PathValue("id")})
	if err != nil {
		return err
	}
	if err := s.b.DeleteBinding(r.Context(), g, r.PathValue("b")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// deliver hands the raw payload (or, with ?key=K, one key_values entry) to
// the consumer it is bound to (?project=P picks the project when the name
// is bound to the consumer in several); everyone else gets 404 whether or
// not the name exists.
func (s *Server) deliver(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	d, err := s.b.Deliver(r.Context(), daemon.PrincipalFrom(r.Context()), daemon.DeliveryRequest{Name: r.PathValue("name"), Key: q.Get("key"), Project: q.Get("project")})
	if err != nil {
		return err
	}
	defer clear(d.Payload)
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(d.Payload)))
	w.Header().Set("X-Coffer-Secret-Version", strconv.Itoa(d.Version))
	w.Header().Set("X-Coffer-Secret-Id", d.SecretID)
	w.WriteHeader(http.StatusOK)
	// The status is sent: a failed write means the client went away, and
	// there is nothing left to tell it.
	_, _ = w.Write(d.Payload)
	return nil
}
