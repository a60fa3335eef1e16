// Package kms serves the Kubernetes KMS v2 plugin API (gRPC over a Unix
// socket) for kube-apiserver's encryption at rest. The cryptography, key
// ids and the bookkeeping of which KEK the cluster still needs are the
// domain's (daemon/kms.go); this package is the transport: the gRPC
// server of k8s.io/kms/pkg/service around the domain, a check of who
// connects, error mapping, and a graceful stop with the daemon.
package kms

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/k8s/internal/peer"
)

// APIVersion is the KMS plugin API version Status reports; kube-apiserver
// accepts "v2" (and "v2beta1").
const APIVersion = "v2"

// DefaultStopTimeout bounds the graceful stop: in-flight calls get this long
// to finish before the connections are closed.
const DefaultStopTimeout = 10 * time.Second

// maxRecvMsg bounds a request: a 1 KiB ciphertext and up to 32 KiB of
// annotations (KMS v2's limits) with room to spare.
const maxRecvMsg = 64 << 10

// Backend is what the plugin needs of the domain; *daemon.Service is one.
type Backend interface {
	KMSEncrypt(ctx context.Context, plaintext []byte) ([]byte, string, map[string][]byte, error)
	KMSDecrypt(ctx context.Context, ciphertext []byte, keyID string, annotations map[string][]byte) ([]byte, error)
	KMSStatus(ctx context.Context) daemon.KMSStatus
}

// Options configure a Server.
type Options struct {
	Logger *slog.Logger
	// AllowUIDs are the peers (by SO_PEERCRED uid) that may connect
	// besides root and the daemon's own uid. kube-apiserver runs as root
	// in kubeadm and k3s.
	AllowUIDs []uint32
	// StopTimeout bounds the graceful stop; 0: DefaultStopTimeout.
	StopTimeout time.Duration
}

// Server is the KMS v2 gRPC server.
type Server struct {
	b    Backend
	log  *slog.Logger
	opts Options
	gs   *grpc.Server
}

// New returns a Server over b.
func New(b Backend, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	s := &Server{b: b, log: opts.Logger, opts: opts}
	s.gs = grpc.NewServer(grpc.MaxRecvMsgSize(maxRecvMsg), grpc.ConnectionTimeout(5*time.Second),
		// Calls run on a few long-lived goroutines whose stacks have
		// grown, not on a new goroutine each (whose stack grows again
		// through the HSM call: 7% of a call's CPU).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))))
	// The library's gRPC service adapts the API to a service.Service; its
	// own listener is not used: the daemon sets up the socket (mode,
	// stale file, a live daemon) and this package checks the peers.
	kmsapi.RegisterKeyManagementServiceServer(s.gs, service.NewGRPCService("", 0, plugin{s}))
	return s
}

// Serve serves l until ctx ends, then stops gracefully: no new calls,
// in-flight ones finish (for at most the stop timeout). It returns nil
// after such a stop.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		select {
		case <-ctx.Done():
			s.stop()
		case <-done:
		}
	})
	err := s.gs.Serve(&peer.Listener{Listener: l, Allow: s.allowed, What: "kms", Log: s.log})
	close(done)
	wg.Wait()
	if ctx.Err() != nil || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("kms: serve: %w", err)
	}
	return nil
}

// stop is a graceful stop bounded by the stop timeout.
func (s *Server) stop() {
	timeout := s.opts.StopTimeout
	if timeout <= 0 {
		timeout = DefaultStopTimeout
	}
	stopped := make(chan struct{})
	go func() {
		s.gs.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(timeout):
		s.log.Warn("kms: calls still running at the stop timeout; closing their connections", "timeout", timeout)
		s.gs.Stop()
		<-stopped
	}
}

// allowed says whether a peer uid may use the plugin.
func (s *Server) allowed(uid uint32) bool { return peer.Allowed(uid, s.opts.AllowUIDs) }

// plugin is the service.Service the library's gRPC server calls.
type plugin struct{ s *Server }

var _ service.Service = plugin{}

func (p plugin) Encrypt(ctx context.Context, uid string, data []byte) (*service.EncryptResponse, error) {
	// The seed is the request's own buffer, used by nothing after this.
	defer clear(data)
	ct, keyID, ann, err := p.s.b.KMSEncrypt(ctx, data)
	if err != nil {
		return nil, p.s.grpcErr("encrypt", uid, err)
	}
	p.s.log.Debug("kms: encrypt", "uid", uid, "key_id", keyID)
	return &service.EncryptResponse{Ciphertext: ct, KeyID: keyID, Annotations: ann}, nil
}

func (p plugin) Decrypt(ctx context.Context, uid string, req *service.DecryptRequest) ([]byte, error) {
	pt, err := p.s.b.KMSDecrypt(ctx, req.Ciphertext, req.KeyID, req.Annotations)
	if err != nil {
		return nil, p.s.grpcErr("decrypt", uid, err)
	}
	p.s.log.Debug("kms: decrypt", "uid", uid, "key_id", req.KeyID)
	return pt, nil
}

func (p plugin) Status(ctx context.Context) (*service.StatusResponse, error) {
	st := p.s.b.KMSStatus(ctx)
	return &service.StatusResponse{Version: APIVersion, Healthz: st.Healthz, KeyID: st.KeyID}, nil
}

// grpcErr maps a domain error to a gRPC status with the domain's safe
// message, and logs it. uid is kube-apiserver's request id.
func (s *Server) grpcErr(op, uid string, err error) error {
	code := codes.Internal
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codes.DeadlineExceeded
	case errors.Is(err, context.Canceled):
		code = codes.Canceled
	case errors.Is(err, daemon.ErrInvalidArgument):
		code = codes.InvalidArgument
	case errors.Is(err, daemon.ErrNotFound):
		code = codes.NotFound
	case errors.Is(err, daemon.ErrUnavailable):
		code = codes.Unavailable
	case errors.Is(err, daemon.ErrForbidden):
		code = codes.PermissionDenied
	}
	s.log.Warn("kms: "+op+" failed", "uid", uid, "code", code.String(), "err", err)
	return status.Error(code, "coffer kms "+op+": "+daemon.MessageOf(err))
}
