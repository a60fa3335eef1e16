package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/coffer-hsm/coffer/api"
)

// CreateUser creates a user.
func (c *Client) CreateUser(ctx context.Context, in api.UserCreateRequest) (api.User, error) {
	var u api.User
	_, err := c.do(ctx, http.MethodPost, "/v1/users", in, &u)
	return u, err
}

// GetUser reads a user by name or id.
func (c *Client) GetUser(ctx context.Context, ref string) (api.User, error) {
	var u api.User
	_, err := c.do(ctx, http.MethodGet, "/v1/users/"+url.PathEscape(ref), nil, &u)
	return u, err
}

// ListUsers lists one page of users, optionally those with a role on project.
func (c *Client) ListUsers(ctx context.Context, project string, page PageQuery) (api.List[api.User], error) {
	var l api.List[api.User]
	q := page.encode()
	if project != "" {
		sep := "?"
		if q != "" {
			sep = "&"
		}
		q += sep + "project=" + url.QueryEscape(project)
	}
	_, err := c.do(ctx, http.MethodGet, "/v1/users"+q, nil, &l)
	return l, err
}

// PatchUser changes a user.
func (c *Client) PatchUser(ctx context.Context, ref string, p api.UserPatchRequest) (api.User, error) {
	var u api.User
	_, err := c.do(ctx, http.MethodPatch, "/v1/users/"+url.PathEscape(ref), p, &u)
	return u, err
}

// DeleteUser deletes a user with its credentials and sessions.
func (c *Client) DeleteUser(ctx context.Context, ref string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/users/"+url.PathEscape(ref), nil, nil)
	return err
}

// SetRole gives user a role on project.
func (c *Client) SetRole(ctx context.Context, project, user, role string) (api.ProjectRole, error) {
	var pr api.ProjectRole
	_, err := c.do(ctx, http.MethodPut, rolePath(project, user, role), nil, &pr)
	return pr, err
}

// RemoveRole takes a role away.
func (c *Client) RemoveRole(ctx context.Context, project, user, role string) error {
	_, err := c.do(ctx, http.MethodDelete, rolePath(project, user, role), nil, nil)
	return err
}

func rolePath(project, user, role string) string {
	return "/v1/projects/" + url.PathEscape(project) + "/roles/" + url.PathEscape(user) + "/" + url.PathEscape(role)
}

// ListRoles lists the role assignments of a project.
func (c *Client) ListRoles(ctx context.Context, project string) (api.List[api.ProjectRole], error) {
	var l api.List[api.ProjectRole]
	_, err := c.do(ctx, http.MethodGet, "/v1/projects/"+url.PathEscape(project)+"/roles", nil, &l)
	return l, err
}

// CreateCredential issues a credential; the answer carries its secret once.
func (c *Client) CreateCredential(ctx context.Context, project string, in api.CredentialCreateRequest) (api.Credential, error) {
	var cr api.Credential
	_, err := c.do(ctx, http.MethodPost, "/v1/projects/"+url.PathEscape(project)+"/credentials", in, &cr)
	return cr, err
}

// GetCredential reads a credential (never its secret).
func (c *Client) GetCredential(ctx context.Context, id string) (api.Credential, error) {
	var cr api.Credential
	_, err := c.do(ctx, http.MethodGet, "/v1/credentials/"+url.PathEscape(id), nil, &cr)
	return cr, err
}

// CredentialQuery filters a credential list.
type CredentialQuery struct {
	Project        string // empty: the caller's own credentials
	User           string
	ExpiringWithin string
	Page           PageQuery
}

// ListCredentials lists one page of credentials.
func (c *Client) ListCredentials(ctx context.Context, q CredentialQuery) (api.List[api.Credential], error) {
	v := url.Values{}
	if q.User != "" {
		v.Set("user", q.User)
	}
	if q.ExpiringWithin != "" {
		v.Set("expiring_within", q.ExpiringWithin)
	}
	if q.Page.Limit > 0 {
		v.Set("limit", fmt.Sprint(q.Page.Limit))
	}
	if q.Page.After != "" {
		v.Set("after", q.Page.After)
	}
	path := "/v1/credentials"
	if q.Project != "" {
		path = "/v1/projects/" + url.PathEscape(q.Project) + "/credentials"
	}
	if len(v) > 0 {
		path += "?" + v.Encode()
	}
	var l api.List[api.Credential]
	_, err := c.do(ctx, http.MethodGet, path, nil, &l)
	return l, err
}

