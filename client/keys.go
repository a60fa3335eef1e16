package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/coffer-hsm/coffer/api"
)

// HSMKeys lists the KEK versions and signing keys on the token and the
// progress of the last KEK rotation.
func (c *Client) HSMKeys(ctx context.Context) (api.HSMKeys, error) {
	var k api.HSMKeys
	_, err := c.do(ctx, http.MethodGet, "/v1/hsm/keys", nil, &k)
	return k, err
}

// RotateKEK makes a new KEK current and starts re-wrapping every sealed
// record; HSMKeys shows the progress.
func (c *Client) RotateKEK(ctx context.Context) (api.KEKRotation, error) {
	var r api.KEKRotation
	_, err := c.do(ctx, http.MethodPost, "/v1/hsm/kek:rotate", nil, &r)
	return r, err
}

// RemoveKEK destroys an old KEK that no sealed record uses. force also
// removes one the Kubernetes KMS may still need (409 kek_in_use without).
func (c *Client) RemoveKEK(ctx context.Context, label string, force bool) error {
	path := "/v1/hsm/keks/" + url.PathEscape(label)
	if force {
		path += "?force=true"
	}
	_, err := c.do(ctx, http.MethodDelete, path, nil, nil)
	return err
}

// RotateSigningKey makes a new signing key current.
func (c *Client) RotateSigningKey(ctx context.Context) (api.SigningKeyRotation, error) {
	var r api.SigningKeyRotation
	_, err := c.do(ctx, http.MethodPost, "/v1/hsm/signing-key:rotate", nil, &r)
	return r, err
}
