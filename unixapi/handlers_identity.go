package unixapi

import (
	"net/http"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

func (s *Server) identityRoutes() {
	s.handle("POST /v1/users", s.createUser)
	s.handle("GET /v1/users", s.listUsers)
	s.handle("GET /v1/users/{u}", s.getUser)
	s.handle("GET /v1/whoami", s.whoAmI)
	s.handle("PATCH /v1/users/{u}", s.patchUser)
	s.handle("DELETE /v1/users/{u}", s.deleteUser)

	s.handle("GET /v1/projects/{p}/roles", s.listRoles)
	s.handle("PUT /v1/projects/{p}/roles/{u}/{role}", s.setRole)
	s.handle("DELETE /v1/projects/{p}/roles/{u}/{role}", s.removeRole)

	s.handle("POST /v1/projects/{p}/credentials", s.createCredential)
	s.handle("GET /v1/projects/{p}/credentials", s.listProjectCredentials)
	s.handle("GET /v1/credentials", s.listOwnCredentials)
	s.handle("GET /v1/credentials/{id}", s.getCredential)
	s.handle("POST /v1/credentials/{id}/rotate", s.rotateCredential)
	s.handle("POST /v1/credentials/{id}/revoke", s.revokeCredential)
	s.handle("DELETE /v1/credentials/{id}", s.deleteCredential)

	s.handle("POST /v1/access-rules", s.createAccessRule)
	s.handle("GET /v1/access-rules", s.listAccessRules)
	s.handle("DELETE /v1/access-rules/{id}", s.deleteAccessRule)

	s.handle("POST /v1/auth/login", s.login, selfAuthenticating)
	s.handle("GET /v1/sessions", s.listSessions)
	s.handle("DELETE /v1/sessions/{id}", s.revokeSession)
}

func userWire(u daemon.User) api.User {
	out := api.User{
		ID: u.ID, Name: u.Name, Kind: u.Kind, Disabled: u.Disabled, UnixUIDs: u.UnixUIDs, VsockCIDs: u.VsockCIDs,
		AccessTokenTTL: u.AccessTokenTTL.String(), CreatedAt: u.CreatedAt, UpdatedAt: u.UpdatedAt,
	}
	if out.UnixUIDs == nil {
		out.UnixUIDs = []uint32{}
	}
	if out.VsockCIDs == nil {
		out.VsockCIDs = []uint32{}
	}
	out.VMNames = u.VMNames
	if out.VMNames == nil {
		out.VMNames = []string{}
	}
	out.Policies = nonNil(u.Policies)
	for _, r := range u.Roles {
		out.Roles = append(out.Roles, roleWire(r))
	}
	return out
}

func roleWire(r daemon.ProjectRole) api.ProjectRole {
	return api.ProjectRole{Project: r.Project, ProjectID: r.ProjectID, User: r.User, UserID: r.UserID, Role: r.Role}
}

func parseTTL(s string) (time.Duration, error) {
	if s == "" {
		return 0, nil
	}
	return daemon.ParseWindow("access_token_ttl", s, time.Now())
}

func (s *Server) createUser(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageUsers, daemon.Resource{})
	if err != nil {
		return err
	}
	var req api.UserCreateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	ttl, err := parseTTL(req.AccessTokenTTL)
	if err != nil {
		return err
	}
	u, err := s.b.CreateUser(r.Context(), g, daemon.UserInput{
		Name: req.Name, Kind: req.Kind, Disabled: req.Disabled, UnixUIDs: req.UnixUIDs, VsockCIDs: req.VsockCIDs,
		VMNames: req.VMNames, AccessTokenTTL: ttl, Policies: req.Policies,
	})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/users/"+u.Name)
	writeJSON(w, http.StatusCreated, userWire(u))
	return nil
}

func (s *Server) listUsers(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageUsers, daemon.Resource{})
	if err != nil {
		return err
	}
	page, err := pageOf(r)
	if err != nil {
		return err
	}
	us, next, err := s.b.ListUsers(r.Context(), g, r.URL.Query().Get("project"), page)
	if err != nil {
		return err
	}
	out := api.List[api.User]{Items: make([]api.User, 0, len(us)), Next: next}
	for _, u := range us {
		out.Items = append(out.Items, userWire(u))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) getUser(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadUser, daemon.Resource{User: r.PathValue("u")})
	if err != nil {
		return err
	}
	u, err := s.b.GetUser(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userWire(u))
	return nil
}

