package unixapi

import (
	"context"
	"fmt"
	"io"
	"net/http"
)

// Backup streams a sealed backup of the daemon's store into w (system
// admins only) and returns how many bytes it wrote. The stream has no
// overall time limit; ctx ends it. A daemon that fails mid-way cuts the
// stream, which reads as a backup without its final chunk.
func (c *Client) Backup(ctx context.Context, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://coffer/v1/backup", nil)
	if err != nil {
		return 0, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.hc
	hc.Timeout = 0 // a backup takes as long as the store is big
	resp, err := (&Client{addr: c.addr, hc: &hc}).roundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 {
		return 0, apiError(resp)
	}
	n, err := io.Copy(w, resp.Body)
	if err != nil {
		return n, fmt.Errorf("GET /v1/backup: %w", err)
	}
	return n, nil
}
