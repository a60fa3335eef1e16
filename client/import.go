package client

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"

	"github.com/coffer-hsm/coffer/api"
)

// ImportKey returns the host's import key (GET /v1/hsm/import-key).
func (c *Client) ImportKey(ctx context.Context) (api.ImportKey, error) {
	var k api.ImportKey
	_, err := c.do(ctx, http.MethodGet, "/v1/hsm/import-key", nil, &k)
	return k, err
}

// ImportSecret sends a sealed file (coffer seal), as it is, to be
// imported into project.
func (c *Client) ImportSecret(ctx context.Context, project string, sealed []byte) (api.Secret, error) {
	path := "/v1/projects/" + url.PathEscape(project) + "/secrets:import"
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://coffer"+path, bytes.NewReader(sealed))
	if err != nil {
		return api.Secret{}, fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	var s api.Secret
	_, err = c.send(req, http.MethodPost, path, &s)
	return s, err
}
