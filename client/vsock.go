package client

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/mdlayher/vsock"
)

// NewVsockClient returns a client of the daemon listening on AF_VSOCK at
// (cid, port): from inside a VM the host is CID 2 (vsock.Host); on the host
// itself the loopback transport answers on CID 1 (vsock.Local). The daemon
// identifies the caller by the context id the host kernel gave its VM.
func NewVsockClient(cid, port uint32) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			defer cancel()
			return vsock.DialContext(ctx, cid, port, nil)
		},
		MaxIdleConns:        16,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     30 * time.Second,
	}
	return &Client{addr: fmt.Sprintf("vsock:%d:%d", cid, port), hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}
}
