package client

import (
	"context"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
)

// K8sWebhook returns how the daemon serves the Kubernetes webhooks (404
// not_found when it does not).
func (c *Client) K8sWebhook(ctx context.Context) (api.K8sWebhook, error) {
	var k api.K8sWebhook
	_, err := c.do(ctx, http.MethodGet, "/v1/k8s/webhook-ca", nil, &k)
	return k, err
}