// RotateCredential issues a new token; the previous one works for grace.
func (c *Client) RotateCredential(ctx context.Context, id, grace string) (api.Credential, error) {
	var cr api.Credential
	_, err := c.do(ctx, http.MethodPost, "/v1/credentials/"+url.PathEscape(id)+"/rotate", api.CredentialRotateRequest{Grace: grace}, &cr)
	return cr, err
}

// RevokeCredential revokes a credential and ends its sessions.
func (c *Client) RevokeCredential(ctx context.Context, id string) (api.Credential, error) {
	var cr api.Credential
	_, err := c.do(ctx, http.MethodPost, "/v1/credentials/"+url.PathEscape(id)+"/revoke", nil, &cr)
	return cr, err
}

// DeleteCredential deletes a credential.
func (c *Client) DeleteCredential(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/credentials/"+url.PathEscape(id), nil, nil)
	return err
}

// CreateAccessRule saves a reusable rule.
func (c *Client) CreateAccessRule(ctx context.Context, r api.AccessRule) (api.SavedRule, error) {
	var sr api.SavedRule
	_, err := c.do(ctx, http.MethodPost, "/v1/access-rules", r, &sr)
	return sr, err
}

// ListAccessRules lists saved rules.
func (c *Client) ListAccessRules(ctx context.Context, page PageQuery) (api.List[api.SavedRule], error) {
	var l api.List[api.SavedRule]
	_, err := c.do(ctx, http.MethodGet, "/v1/access-rules"+page.encode(), nil, &l)
	return l, err
}

// DeleteAccessRule deletes a saved rule no credential uses.
func (c *Client) DeleteAccessRule(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/access-rules/"+url.PathEscape(id), nil, nil)
	return err
}

// Login exchanges an auth token for a session; the answer carries the
// session token once.
func (c *Client) Login(ctx context.Context, authToken string) (api.Session, error) {
	var s api.Session
	_, err := c.WithToken(authToken).do(ctx, http.MethodPost, "/v1/auth/login", nil, &s)
	return s, err
}

// ListSessions lists the caller's sessions (all of them for an admin).
func (c *Client) ListSessions(ctx context.Context, page PageQuery) (api.List[api.Session], error) {
	var l api.List[api.Session]
	_, err := c.do(ctx, http.MethodGet, "/v1/sessions"+page.encode(), nil, &l)
	return l, err
}

// RevokeSession ends a session.
func (c *Client) RevokeSession(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/sessions/"+url.PathEscape(id), nil, nil)
	return err
}

// Authorize asks whether token may call service with method and path.
func (c *Client) Authorize(ctx context.Context, in api.AuthorizeRequest) (api.Decision, error) {
	var d api.Decision
	_, err := c.do(ctx, http.MethodPost, "/v1/authorize", in, &d)
	return d, err
}

// Introspect describes a token (RFC 7662).
func (c *Client) Introspect(ctx context.Context, token string) (api.Introspection, error) {
	var in api.Introspection
	_, err := c.postForm(ctx, "/oauth2/introspect", url.Values{"token": {token}}, "", "", &in)
	return in, err
}

// ClientCredentials runs the OAuth2 client-credentials grant with HTTP
// Basic client authentication.
func (c *Client) ClientCredentials(ctx context.Context, clientID, clientSecret, scope string) (api.TokenResponse, error) {
	return c.ClientCredentialsFor(ctx, clientID, clientSecret, scope, TokenTarget{})
}

// TokenTarget is who a token is for: an RFC 8693 audience and an RFC 8707
// resource (both end up in aud; either may be empty).
type TokenTarget struct {
	Audience string
	Resource string
}

func (t TokenTarget) set(v url.Values) {
	if t.Audience != "" {
		v.Set("audience", t.Audience)
	}
	if t.Resource != "" {
		v.Set("resource", t.Resource)
	}
}

// ClientCredentialsFor is ClientCredentials for the audience of to.
func (c *Client) ClientCredentialsFor(ctx context.Context, clientID, clientSecret, scope string, to TokenTarget) (api.TokenResponse, error) {
	v := url.Values{"grant_type": {"client_credentials"}}
	if scope != "" {
		v.Set("scope", scope)
	}
	to.set(v)
	var tr api.TokenResponse
	_, err := c.postForm(ctx, "/oauth2/token", v, clientID, clientSecret, &tr)
	return tr, err
}

