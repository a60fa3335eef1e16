package client

import (
	"context"
	"io"
	"net/url"
	"strconv"
	"time"
)

// Profile writes the daemon's runtime profile name (see GET
// /v1/debug/pprof/{profile}) into w, in the format go tool pprof reads. For
// the sampled profiles (profile, mutex, block) window is how long to
// sample; it is ignored for the others.
func (c *Client) Profile(ctx context.Context, name string, window time.Duration, w io.Writer) error {
	q := url.Values{}
	switch name {
	case "profile", "mutex", "block":
		q.Set("seconds", strconv.Itoa(max(1, int(window.Round(time.Second)/time.Second))))
	case "heap":
		q.Set("gc", "1")
	}
	_, err := c.download(ctx, "/v1/debug/pprof/"+url.PathEscape(name)+"?"+q.Encode(), w)
	return err
}

// ProfileText writes the text form (debug=1) of the runtime profile name
// (heap, allocs, goroutine or threadcreate) into w; heap's ends with the
// runtime's memory figures.
func (c *Client) ProfileText(ctx context.Context, name string, w io.Writer) error {
	_, err := c.download(ctx, "/v1/debug/pprof/"+url.PathEscape(name)+"?debug=1", w)
	return err
}
