package client

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
)

// WhoAmI asks who the daemon takes the caller to be.
func (c *Client) WhoAmI(ctx context.Context) (api.Self, error) {
	var s api.Self
	_, err := c.do(ctx, http.MethodGet, "/v1/whoami", nil, &s)
	return s, err
}
