package kms

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/k8s/internal/peer"
)

// openService opens a real domain over a SoftHSM dev token and Badger.
func openService(t testing.TB) *daemon.Service {
	t.Helper()
	if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
		t.Fatalf("SoftHSM is required (make test-deps installs it): %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	hcfg, err := hsm.PrepareDevToken(ctx, filepath.Join(dir, "hsm"), hsm.DefaultModulePath, "coffer-kms-grpc")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := daemon.Open(ctx, daemon.Config{StateDir: filepath.Join(dir, "state"), HSM: hcfg, Version: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

// socketDir is a short directory for sockets (sun_path is 108 bytes).
func socketDir(t testing.TB) string {
	t.Helper()
	d, err := os.MkdirTemp("", "kms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

type served struct {
	client kmsapi.KeyManagementServiceClient
	cancel context.CancelFunc
	done   chan error
	logs   *lockedBuf
}

// lockedBuf is a log the server writes from its goroutines.
type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// serve runs a Server over b on a real Unix socket and dials it with the
// generated KMS v2 client, as kube-apiserver does.
func serve(t testing.TB, b Backend, allow func(uint32) bool) *served {
	t.Helper()
	path := filepath.Join(socketDir(t), "kms.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuf{}
	srv := New(b, Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if allow != nil {
		l = &denyListener{Listener: l, allow: allow}
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		<-done
	})
	return &served{client: kmsapi.NewKeyManagementServiceClient(conn), cancel: cancel, done: done, logs: logs}
}

// denyListener lets a test decide on peers as peer.Listener's Allow does.
type denyListener struct {
	net.Listener
	allow func(uint32) bool
}

func (l *denyListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	uid, err := peer.UID(c)
	if err != nil || !l.allow(uid) {
		c.Close()
		return l.Accept()
	}
	return c, nil
}

func TestKmsGRPC(t *testing.T) {
	svc := openService(t)
	s := serve(t, svc, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	st, err := s.client.Status(ctx, &kmsapi.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.Version != "v2" || st.Healthz != "ok" || st.KeyId != "coffer-kek-1" {
		t.Fatalf("status %+v", st)
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	enc, err := s.client.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: seed, Uid: "req-1"})
	if err != nil {
		t.Fatal(err)
	}
	if enc.KeyId != st.KeyId || bytes.Contains(enc.Ciphertext, seed) || len(enc.Annotations) != 1 {
		t.Fatalf("encrypt: key id %q, %d annotations", enc.KeyId, len(enc.Annotations))
	}
	for k := range enc.Annotations {
		if strings.Contains(k, "/") || !strings.Contains(k, ".") {
			t.Fatalf("annotation key %q is not a domain name", k)
		}
	}
	dec, err := s.client.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations, Uid: "req-2"})
	if err != nil || !bytes.Equal(dec.Plaintext, seed) {
		t.Fatalf("decrypt: %v", err)
	}

	// Errors carry gRPC codes and the domain's message, never the plaintext.
	tampered := bytes.Clone(enc.Ciphertext)
	tampered[len(tampered)-1] ^= 1
	for _, c := range []struct {
		name string
		call func() error
		want codes.Code
	}{
		{"tampered", func() error {
			_, err := s.client.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: tampered, KeyId: enc.KeyId, Annotations: enc.Annotations})
			return err
		}, codes.InvalidArgument},
		{"no annotations", func() error {
			_, err := s.client.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId})
			return err
		}, codes.InvalidArgument},
		{"empty plaintext", func() error {
			_, err := s.client.Encrypt(ctx, &kmsapi.EncryptRequest{})
			return err
		}, codes.InvalidArgument},
		{"unknown KEK", func() error {
			_, err := s.client.Decrypt(ctx, &kmsapi.DecryptRequest{Ciphertext: bytes.Replace(enc.Ciphertext, []byte("coffer-kek-1"), []byte("coffer-kek-7"), 1), KeyId: "coffer-kek-7", Annotations: enc.Annotations})
			return err
		}, codes.NotFound},
	} {
		err := c.call()
		if status.Code(err) != c.want {
			t.Errorf("%s: %v, want %s", c.name, err, c.want)
		}
		if err != nil && bytes.Contains([]byte(err.Error()), seed) {
			t.Errorf("%s: the error holds the plaintext", c.name)
		}
	}
	if bytes.Contains(s.logs.Bytes(), seed) {
		t.Fatal("the log holds the plaintext")
	}

	// Graceful stop: Serve returns nil, later calls fail.
	s.cancel()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("serve after stop: %v", err)
		}
		s.done <- nil // for the cleanup
	case <-time.After(15 * time.Second):
		t.Fatal("the server did not stop")
	}
	cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
	defer ccancel()
	if _, err := s.client.Status(cctx, &kmsapi.StatusRequest{}); err == nil {
		t.Fatal("a call after the stop was answered")
	}
}

// TestKmsPeerRefused: a peer the listener does not allow gets no answer.
func TestKmsPeerRefused(t *testing.T) {
	svc := openService(t)
	s := serve(t, svc, func(uint32) bool { return false })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := s.client.Status(ctx, &kmsapi.StatusRequest{}); err == nil {
		t.Fatal("a refused peer was answered")
	}
	srv := New(svc, Options{AllowUIDs: []uint32{4242}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if !srv.allowed(0) || !srv.allowed(uint32(os.Getuid())) || !srv.allowed(4242) || srv.allowed(4243) && os.Getuid() != 4243 {
		t.Fatal("allowed uids")
	}
}

// BenchmarkKmsDecryptGRPC: one Decrypt over the socket (HSM unwrap each).
func BenchmarkKmsDecryptGRPC(b *testing.B) {
	svc := openService(b)
	s := serve(b, svc, nil)
	ctx := context.Background()
	enc, err := s.client.Encrypt(ctx, &kmsapi.EncryptRequest{Plaintext: make([]byte, 32)})
	if err != nil {
		b.Fatal(err)
	}
	req := &kmsapi.DecryptRequest{Ciphertext: enc.Ciphertext, KeyId: enc.KeyId, Annotations: enc.Annotations}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.client.Decrypt(ctx, req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkKmsStatusGRPC: Status over the socket (cached health).
func BenchmarkKmsStatusGRPC(b *testing.B) {
	svc := openService(b)
	s := serve(b, svc, nil)
	ctx := context.Background()
	for b.Loop() {
		if _, err := s.client.Status(ctx, &kmsapi.StatusRequest{}); err != nil {
			b.Fatal(err)
		}
	}
}
