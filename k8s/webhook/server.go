package webhook

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/unixapi"
)

// MinBearerLen is the shortest bearer the apiserver may present (the
// --k8s-bearer-file): at least 128 bits of base64 or hex.
const MinBearerLen = 32

// DefaultMaxConns is how many connections the listener has open at once
// unless Config.MaxConns says otherwise: kube-apiserver keeps a few
// keep-alive connections; the rest wait in the kernel's listen backlog
// (see unixapi.LimitListener), so a flood of local connections, each
// handshake an HSM signature, costs a bounded amount.
const DefaultMaxConns = 64

// handshakeTimeout bounds the TLS handshake and the reading of a request's
// headers (net/http bounds the handshake by the least of its read and
// write timeouts, here ReadHeaderTimeout): a peer that connects and stays
// silent frees its slot within it. A variable for the tests.
var handshakeTimeout = 5 * time.Second

// Config configures the HTTPS listener.
type Config struct {
	// Addr is host:port; a host that is not a loopback address is refused
	// unless AllowAny.
	Addr     string
	AllowAny bool
	// Cert is the serving certificate (its key in the HSM).
	Cert tls.Certificate
	// ClientCAs, when set, makes the listener require a client
	// certificate chaining to them.
	ClientCAs *x509.CertPool
	// Bearer, when set, must be presented as Authorization: Bearer.
	Bearer []byte
	// MaxConns caps the connections open at once; 0 means
	// DefaultMaxConns.
	MaxConns int
	Logger   *slog.Logger
}

// Server is the webhooks' HTTPS server.
type Server struct {
	cfg Config
	srv *http.Server
	// What authenticates the apiserver now; Reload replaces them.
	bearer atomic.Pointer[[32]byte]   // SHA-256 of the bearer; nil: none
	tlsc   atomic.Pointer[tls.Config] // with the client CAs of now
}

// CheckAddr refuses a listen address that is not loopback (unless
// allowAny): the webhooks are for the apiserver on this host.
func CheckAddr(addr string, allowAny bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--k8s-listen %q: want HOST:PORT, e.g. 127.0.0.1:8443", addr)
	}
	if allowAny {
		return nil
	}
	if ip := net.ParseIP(host); (ip != nil && ip.IsLoopback()) || host == "localhost" {
		return nil
	}
	return fmt.Errorf("--k8s-listen %q is not a loopback address: the webhooks serve the kube-apiserver of this host; add --k8s-listen-any to serve another interface", addr)
}

// ReadBearer reads the bearer the apiserver must present: the file's
// content without surrounding white space, at least MinBearerLen bytes,
// printable ASCII without spaces (it goes in a header). The error never
// quotes it.
func ReadBearer(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--k8s-bearer-file: %w", err)
	}
	b = []byte(strings.TrimSpace(string(b)))
	if len(b) < MinBearerLen {
		return nil, fmt.Errorf("--k8s-bearer-file %s: the bearer is shorter than %d bytes", path, MinBearerLen)
	}
	for _, c := range b {
		if c <= ' ' || c > '~' {
			return nil, fmt.Errorf("--k8s-bearer-file %s: the bearer holds a space or a character that is not printable ASCII", path)
		}
	}
	return b, nil
}

// ReadClientCAs reads PEM certificates that client certificates must chain
// to (--k8s-client-ca).
func ReadClientCAs(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--k8s-client-ca: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("--k8s-client-ca %s: certificate %d: %w", path, n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("--k8s-client-ca %s holds no PEM certificate", path)
	}
	return pool, nil
}

