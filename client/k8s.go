package client

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
)

// KMSKeys lists the key ids the Kubernetes KMS used, with counts and times.
func (c *Client) KMSKeys(ctx context.Context) (api.KMSKeys, error) {
	var k api.KMSKeys
	_, err := c.do(ctx, http.MethodGet, "/v1/k8s/kms-keys", nil, &k)
	return k, err
}
