package client

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// Watched is what a watch returned: a new version's payload (the caller
// clears it), or NotModified when the wait ended first.
type Watched struct {
	Payload     []byte
	Version     int
	SecretID    string
	NotModified bool
}

// WatchDelivery is GET /v1/deliver/{name}?wait=&after_version=: it returns
// once the secret bound to the caller under name is at a version newer
// than after (at once if it is), or NotModified after wait (at most 5
// minutes). key and project are DeliverFrom's. The client's own timeout
// is lifted by the wait; ctx ends it.
func (c *Client) WatchDelivery(ctx context.Context, name, key, project string, after int, wait time.Duration) (Watched, error) {
	q := url.Values{}
	if key != "" {
		q.Set("key", key)
	}
	if project != "" {
		q.Set("project", project)
	}
	q.Set("wait", wait.String())
	q.Set("after_version", strconv.Itoa(after))
	u := "http://coffer/v1/deliver/" + url.PathEscape(name) + "?" + q.Encode()
	ctx, cancel := context.WithTimeout(ctx, wait+60*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return Watched{}, err
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	hc := *c.hc
	hc.Timeout = 0
	resp, err := (&Client{addr: c.addr, hc: &hc}).roundTrip(req)
	if err != nil {
		return Watched{}, err
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified:
		return Watched{NotModified: true}, nil
	case resp.StatusCode >= 400:
		return Watched{}, apiError(resp)
	}
	b, err := api.ReadSecret(io.LimitReader(resp.Body, 1<<20+1), resp.ContentLength)
	if err != nil {
		clear(b)
		return Watched{}, fmt.Errorf("read payload: %w", err)
	}
	v, _ := strconv.Atoi(resp.Header.Get("X-Coffer-Secret-Version"))
	return Watched{Payload: b, Version: v, SecretID: resp.Header.Get("X-Coffer-Secret-Id")}, nil
}