func (s *Server) whoAmI(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadSelf, daemon.Resource{})
	if err != nil {
		return err
	}
	me, err := s.b.WhoAmI(r.Context(), g)
	if err != nil {
		return err
	}
	out := api.Self{Channel: string(me.Channel), UID: me.UID, GID: me.GID, PID: me.PID, CID: me.CID, VM: me.VM,
		SystemAdmin: me.SystemAdmin, MetricsReader: me.MetricsReader}
	if me.User != nil {
		u := userWire(*me.User)
		out.User = &u
	}
	if t := me.Token; t != nil {
		out.Token = &api.SelfToken{Kind: t.Kind, SessionID: t.SessionID, CredentialID: t.CredentialID, CredentialName: t.CredentialName,
			ProjectID: t.ProjectID, Project: t.Project, Roles: t.Roles, Unrestricted: t.Unrestricted, AccessRules: t.Restricted, ExpiresAt: t.ExpiresAt}
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) patchUser(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageUser, daemon.Resource{User: r.PathValue("u")})
	if err != nil {
		return err
	}
	var req api.UserPatchRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	p := daemon.UserPatch{Disabled: req.Disabled, UnixUIDs: req.UnixUIDs, VsockCIDs: req.VsockCIDs, VMNames: req.VMNames, Policies: req.Policies}
	if req.AccessTokenTTL != nil {
		ttl, err := parseTTL(*req.AccessTokenTTL)
		if err != nil {
			return err
		}
		p.AccessTokenTTL = &ttl
	}
	u, err := s.b.PatchUser(r.Context(), g, p)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, userWire(u))
	return nil
}

func (s *Server) deleteUser(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageUser, daemon.Resource{User: r.PathValue("u")})
	if err != nil {
		return err
	}
	if err := s.b.DeleteUser(r.Context(), g); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) listRoles(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadProject, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	rs, err := s.b.ListRoles(r.Context(), g)
	if err != nil {
		return err
	}
	out := api.List[api.ProjectRole]{Items: make([]api.ProjectRole, 0, len(rs))}
	for _, x := range rs {
		out.Items = append(out.Items, roleWire(x))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) setRole(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageRoles, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	pr, err := s.b.SetRole(r.Context(), g, r.PathValue("u"), r.PathValue("role"))
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, roleWire(pr))
	return nil
}

func (s *Server) removeRole(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageRoles, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	if err := s.b.RemoveRole(r.Context(), g, r.PathValue("u"), r.PathValue("role")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func rulesWire(rs []daemon.AccessRule) []api.AccessRule {
	if rs == nil {
		return nil
	}
	out := make([]api.AccessRule, 0, len(rs))
	for _, r := range rs {
		out = append(out, api.AccessRule(r))
	}
	return out
}

func rulesDomain(rs []api.AccessRule) []daemon.AccessRule {
	if rs == nil {
		return nil
	}
	out := make([]daemon.AccessRule, 0, len(rs))
	for _, r := range rs {
		out = append(out, daemon.AccessRule(r))
	}
	return out
}

func credentialWire(c daemon.Credential, issued daemon.Issued) api.Credential {
	return api.Credential{
		ID: c.ID, Name: c.Name, Description: c.Description, Type: c.Type, User: c.User, UserID: c.UserID,
		Project: c.Project, ProjectID: c.ProjectID, Roles: c.Roles, AccessRules: rulesWire(c.AccessRules),
		Policies: c.Policies, InlinePolicies: c.InlinePolicies, SessionType: c.SessionType, Unrestricted: c.Unrestricted, Audiences: c.Audiences, TokenID: c.TokenID,
		ClientID: c.ClientID, ExpiresAt: c.ExpiresAt, MaxAuthn: c.MaxAuthn, AuthnCount: c.AuthnCount,
		LastUsedAt: c.LastUsedAt, CreatedAt: c.CreatedAt, RotatedAt: c.RotatedAt, RevokedAt: c.RevokedAt,
		Status: c.Status, Token: issued.Token, ClientSecret: issued.ClientSecret,
	}
}

func (s *Server) createCredential(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActCreateCredential, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	var req api.CredentialCreateRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	expiresAt, err := parseExpiry(req.ExpiresAt)
	if err != nil {
		return err
	}
	c, issued, err := s.b.CreateCredential(r.Context(), g, daemon.CredentialInput{
		Type: req.Type, User: req.User, Name: req.Name, Description: req.Description, Roles: req.Roles,
		AccessRules: rulesDomain(req.AccessRules), Policies: req.Policies, InlinePolicy: req.InlinePolicy, ExpireIn: req.ExpireIn, ExpiresAt: expiresAt,
		MaxAuthn: req.MaxAuthn, OneTime: req.OneTime, SessionType: req.SessionType, Unrestricted: req.Unrestricted,
		Audiences: req.Audiences,
	})
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/credentials/"+c.ID)
	writeJSON(w, http.StatusCreated, credentialWire(c, issued))
	return nil
}

func credentialFilter(r *http.Request) (daemon.CredentialFilter, error) {
	f := daemon.CredentialFilter{User: r.URL.Query().Get("user")}
	if v := r.URL.Query().Get("expiring_within"); v != "" {
		d, err := daemon.ParseWindow("expiring_within", v, time.Now())
		if err != nil {
			return f, err
		}
		f.ExpiringWithin = d
	}
	return f, nil
}

func (s *Server) listCredentials(w http.ResponseWriter, r *http.Request, g daemon.Grant) error {
	f, err := credentialFilter(r)
	if err != nil {
		return err
	}
	page, err := pageOf(r)
	if err != nil {
		return err
	}
	cs, next, err := s.b.ListCredentials(r.Context(), g, f, page)
	if err != nil {
		return err
	}
	out := api.List[api.Credential]{Items: make([]api.Credential, 0, len(cs)), Next: next}
	for _, c := range cs {
		out.Items = append(out.Items, credentialWire(c, daemon.Issued{}))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) listProjectCredentials(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadProject, daemon.Resource{Project: r.PathValue("p")})
	if err != nil {
		return err
	}
	return s.listCredentials(w, r, g)
}

func (s *Server) listOwnCredentials(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActListOwnCredentials, daemon.Resource{})
	if err != nil {
		return err
	}
	return s.listCredentials(w, r, g)
}

func (s *Server) getCredential(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadCredential, daemon.Resource{Credential: r.PathValue("id")})
	if err != nil {
		return err
	}
	c, err := s.b.GetCredential(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, credentialWire(c, daemon.Issued{}))
	return nil
}