// NewServer returns the server of h under cfg. It needs a way to
// authenticate the apiserver: a client CA, a bearer, or both (then both
// are required).
func NewServer(h http.Handler, cfg Config) (*Server, error) {
	if cfg.ClientCAs == nil && len(cfg.Bearer) == 0 {
		return nil, errors.New("the Kubernetes webhooks need --k8s-client-ca or --k8s-bearer-file: who may ask coffer about tokens must be known")
	}
	if err := CheckAddr(cfg.Addr, cfg.AllowAny); err != nil {
		return nil, err
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.MaxConns <= 0 {
		cfg.MaxConns = DefaultMaxConns
	}
	s := &Server{cfg: cfg}
	if len(cfg.Bearer) > 0 {
		sum := sha256.Sum256(cfg.Bearer)
		s.bearer.Store(&sum)
	}
	s.tlsc.Store(s.tlsConfig(cfg.ClientCAs))
	s.srv = &http.Server{
		Handler: s.authenticate(h),
		// Each handshake takes the configuration of the moment, so that a
		// Reload's client CAs apply to the next connection.
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"},
			GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
				return s.tlsc.Load(), nil
			},
		},
		ReadHeaderTimeout: handshakeTimeout, // and the TLS handshake
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

func (s *Server) tlsConfig(cas *x509.CertPool) *tls.Config {
	c := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{s.cfg.Cert},
		NextProtos:   []string{"http/1.1"},
	}
	if cas != nil {
		c.ClientAuth = tls.RequireAndVerifyClientCert
		c.ClientCAs = cas
	}
	return c
}

// Reload replaces what authenticates the apiserver: the bearer and the
// client CAs, read again from the files of the start (SIGHUP), so that
// kube-apiserver's credentials can be rotated without a restart. What
// authenticates stays what the start chose: a server started with a
// bearer needs one, a server started without a client CA takes none
// (that would turn client certificates on for an apiserver that sends
// none). Connections open now stay authenticated; a request on one is
// checked against the new bearer.
func (s *Server) Reload(bearer []byte, cas *x509.CertPool) error {
	switch {
	case (len(bearer) > 0) != (s.bearer.Load() != nil):
		return errors.New("the Kubernetes webhooks keep the authentication they started with: a bearer file cannot be added or dropped by a reload; restart coffer")
	case (cas != nil) != (s.cfg.ClientCAs != nil):
		return errors.New("the Kubernetes webhooks keep the authentication they started with: a client CA cannot be added or dropped by a reload; restart coffer")
	}
	if len(bearer) > 0 {
		sum := sha256.Sum256(bearer)
		s.bearer.Store(&sum)
	}
	if cas != nil {
		s.tlsc.Store(s.tlsConfig(cas))
	}
	return nil
}

// authenticate refuses a request without the bearer (when one is set)
// with 401. The client certificate was checked by the handshake.
func (s *Server) authenticate(h http.Handler) http.Handler {
	if len(s.cfg.Bearer) == 0 {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		scheme, tok, ok := strings.Cut(r.Header.Get("Authorization"), " ")
		got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		if !ok || !strings.EqualFold(scheme, "Bearer") || subtle.ConstantTimeCompare(got[:], s.bearer.Load()[:]) != 1 {
			s.cfg.Logger.Debug("Kubernetes webhook: a request without the right bearer", "route", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Set("WWW-Authenticate", `Bearer realm="coffer-k8s"`)
			// Not the apiserver: it keeps no slot (see DefaultMaxConns).
			w.Header().Set("Connection", "close")
			writeJSON(w, http.StatusUnauthorized, errorBody{"unauthenticated", "use Authorization: Bearer with the token of --k8s-bearer-file"})
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Listen opens the TCP listener of cfg.Addr.
func (s *Server) Listen() (net.Listener, error) {
	l, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen for the Kubernetes webhooks: %w", err)
	}
	return l, nil
}

// Serve serves HTTPS on l until Shutdown, at most Config.MaxConns
// connections at once.
func (s *Server) Serve(l net.Listener) error {
	err := s.srv.Serve(tls.NewListener(unixapi.LimitListener(l, s.cfg.MaxConns), s.srv.TLSConfig))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting and waits for in-flight reviews, or for ctx.
func (s *Server) Shutdown(ctx context.Context) error { return s.srv.Shutdown(ctx) }
