package client

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
	return c.download(ctx, "/v1/backup", w)
}

// download streams the answer of GET path into w, with no overall time
// limit (ctx ends it), and returns how many bytes it wrote.
func (c *Client) download(ctx context.Context, path string, w io.Writer) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://coffer"+path, nil)
	if err != nil {
		return 0, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.hc
	hc.Timeout = 0
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
		return n, fmt.Errorf("GET %s: %w", req.URL.Path, err)
	}
	return n, nil
}