func (s *Server) rotateCredential(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageCredential, daemon.Resource{Credential: r.PathValue("id")})
	if err != nil {
		return err
	}
	var req api.CredentialRotateRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	var in daemon.CredentialRotate
	if req.Grace != "" {
		if in.Grace, err = daemon.ParseWindow("grace", req.Grace, time.Now()); err != nil {
			return err
		}
	}
	c, issued, err := s.b.RotateCredential(r.Context(), g, in)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, credentialWire(c, issued))
	return nil
}

func (s *Server) revokeCredential(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageCredential, daemon.Resource{Credential: r.PathValue("id")})
	if err != nil {
		return err
	}
	var none struct{}
	if err := decodeJSON(w, r, &none, true); err != nil {
		return err
	}
	c, err := s.b.RevokeCredential(r.Context(), g)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, credentialWire(c, daemon.Issued{}))
	return nil
}

func (s *Server) deleteCredential(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageCredential, daemon.Resource{Credential: r.PathValue("id")})
	if err != nil {
		return err
	}
	if err := s.b.DeleteCredential(r.Context(), g); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func savedRuleWire(r daemon.SavedRule) api.SavedRule {
	return api.SavedRule{ID: r.ID, Service: r.Service, Method: r.Method, Path: r.Path, CreatedAt: r.CreatedAt}
}

func (s *Server) createAccessRule(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageRules, daemon.Resource{})
	if err != nil {
		return err
	}
	var req api.AccessRule
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.ID != "" {
		return daemon.Invalid(daemon.CodeInvalidAccessRule, "a new access rule gets its id from coffer")
	}
	rule, err := s.b.CreateAccessRule(r.Context(), g, daemon.AccessRule(req))
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/v1/access-rules/"+rule.ID)
	writeJSON(w, http.StatusCreated, savedRuleWire(rule))
	return nil
}

func (s *Server) listAccessRules(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActReadRules, daemon.Resource{})
	if err != nil {
		return err
	}
	page, err := pageOf(r)
	if err != nil {
		return err
	}
	rs, next, err := s.b.ListAccessRules(r.Context(), g, page)
	if err != nil {
		return err
	}
	out := api.List[api.SavedRule]{Items: make([]api.SavedRule, 0, len(rs)), Next: next}
	for _, x := range rs {
		out.Items = append(out.Items, savedRuleWire(x))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) deleteAccessRule(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageRules, daemon.Resource{})
	if err != nil {
		return err
	}
	if err := s.b.DeleteAccessRule(r.Context(), g, r.PathValue("id")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func sessionWire(x daemon.Session, token string) api.Session {
	return api.Session{
		ID: x.ID, Kind: x.Kind, User: x.User, UserID: x.UserID, Project: x.Project, ProjectID: x.ProjectID,
		CredentialID: x.CredentialID, Roles: x.Roles, AccessRules: rulesWire(x.AccessRules), Policies: x.Policies,
		SessionType: x.SessionType, CreatedAt: x.CreatedAt, ExpiresAt: x.ExpiresAt, Token: token,
	}
}

// bearerToken returns the token of an Authorization: Bearer header.
func bearerToken(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if len(h) < 7 || !equalFoldASCII(h[:7], "Bearer ") {
		return "", false
	}
	t := h[7:]
	return t, t != ""
}

func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	token, ok := bearerToken(r)
	if !ok {
		return unauthenticated("log in with Authorization: Bearer <auth token>")
	}
	var none struct{}
	if err := decodeJSON(w, r, &none, true); err != nil {
		return err
	}
	sess, plain, err := s.b.Login(r.Context(), token)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, sessionWire(sess, plain))
	return nil
}

func (s *Server) listSessions(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActListSessions, daemon.Resource{})
	if err != nil {
		return err
	}
	page, err := pageOf(r)
	if err != nil {
		return err
	}
	ss, next, err := s.b.ListSessions(r.Context(), g, page)
	if err != nil {
		return err
	}
	out := api.List[api.Session]{Items: make([]api.Session, 0, len(ss)), Next: next}
	for _, x := range ss {
		out.Items = append(out.Items, sessionWire(x, ""))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) revokeSession(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActManageSession, daemon.Resource{Session: r.PathValue("id")})
	if err != nil {
		return err
	}
	if err := s.b.RevokeSession(r.Context(), g); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
