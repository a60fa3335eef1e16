package signer

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	externaljwtv1 "k8s.io/externaljwt/apis/v1"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hsm"
)

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// openService opens a dev daemon (its own SoftHSM token) with the signer
// started.
func openService(t *testing.T) *daemon.Service {
	t.Helper()
	if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM required in CI: %v", err)
		}
		t.Skipf("skipping: SoftHSM not available: %v", err)
	}
	ctx := context.Background()
	svc, err := daemon.Open(ctx, daemon.Config{Dev: true, StateDir: t.TempDir(), Logger: quiet()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	if err := svc.StartK8sSigner(ctx, daemon.K8sSignerConfig{}); err != nil {
		t.Fatal(err)
	}
	return svc
}

// serve starts a Server for b on a socket in a fresh directory and
// returns the socket's path and a client of the generated v1 API.
func serve(t *testing.T, b Backend) (*Server, string, externaljwtv1.ExternalJWTSignerClient) {
	t.Helper()
	srv := New(b, Options{Logger: quiet()})
	path := filepath.Join(t.TempDir(), "k8s-signer.sock")
	l, err := srv.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Stop(context.Background())
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return srv, path, dial(t, path)
}

// dial connects as kube-apiserver does: plain gRPC over the Unix socket.
func dial(t *testing.T, path string) externaljwtv1.ExternalJWTSignerClient {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return externaljwtv1.NewExternalJWTSignerClient(conn)
}

func claims(t *testing.T, life time.Duration) string {
	t.Helper()
	now := time.Now()
	b, err := json.Marshal(map[string]any{
		"aud": []string{"https://kubernetes.default.svc"}, "iss": "https://kubernetes.default.svc",
		"sub": "system:serviceaccount:default:app", "iat": now.Unix(), "nbf": now.Unix(), "exp": now.Add(life).Unix(),
		"jti": "5d1e6a1c-0c0e-4d9b-8f7e-1f2b3c4d5e6f",
	})
	if err != nil {
		t.Fatal(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}

// assembleAndVerify builds the token as kube-apiserver does and verifies
// it with the key FetchKeys gives for its kid, as its verifier does. It
// returns the kid.
func assembleAndVerify(t *testing.T, keys *externaljwtv1.FetchKeysResponse, payload string, resp *externaljwtv1.SignJWTResponse) string {
	t.Helper()
	rawHdr, err := base64.RawURLEncoding.DecodeString(resp.Header)
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]string
	if err := json.Unmarshal(rawHdr, &h); err != nil || len(h) != 3 || h["typ"] != "JWT" || h["alg"] != "ES256" || h["kid"] == "" {
		t.Fatalf("header %s (%v): want exactly alg ES256, kid, typ JWT", rawHdr, err)
	}
	tok := resp.Header + "." + payload + "." + resp.Signature
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	if got := jws.Signatures[0].Header.KeyID; got != h["kid"] {
		t.Fatalf("go-jose reads kid %q, header says %q", got, h["kid"])
	}
	for _, k := range keys.Keys {
		if k.KeyId != h["kid"] {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(k.Key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := jws.Verify(pub); err != nil {
			t.Fatalf("token does not verify with FetchKeys' key %s: %v", k.KeyId, err)
		}
		return k.KeyId
	}
	t.Fatalf("kid %s is not among FetchKeys' keys", h["kid"])
	return ""
}

func TestSignerOverUnixSocket(t *testing.T) {
	svc := openService(t)
	_, path, c := serve(t, svc)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket %v: mode %v, want a socket with 0600", err, fi.Mode())
	}
	md, err := c.Metadata(ctx, &externaljwtv1.MetadataRequest{})
	if err != nil || md.MaxTokenExpirationSeconds != int64(daemon.DefaultK8sMaxTokenExpiration/time.Second) {
		t.Fatalf("Metadata = %v, %v", md, err)
	}
	keys, err := c.FetchKeys(ctx, &externaljwtv1.FetchKeysRequest{})
	if err != nil || len(keys.Keys) != 1 || keys.RefreshHintSeconds != 60 || keys.DataTimestamp.CheckValid() != nil ||
		keys.Keys[0].ExcludeFromOidcDiscovery || len(keys.Keys[0].KeyId) == 0 || len(keys.Keys[0].KeyId) > 1024 {
		t.Fatalf("FetchKeys = %v, %v", keys, err)
	}
	for range 10 {
		p := claims(t, time.Hour)
		resp, err := c.Sign(ctx, &externaljwtv1.SignJWTRequest{Claims: p})
		if err != nil {
			t.Fatal(err)
		}
		if kid := assembleAndVerify(t, keys, p, resp); kid != keys.Keys[0].KeyId {
			t.Fatalf("kid %s", kid)
		}
	}
	// Bad claims: InvalidArgument, with the reason and nothing of them.
	for _, tt := range []struct{ claims, msg string }{
		{claims(t, 25*time.Hour), "exp - iat is 90000s, more than the maximum token expiration of 86400s"},
		{"not base64!", "not base64url without padding"},
		{"", "empty"},
		{base64.RawURLEncoding.EncodeToString([]byte(`{"iss":"x"}`)), "sub is missing"},
	} {
		_, err := c.Sign(ctx, &externaljwtv1.SignJWTRequest{Claims: tt.claims})
		if st, _ := status.FromError(err); st.Code() != codes.InvalidArgument || st.Message() != "Kubernetes token claims: "+tt.msg {
			t.Errorf("Sign(%q) = %v, want InvalidArgument %q", tt.claims, err, tt.msg)
		}
	}
	// Too large for the server: refused by gRPC before the domain.
	_, err = c.Sign(ctx, &externaljwtv1.SignJWTRequest{Claims: strings.Repeat("A", 2*daemon.MaxK8sClaims)})
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Sign(128 KiB) = %v, want ResourceExhausted", err)
	}
	if st := svc.K8sSignerStats(); st.Signed != 10 || st.Refused != 4 {
		t.Fatalf("stats %+v", st)
	}
}

// unavailable is a Backend whose signer is not started.
type unavailable struct{}

func (unavailable) K8sSign(context.Context, []byte) ([]byte, []byte, error) {
	return nil, nil, &daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeUnavailable, Message: "the HSM is unavailable", Err: errors.New("CKR_DEVICE_REMOVED")}
}
func (unavailable) K8sPublicKeys(context.Context) (daemon.K8sKeySet, error) {
	return daemon.K8sKeySet{}, errors.New("boom: a cause for the log only")
}
func (unavailable) K8sMaxTokenExpiration() (time.Duration, error) {
	return 0, &daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeUnavailable, Message: "not enabled"}
}
func (unavailable) K8sSignerStats() daemon.K8sSignerStats { return daemon.K8sSignerStats{} }

