package unixapi

import (
	"context"
	"net/http"
)

// WhoAmI asks who the daemon takes the caller to be.
func (c *Client) WhoAmI(ctx context.Context) (Self, error) {
	var s Self
	_, err := c.do(ctx, http.MethodGet, "/v1/whoami", nil, &s)
	return s, err
}
