package client

import (
	"context"
	"net/http"
	"net/url"
	"strconv"

	"github.com/coffer-hsm/coffer/api"
)

// AuditEntries returns up to limit entries of the audit log after seq
// after (limit 0: the server's maximum).
func (c *Client) AuditEntries(ctx context.Context, after uint64, limit int) (api.AuditEntries, error) {
	v := url.Values{"after": {strconv.FormatUint(after, 10)}}
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
	var out api.AuditEntries
	_, err := c.do(ctx, http.MethodGet, "/v1/audit?"+v.Encode(), nil, &out)
	return out, err
}

// AuditTail returns the last n entries of the audit log.
func (c *Client) AuditTail(ctx context.Context, n int) (api.AuditEntries, error) {
	var out api.AuditEntries
	_, err := c.do(ctx, http.MethodGet, "/v1/audit?tail="+strconv.Itoa(n), nil, &out)
	return out, err
}

// AuditVerify has the daemon verify its whole audit log.
func (c *Client) AuditVerify(ctx context.Context) (api.AuditReport, error) {
	var out api.AuditReport
	_, err := c.do(ctx, http.MethodPost, "/v1/audit/verify", nil, &out)
	return out, err
}