func TestSignerErrors(t *testing.T) {
	_, _, c := serve(t, unavailable{})
	ctx := context.Background()
	_, err := c.Sign(ctx, &externaljwtv1.SignJWTRequest{Claims: "e30"})
	if st, _ := status.FromError(err); st.Code() != codes.Unavailable || st.Message() != "the HSM is unavailable" {
		t.Errorf("Sign = %v, want Unavailable without the cause", err)
	}
	_, err = c.FetchKeys(ctx, &externaljwtv1.FetchKeysRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.Internal || st.Message() != "internal error" {
		t.Errorf("FetchKeys = %v, want Internal without the cause", err)
	}
	if _, err := c.Metadata(ctx, &externaljwtv1.MetadataRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("Metadata = %v", err)
	}
}

func TestSignerSocket(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "s.sock")

	// A stale socket file (its listener died) is replaced.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	srv := New(unavailable{}, Options{Logger: quiet()})
	l2, err := srv.Listen(path)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	done := make(chan error, 1)
	go func(srv *Server, l net.Listener) { done <- srv.Serve(l) }(srv, l2)

	// A live one is not.
	other := New(unavailable{}, Options{Logger: quiet()})
	if _, err := other.Listen(path); err == nil || !strings.Contains(err.Error(), "already serving") {
		t.Fatalf("Listen over a live socket = %v", err)
	}
	// Nor a file that is not a socket.
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := other.Listen(file); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a file = %v", err)
	}

	// Stop stops serving and removes the socket.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Stop(ctx)
	srv.Stop(ctx) // twice is fine
	if err := <-done; err != nil {
		t.Fatalf("Serve after Stop = %v", err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket after Stop: %v", err)
	}
}

// instant answers Sign at once: the transport's own cost.
type instant struct{ unavailable }

func (instant) K8sSign(context.Context, []byte) ([]byte, []byte, error) {
	return []byte("eyJhbGciOiJFUzI1NiJ9"), []byte("c2ln"), nil
}

func BenchmarkSignTransport(b *testing.B) {
	srv := New(instant{}, Options{Logger: quiet()})
	path := filepath.Join(b.TempDir(), "s.sock")
	l, err := srv.Listen(path)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Stop(context.Background())
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithAuthority("localhost"))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := externaljwtv1.NewExternalJWTSignerClient(conn)
	req := &externaljwtv1.SignJWTRequest{Claims: strings.Repeat("e", 1200)}
	for b.Loop() {
		if _, err := c.Sign(context.Background(), req); err != nil {
			b.Fatal(err)
		}
	}
}

// A peer that is not root, the daemon's user or allowed is cut off at
// accept, whatever the socket's mode.
func TestSignerRefusesOtherPeers(t *testing.T) {
	srv := New(instant{}, Options{Logger: quiet()})
	srv.opts.AllowUIDs = []uint32{4242}
	if !srv.allowed(0) || !srv.allowed(uint32(os.Getuid())) || !srv.allowed(4242) || srv.allowed(4243) {
		t.Fatal("allowed: want root, the daemon's user and AllowUIDs only")
	}
	srv.allow = func(uint32) bool { return false }
	path := filepath.Join(t.TempDir(), "s.sock")
	l, err := srv.Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	defer srv.Stop(context.Background())
	c := dial(t, path)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if _, err := c.Sign(ctx, &externaljwtv1.SignJWTRequest{Claims: "e30"}); err == nil {
		t.Fatal("a refused peer had a token signed")
	}
}
