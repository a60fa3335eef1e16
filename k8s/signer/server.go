// Package signer serves kube-apiserver's ExternalJWTSigner gRPC API
// (k8s.io/externaljwt/apis/v1, KEP-740) on a Unix socket: kube-apiserver,
// started with --service-account-signing-endpoint=<socket>, has coffer
// sign every ServiceAccount token with a key that never leaves the HSM,
// and fetches the public keys to verify them and publish them in its OIDC
// discovery document. The domain (keys, rotation, claims check) is
// daemon's; this package is the transport.
package signer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/k8s/internal/peer"
	"github.com/coffer-hsm/coffer/unixapi"
)

// Backend is what the signer needs of the domain; *daemon.Service is one.
type Backend interface {
	K8sSign(ctx context.Context, claims []byte) (header, sig []byte, err error)
	K8sPublicKeys(ctx context.Context) (daemon.K8sKeySet, error)
	K8sMaxTokenExpiration() (time.Duration, error)
	K8sSignerStats() daemon.K8sSignerStats
}

const (
	// maxRecvMsg bounds a request: the claims and the message's framing.
	maxRecvMsg = daemon.MaxK8sClaims + 1024
	// DefaultSummaryEvery is how often the signer logs what it signed.
	DefaultSummaryEvery = 15 * time.Minute
	// socketMode: only the daemon's user (and root, as kube-apiserver
	// usually runs) may connect.
	socketMode = 0o600
)

// Options configure a Server.
type Options struct {
	Logger *slog.Logger
	// SummaryEvery is how often a line with the signatures and refusals
	// since the last one is logged (when there were any); 0 means
	// DefaultSummaryEvery, negative never.
	SummaryEvery time.Duration
	// AllowUIDs may connect besides root and the daemon's own user (a
	// kube-apiserver that runs as another user, given the socket too).
	AllowUIDs []uint32
}

// Server is the ExternalJWTSigner service over a Backend.
type Server struct {
	externaljwtv1.UnimplementedExternalJWTSignerServer

	b    Backend
	log  *slog.Logger
	grpc *grpc.Server
	opts Options

	mu       sync.Mutex
	path     string // the socket Listen made, removed by Stop
	stopOnce sync.Once
	done     chan struct{}
	wg       sync.WaitGroup

	allow func(uid uint32) bool // the peer check: s.allowed (tests replace it)

	statsMu                 sync.Mutex
	lastSigned, lastRefused uint64 // at the last summary
}

// New returns a Server for b.
func New(b Backend, opts Options) *Server {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.SummaryEvery == 0 {
		opts.SummaryEvery = DefaultSummaryEvery
	}
	s := &Server{b: b, log: opts.Logger, opts: opts, done: make(chan struct{})}
	s.allow = s.allowed
	s.grpc = grpc.NewServer(
		grpc.MaxRecvMsgSize(maxRecvMsg),
		grpc.ChainUnaryInterceptor(s.logCall),
		// Calls run on a few long-lived goroutines whose stacks have
		// grown, not on a new goroutine each (whose stack grows again
		// through the HSM call: 7% of a call's CPU).
		grpc.NumStreamWorkers(uint32(runtime.GOMAXPROCS(0))),
	)
	externaljwtv1.RegisterExternalJWTSignerServer(s.grpc, s)
	return s
}

// Listen makes the Unix socket at path (unixapi.ListenUnixPlain, private):
// it refuses a directory other users can write and a socket file of
// another uid, refuses when something live answers there, removes a stale
// socket file, and gives the new one mode 0600 (owned by the daemon's
// user), or 0666 when Options.AllowUIDs names other users (every
// connection's uid is checked at accept).
func (s *Server) Listen(path string) (net.Listener, error) {
	mode := os.FileMode(socketMode)
	if len(s.opts.AllowUIDs) > 0 {
		mode = 0o666
	}
	l, err := unixapi.ListenUnixPlain(path, unixapi.SocketOptions{Mode: mode, GID: -1, Logger: s.log, Private: true})
	if err != nil {
		return nil, fmt.Errorf("the Kubernetes signer socket: %w", err)
	}
	// The listener removes the file when closed; Stop does it too, for a
	// listener closed by grpc.
	l.SetUnlinkOnClose(true)
	s.mu.Lock()
	s.path = path
	s.mu.Unlock()
	return l, nil
}

// Serve answers on l until Stop, refusing connections from peers other
// than root, the daemon's user and Options.AllowUIDs (SO_PEERCRED). It
// returns nil after Stop.
func (s *Server) Serve(l net.Listener) error {
	if s.opts.SummaryEvery > 0 {
		s.wg.Add(1)
		go s.summaries()
	}
	err := s.grpc.Serve(&peer.Listener{Listener: l, Allow: s.allow, What: "Kubernetes signer", Log: s.log})
	if errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return err
}

