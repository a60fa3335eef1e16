package unixapi

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/policy"
)

// PolicyBodyLimit bounds the body of a policy's create or update: a
// document of the largest size policy allows, and its JSON framing.
const PolicyBodyLimit = policy.MaxDocumentBytes + 1<<10

// PolicyBackend is the policies part of the domain.
type PolicyBackend interface {
	CreatePolicy(ctx context.Context, g daemon.Grant, in daemon.PolicyInput) (daemon.Policy, error)
	UpdatePolicy(ctx context.Context, g daemon.Grant, in daemon.PolicyInput) (daemon.Policy, error)
	GetPolicy(ctx context.Context, g daemon.Grant, name string) (daemon.Policy, error)
	ListPolicies(ctx context.Context, g daemon.Grant) ([]daemon.Policy, error)
	DeletePolicy(ctx context.Context, g daemon.Grant, name string) error
	SetProjectPolicies(ctx context.Context, g daemon.Grant, names []string) (daemon.Project, error)
}

// The same handlers serve a project's policies and the global ones (no
// {p} in the pattern: the grant's project is "").
func (s *Server) policyRoutes() {
	for _, base := range []string{"/v1/policies", "/v1/projects/{p}/policies"} {
		s.handle("POST "+base, s.createPolicy)
		s.handle("GET "+base, s.listPolicies)
		s.handle("GET "+base+"/{name}", s.getPolicy)
		s.handle("PUT "+base+"/{name}", s.updatePolicy)
		s.handle("DELETE "+base+"/{name}", s.deletePolicy)
	}
	s.handle("PATCH /v1/projects/{p}", s.patchProject)
}

func policyWire(p daemon.Policy, withUse bool) api.Policy {
	out := api.Policy{ID: p.ID, Name: p.Name, ProjectID: p.ProjectID, Description: p.Description,
		Rules: p.Rules, CreatedAt: p.CreatedAt, UpdatedAt: p.UpdatedAt}
	if p.ProjectID != "" {
		out.Project = p.Project
	}
	if out.Rules == nil {
		out.Rules = []policy.Rule{}
	}
	if withUse {
		out.UsedBy = &api.PolicyUse{Credentials: nonNil(p.UsedBy.Credentials), Users: nonNil(p.UsedBy.Users),
			Projects: nonNil(p.UsedBy.Projects)}
	}
	return out
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (s *Server) policyGrant(r *http.Request, a daemon.Action) (daemon.Grant, error) {
	return s.authorize(r, a, daemon.Resource{Project: r.PathValue("p")})
}

func (s *Server) createPolicy(w http.ResponseWriter, r *http.Request) error {
	g, err := s.policyGrant(r, daemon.ActManagePolicies)
	if err != nil {
		return err
	}
	var req api.PolicyRequest
	if err := decodeJSONLimit(w, r, &req, false, PolicyBodyLimit); err != nil {
		return err
	}
	p, err := s.b.CreatePolicy(r.Context(), g, daemon.PolicyInput{Name: req.Name,
		Document: policy.Document{Description: req.Description, Rules: req.Rules}})
	if err != nil {
		return err
	}
	w.Header().Set("Location", r.URL.Path+"/"+p.Name)
	writeJSON(w, http.StatusCreated, policyWire(p, false))
	return nil
}

func (s *Server) updatePolicy(w http.ResponseWriter, r *http.Request) error {
	g, err := s.policyGrant(r, daemon.ActManagePolicies)
	if err != nil {
		return err
	}
	var req api.PolicyRequest
	if err := decodeJSONLimit(w, r, &req, false, PolicyBodyLimit); err != nil {
		return err
	}
	if req.Name != "" && req.Name != r.PathValue("name") {
		return daemon.Invalid(daemon.CodeInvalidPolicy, "the body's name differs from the path's (a policy is not renamed)")
	}
	p, err := s.b.UpdatePolicy(r.Context(), g, daemon.PolicyInput{Name: r.PathValue("name"),
		Document: policy.Document{Description: req.Description, Rules: req.Rules}})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, policyWire(p, false))
	return nil
}

func (s *Server) getPolicy(w http.ResponseWriter, r *http.Request) error {
	g, err := s.policyGrant(r, daemon.ActReadPolicies)
	if err != nil {
		return err
	}
	p, err := s.b.GetPolicy(r.Context(), g, r.PathValue("name"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, policyWire(p, true))
	return nil
}

func (s *Server) listPolicies(w http.ResponseWriter, r *http.Request) error {
	g, err := s.policyGrant(r, daemon.ActReadPolicies)
	if err != nil {
		return err
	}
	ps, err := s.b.ListPolicies(r.Context(), g)
	if err != nil {
		return err
	}
	out := api.List[api.Policy]{Items: make([]api.Policy, 0, len(ps))}
	for _, p := range ps {
		out.Items = append(out.Items, policyWire(p, false))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deletePolicy(w http.ResponseWriter, r *http.Request) error {
	g, err := s.policyGrant(r, daemon.ActManagePolicies)
	if err != nil {
		return err
	}
	if err := s.b.DeletePolicy(r.Context(), g, r.PathValue("name")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// patchProject changes what a project holds of its own: today, the
// policies attached to every request in it.
func (s *Server) patchProject(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManagePolicies, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	var req api.ProjectPatchRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Policies == nil {
		return daemon.Invalid(daemon.CodeInvalidArgument, "policies is required (an empty list detaches them all)")
	}
	p, err := s.b.SetProjectPolicies(r.Context(), g, *req.Policies)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, projectWire(p))
	return nil
}
