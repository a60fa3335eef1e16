package unixapi

import (
	"context"
	"net/http"
)

// KMSKeys lists the key ids the Kubernetes KMS used, with counts and times.
func (c *Client) KMSKeys(ctx context.Context) (KMSKeys, error) {
	var k KMSKeys
	_, err := c.do(ctx, http.MethodGet, "/v1/k8s/kms-keys", nil, &k)
	return k, err
}