// Stop stops accepting calls and waits for the calls in flight, or for
// ctx to end (then it cuts them off), and removes the socket. Safe to call
// more than once.
func (s *Server) Stop(ctx context.Context) {
	s.stopOnce.Do(func() {
		close(s.done)
		stopped := make(chan struct{})
		go func() {
			s.grpc.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-ctx.Done():
			s.grpc.Stop()
			<-stopped
		}
		s.wg.Wait()
		s.mu.Lock()
		if s.path != "" {
			if err := os.Remove(s.path); err != nil && !errors.Is(err, os.ErrNotExist) {
				s.log.Warn("remove Kubernetes signer socket", "path", s.path, "err", err)
			}
		}
		s.mu.Unlock()
		s.logSummary(true)
	})
}

// Sign signs a token's claims (see daemon.Service.K8sSign).
func (s *Server) Sign(ctx context.Context, req *externaljwtv1.SignJWTRequest) (*externaljwtv1.SignJWTResponse, error) {
	header, sig, err := s.b.K8sSign(ctx, []byte(req.GetClaims()))
	if err != nil {
		return nil, statusOf(err)
	}
	return &externaljwtv1.SignJWTResponse{Header: string(header), Signature: string(sig)}, nil
}

// FetchKeys returns the keys that verify the tokens.
func (s *Server) FetchKeys(ctx context.Context, _ *externaljwtv1.FetchKeysRequest) (*externaljwtv1.FetchKeysResponse, error) {
	set, err := s.b.K8sPublicKeys(ctx)
	if err != nil {
		return nil, statusOf(err)
	}
	out := &externaljwtv1.FetchKeysResponse{
		DataTimestamp:      timestamppb.New(set.DataTimestamp),
		RefreshHintSeconds: int64(set.RefreshHint / time.Second),
	}
	for _, k := range set.Keys {
		out.Keys = append(out.Keys, &externaljwtv1.Key{KeyId: k.KeyID, Key: k.PKIX, ExcludeFromOidcDiscovery: k.ExcludeFromOIDCDiscovery})
	}
	return out, nil
}

// Metadata announces the longest token the signer signs.
func (s *Server) Metadata(context.Context, *externaljwtv1.MetadataRequest) (*externaljwtv1.MetadataResponse, error) {
	d, err := s.b.K8sMaxTokenExpiration()
	if err != nil {
		return nil, statusOf(err)
	}
	return &externaljwtv1.MetadataResponse{MaxTokenExpirationSeconds: int64(d / time.Second)}, nil
}

// statusOf maps the domain's error classes to gRPC codes, with the
// domain's message (which never holds secret material; the cause stays
// in the daemon's log).
func statusOf(err error) error {
	msg := err.Error()
	var de *daemon.Error
	if errors.As(err, &de) {
		msg = de.Message
	}
	switch {
	case errors.Is(err, daemon.ErrInvalidArgument):
		return status.Error(codes.InvalidArgument, msg)
	case errors.Is(err, daemon.ErrUnavailable):
		return status.Error(codes.Unavailable, msg)
	case errors.Is(err, context.Canceled):
		return status.Error(codes.Canceled, "canceled")
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, "deadline exceeded")
	default:
		return status.Error(codes.Internal, "internal error")
	}
}

// logCall logs failed calls (with their cause) at Warn, except refused
// claims, which the domain logs at a bounded rate; successful calls at
// Debug. Nothing of the claims is logged.
func (s *Server) logCall(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	start := time.Now()
	resp, err := h(ctx, req)
	code := status.Code(err)
	switch {
	case err == nil:
		if s.log.Enabled(ctx, slog.LevelDebug) {
			s.log.DebugContext(ctx, "Kubernetes signer call", "method", info.FullMethod, "took", time.Since(start).String())
		}
	case code != codes.InvalidArgument:
		s.log.WarnContext(ctx, "Kubernetes signer call failed", "method", info.FullMethod, "code", code.String(), "err", err)
	}
	return resp, err
}

func (s *Server) summaries() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.SummaryEvery)
	defer t.Stop()
	for {
		select {
		case <-s.done:
			return
		case <-t.C:
			s.logSummary(false)
		}
	}
}

// logSummary logs the signatures and refusals since the last summary
// when there were any, and the totals at the end when there were any.
func (s *Server) logSummary(final bool) {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	st := s.b.K8sSignerStats()
	signed, refused := st.Signed-s.lastSigned, st.Refused-s.lastRefused
	s.lastSigned, s.lastRefused = st.Signed, st.Refused
	if signed == 0 && refused == 0 && (!final || st.Signed+st.Refused == 0) {
		return
	}
	s.log.Info("Kubernetes service-account tokens signed", "signed", signed, "refused", refused,
		"total_signed", st.Signed, "total_refused", st.Refused)
}