// TokenExchange runs RFC 8693 token exchange: subjectToken (a cfs_ or
// cft_ token, or a coffer JWT) for a JWT for the audience of to.
func (c *Client) TokenExchange(ctx context.Context, subjectToken, scope string, to TokenTarget) (api.TokenResponse, error) {
	v := url.Values{
		"grant_type":         {"urn:ietf:params:oauth:grant-type:token-exchange"},
		"subject_token":      {subjectToken},
		"subject_token_type": {"urn:ietf:params:oauth:token-type:access_token"},
	}
	if scope != "" {
		v.Set("scope", scope)
	}
	to.set(v)
	var tr api.TokenResponse
	_, err := c.postForm(ctx, "/oauth2/token", v, "", "", &tr)
	return tr, err
}

// postForm posts a form; OAuth2 errors come back as *APIError with the
// RFC 6749 error code.
func (c *Client) postForm(ctx context.Context, path string, form url.Values, user, pass string, out any) (http.Header, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://coffer"+path, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if user != "" {
		req.SetBasicAuth(url.QueryEscape(user), url.QueryEscape(pass))
	}
	if path == "/oauth2/token" {
		return c.sendOAuth(req, out)
	}
	return c.send(req, http.MethodPost, path, out)
}

func (c *Client) sendOAuth(req *http.Request, out any) (http.Header, error) {
	resp, err := c.roundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 400 {
		var oe api.OAuth2Error
		json.Unmarshal(data, &oe)
		if oe.Error == "" {
			oe.Error = fmt.Sprintf("http_%d", resp.StatusCode)
		}
		return resp.Header, &APIError{Status: resp.StatusCode, Code: oe.Error, Message: oe.ErrorDescription}
	}
	return resp.Header, json.Unmarshal(data, out)
}

// policiesPath is the collection of project's policies ("" global).
func policiesPath(project string) string {
	if project == "" {
		return "/v1/policies"
	}
	return "/v1/projects/" + url.PathEscape(project) + "/policies"
}

// CreatePolicy saves a new policy in project ("" global).
func (c *Client) CreatePolicy(ctx context.Context, project string, in api.PolicyRequest) (api.Policy, error) {
	var p api.Policy
	_, err := c.do(ctx, http.MethodPost, policiesPath(project), in, &p)
	return p, err
}

// UpdatePolicy replaces the description and rules of a policy.
func (c *Client) UpdatePolicy(ctx context.Context, project, name string, in api.PolicyRequest) (api.Policy, error) {
	var p api.Policy
	_, err := c.do(ctx, http.MethodPut, policiesPath(project)+"/"+url.PathEscape(name), in, &p)
	return p, err
}

// GetPolicy reads a policy with what it is attached to.
func (c *Client) GetPolicy(ctx context.Context, project, name string) (api.Policy, error) {
	var p api.Policy
	_, err := c.do(ctx, http.MethodGet, policiesPath(project)+"/"+url.PathEscape(name), nil, &p)
	return p, err
}

// ListPolicies lists a project's policies ("" the global ones).
func (c *Client) ListPolicies(ctx context.Context, project string) (api.List[api.Policy], error) {
	var l api.List[api.Policy]
	_, err := c.do(ctx, http.MethodGet, policiesPath(project), nil, &l)
	return l, err
}

// DeletePolicy deletes a policy attached to nothing.
func (c *Client) DeletePolicy(ctx context.Context, project, name string) error {
	_, err := c.do(ctx, http.MethodDelete, policiesPath(project)+"/"+url.PathEscape(name), nil, nil)
	return err
}

// SetProjectPolicies attaches policies to every request in project,
// replacing those it had.
func (c *Client) SetProjectPolicies(ctx context.Context, project string, names []string) (api.Project, error) {
	var p api.Project
	if names == nil {
		names = []string{} // null is refused: it is not "none"
	}
	_, err := c.do(ctx, http.MethodPatch, "/v1/projects/"+url.PathEscape(project), api.ProjectPatchRequest{Policies: &names}, &p)
	return p, err
}
