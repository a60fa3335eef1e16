package client

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
)

// K8sSAKeys lists the Kubernetes service-account signing keys.
func (c *Client) K8sSAKeys(ctx context.Context) (api.K8sSAKeys, error) {
	var k api.K8sSAKeys
	_, err := c.do(ctx, http.MethodGet, "/v1/k8s/sa-keys", nil, &k)
	return k, err
}

// RotateK8sSAKey makes a new Kubernetes service-account signing key
// current; the previous one stays published until every token it signed
// has expired.
func (c *Client) RotateK8sSAKey(ctx context.Context) (api.K8sSAKeyRotation, error) {
	var r api.K8sSAKeyRotation
	_, err := c.do(ctx, http.MethodPost, "/v1/k8s/sa-key:rotate", nil, &r)
	return r, err
}
