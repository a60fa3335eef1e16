package main

import (
	"sync"

	"google.golang.org/grpc"
)

// grpcShared is one client connection shared by every worker of a
// measurement: kube-apiserver keeps one connection to each KMS plugin and
// to its external signer and multiplexes its concurrent calls on it, so
// the gRPC scenarios load the daemon the same way. The connection is made
// by the first worker, to the target of that moment (the daemon measured
// now may have restarted elsewhere), and closed by the last cleanup.
type grpcShared struct {
	target func() string
	opts   []grpc.DialOption

	mu   sync.Mutex
	conn *grpc.ClientConn
	refs int
}

func newGRPCShared(target func() string, opts ...grpc.DialOption) *grpcShared {
	return &grpcShared{target: target, opts: opts}
}

// get returns the shared connection and the worker's release.
func (g *grpcShared) get() (*grpc.ClientConn, func(), error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.conn == nil {
		c, err := grpc.NewClient(g.target(), g.opts...)
		if err != nil {
			return nil, nil, err
		}
		g.conn = c
	}
	g.refs++
	var once sync.Once
	return g.conn, func() { once.Do(g.release) }, nil
}

func (g *grpcShared) release() {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.refs--; g.refs == 0 {
		g.conn.Close()
		g.conn = nil
	}
}
