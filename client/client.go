package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// Client talks to a coffer daemon over its Unix socket.
type Client struct {
	addr  string
	hc    *http.Client
	token string
}

// WithToken returns a client that authenticates every request with the
// bearer token (a cfs_ session token, cft_ access token or JWT).
func (c *Client) WithToken(token string) *Client {
	cp := *c
	cp.token = token
	return &cp
}

// HTTPClient is the http.Client the client sends with, for a request its
// methods do not cover: the URL's host is ignored (any, such as
// http://coffer/v1/status, reaches the daemon), and no token is added.
func (c *Client) HTTPClient() *http.Client { return c.hc }

// NewClient returns a client of the daemon listening on the Unix socket at
// path.
func NewClient(path string) *Client {
	d := net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		MaxIdleConns:        16,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{addr: path, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}

// do sends a JSON request and decodes a JSON response into out (when not
// nil). Error responses become *APIError; a daemon that cannot be reached
// becomes *UnreachableError.
func (c *Client) do(ctx context.Context, method, path string, in, out any) (http.Header, error) {
	var body io.Reader
	if in != nil {
		b, err := api.EncodeRequest(in)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		defer clear(b)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://coffer"+path, body)
	if err != nil {
		return nil, fmt.Errorf("build request: %w", err)
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	return c.send(req, method, path, out)
}

// send sends req and decodes its answer as do describes.
func (c *Client) send(req *http.Request, method, path string, out any) (http.Header, error) {
	resp, err := c.roundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return resp.Header, apiError(resp)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return nil, fmt.Errorf("%s %s: decode response: %w", method, path, err)
		}
	}
	return resp.Header, nil
}

// Status returns the daemon's status.
func (c *Client) Status(ctx context.Context) (api.Status, error) {
	var st api.Status
	_, err := c.do(ctx, http.MethodGet, "/v1/status", nil, &st)
	return st, err
}

// Health asks whether the daemon's HSM, store and audit log answer. An
// unhealthy daemon (503 with the failed parts) is an answer, not an error.
func (c *Client) Health(ctx context.Context) (api.Health, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://coffer/v1/health", nil)
	if err != nil {
		return api.Health{}, fmt.Errorf("build request: %w", err)
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.roundTrip(req)
	if err != nil {
		return api.Health{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return api.Health{}, apiError(resp)
	}
	var h api.Health
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil {
		return api.Health{}, fmt.Errorf("GET /v1/health: decode response (HTTP %d): %w", resp.StatusCode, err)
	}
	return h, nil
}

// apiError reads an error response's {"error","message"} body.
func apiError(resp *http.Response) *APIError {
	var eb api.ErrorBody
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(data, &eb) != nil || eb.Error == "" {
		eb = api.ErrorBody{Error: "http_" + strconv.Itoa(resp.StatusCode), Message: http.StatusText(resp.StatusCode)}
	}
	return &APIError{Status: resp.StatusCode, Code: eb.Error, Message: eb.Message}
}

// roundTrip sends req; a daemon that cannot be reached becomes
// *UnreachableError.
func (c *Client) roundTrip(req *http.Request) (*http.Response, error) {
	resp, err := c.hc.Do(req)
	if err != nil {
		var opErr *net.OpError
		if errors.As(err, &opErr) && opErr.Op == "dial" {
			return nil, &UnreachableError{Addr: c.addr, Err: opErr.Err}
		}
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL.Path, err)
	}
	return resp, nil
}

// PageQuery selects a page of a list.
type PageQuery struct {
	Limit int
	After string
}

func (p PageQuery) encode() string {
	v := url.Values{}
	if p.Limit > 0 {
		v.Set("limit", strconv.Itoa(p.Limit))
	}
	if p.After != "" {
		v.Set("after", p.After)
	}
	if len(v) == 0 {
		return ""
	}
	return "?" + v.Encode()
}

// CreateProject creates a project.
func (c *Client) CreateProject(ctx context.Context, name string) (api.Project, error) {
	var p api.Project
	_, err := c.do(ctx, http.MethodPost, "/v1/projects", api.ProjectCreateRequest{Name: name}, &p)
	return p, err
}

// GetProject reads a project by name or id.
func (c *Client) GetProject(ctx context.Context, ref string) (api.Project, error) {
	var p api.Project
	_, err := c.do(ctx, http.MethodGet, "/v1/projects/"+url.PathEscape(ref), nil, &p)
	return p, err
}

// ListProjects lists one page of projects.
func (c *Client) ListProjects(ctx context.Context, page PageQuery) (api.List[api.Project], error) {
	var l api.List[api.Project]
	_, err := c.do(ctx, http.MethodGet, "/v1/projects"+page.encode(), nil, &l)
	return l, err
}

// DeleteProject deletes an empty project.
func (c *Client) DeleteProject(ctx context.Context, ref string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/projects/"+url.PathEscape(ref), nil, nil)
	return err
}

// SecretCreate is what CreateSecret sends.
type SecretCreate struct {
	DisplayName string
	Payload     []byte            `redact:"true"`
	KeyValues   map[string]string `redact:"true"`
	ExpiresAt   *time.Time
}

func rfc3339(t *time.Time) string {
	if t == nil {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// CreateSecret creates a secret in a project and returns its metadata.
func (c *Client) CreateSecret(ctx context.Context, project string, in SecretCreate) (api.Secret, error) {
	var s api.Secret
	_, err := c.do(ctx, http.MethodPost, "/v1/projects/"+url.PathEscape(project)+"/secrets", api.SecretCreateRequest{
		DisplayName: in.DisplayName,
		Payload:     base64.StdEncoding.EncodeToString(in.Payload),
		KeyValues:   in.KeyValues,
		ExpiresAt:   rfc3339(in.ExpiresAt),
	}, &s)
	return s, err
}

// GetSecret reads a secret's metadata.
func (c *Client) GetSecret(ctx context.Context, id string) (api.Secret, error) {
	var s api.Secret
	_, err := c.do(ctx, http.MethodGet, "/v1/secrets/"+url.PathEscape(id), nil, &s)
	return s, err
}

// ListSecrets lists one page of a project's secrets.
func (c *Client) ListSecrets(ctx context.Context, project string, page PageQuery) (api.List[api.Secret], error) {
	return c.ListSecretsExpiring(ctx, project, "", page)
}

// ListSecretsExpiring is ListSecrets of the active secrets expiring within
// a span ("7d", "2weeks", "12h"; "" for all).
func (c *Client) ListSecretsExpiring(ctx context.Context, project, within string, page PageQuery) (api.List[api.Secret], error) {
	q := page.encode()
	if within != "" {
		if q == "" {
			q = "?"
		} else {
			q += "&"
		}
		q += "expiring_within=" + url.QueryEscape(within)
	}
	var l api.List[api.Secret]
	_, err := c.do(ctx, http.MethodGet, "/v1/projects/"+url.PathEscape(project)+"/secrets"+q, nil, &l)
	return l, err
}

// SecretRotate is what RotateSecret sends. KeyValues nil keeps the current
// ones; an empty map clears them.
type SecretRotate struct {
	Payload   []byte            `redact:"true"`
	KeyValues map[string]string `redact:"true"`
	ExpiresAt *time.Time
	CAS       *int
}

// RotateSecret replaces a secret's payload with a new version.
func (c *Client) RotateSecret(ctx context.Context, id string, in SecretRotate) (api.Secret, error) {
	var s api.Secret
	_, err := c.do(ctx, http.MethodPost, "/v1/secrets/"+url.PathEscape(id)+"/rotate", api.SecretRotateRequest{
		Payload:   base64.StdEncoding.EncodeToString(in.Payload),
		KeyValues: in.KeyValues,
		ExpiresAt: rfc3339(in.ExpiresAt),
		CAS:       in.CAS,
	}, &s)
	return s, err
}

// RevokeSecret revokes a secret and destroys its ciphertext.
func (c *Client) RevokeSecret(ctx context.Context, id string) (api.Secret, error) {
	var s api.Secret
	_, err := c.do(ctx, http.MethodPost, "/v1/secrets/"+url.PathEscape(id)+"/revoke", nil, &s)
	return s, err
}

// DeleteSecret deletes a secret.
func (c *Client) DeleteSecret(ctx context.Context, id string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/secrets/"+url.PathEscape(id), nil, nil)
	return err
}

// CreateBinding binds a secret to {unit, credential} or {user, name}.
func (c *Client) CreateBinding(ctx context.Context, secretID string, in api.BindingCreateRequest) (api.Binding, error) {
	var b api.Binding
	_, err := c.do(ctx, http.MethodPost, "/v1/secrets/"+url.PathEscape(secretID)+"/bindings", in, &b)
	return b, err
}

// ListBindings lists a secret's bindings.
func (c *Client) ListBindings(ctx context.Context, secretID string) (api.List[api.Binding], error) {
	var l api.List[api.Binding]
	_, err := c.do(ctx, http.MethodGet, "/v1/secrets/"+url.PathEscape(secretID)+"/bindings", nil, &l)
	return l, err
}

// DeleteBinding removes a binding.
func (c *Client) DeleteBinding(ctx context.Context, secretID, bindingID string) error {
	_, err := c.do(ctx, http.MethodDelete, "/v1/secrets/"+url.PathEscape(secretID)+"/bindings/"+url.PathEscape(bindingID), nil, nil)
	return err
}

// Deliver fetches the raw payload bound to the caller under name. The
// caller should clear it once used.
func (c *Client) Deliver(ctx context.Context, name string) ([]byte, error) {
	return c.DeliverKey(ctx, name, "")
}

// DeliverKey fetches one key_values entry of the secret bound to the caller
// under name (the payload when key is empty).
func (c *Client) DeliverKey(ctx context.Context, name, key string) ([]byte, error) {
	return c.DeliverFrom(ctx, name, key, "")
}

// DeliverFrom is DeliverKey for a name bound to the caller in several
// projects: project (a name or id) says which one's.
func (c *Client) DeliverFrom(ctx context.Context, name, key, project string) ([]byte, error) {
	u := "http://coffer/v1/deliver/" + url.PathEscape(name)
	q := url.Values{}
	if key != "" {
		q.Set("key", key)
	}
	if project != "" {
		q.Set("project", project)
	}
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.roundTrip(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return nil, apiError(resp)
	}
	b, err := api.ReadSecret(io.LimitReader(resp.Body, 1<<20+1), resp.ContentLength)
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("read payload: %w", err)
	}
	return b, nil
}
