package daemon

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

// fakeKeys seals in software with one fixed key. It stands in for the HSM
// in unit tests only; end-to-end tests use SoftHSM.
type fakeKeys struct {
	mu      sync.Mutex
	key     []byte
	sig     *ecdsa.PrivateKey
	signs   int
	fail    error // when set, every operation fails with it
	seals   int
	unseals int
}

func newFakeKeys() *fakeKeys {
	k := make([]byte, 32)
	rand.Read(k)
	sig, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	return &fakeKeys{key: k, sig: sig}
}

func (f *fakeKeys) Sign(_ context.Context, digest []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.signs++
	r, s, err := ecdsa.Sign(rand.Reader, f.sig, digest)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	r.FillBytes(out[:32])
	s.FillBytes(out[32:])
	return out, nil
}

func (f *fakeKeys) SigningPublicKey() *ecdsa.PublicKey { return &f.sig.PublicKey }

func (f *fakeKeys) gcm() cipher.AEAD {
	b, _ := aes.NewCipher(f.key)
	g, _ := cipher.NewGCM(b)
	return g
}

func (f *fakeKeys) Seal(_ context.Context, plaintext, aad []byte) (*hsm.Sealed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.seals++
	nonce := make([]byte, 12)
	rand.Read(nonce)
	return &hsm.Sealed{KEK: "fake-kek", Nonce: nonce, Ciphertext: f.gcm().Seal(nil, nonce, plaintext, aad)}, nil
}

func (f *fakeKeys) Unseal(_ context.Context, s *hsm.Sealed, aad []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.unseals++
	out, err := f.gcm().Open(nil, s.Nonce, s.Ciphertext, aad)
	if err != nil {
		return nil, hsm.ErrOpen
	}
	return out, nil
}

func (f *fakeKeys) Check(context.Context) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	return nil
}

func (f *fakeKeys) Info() hsm.Info {
	return hsm.Info{Module: "fake.so", TokenLabel: "fake", KeyLabels: []string{"fake-kek", "fake-sig"}}
}

func (f *fakeKeys) Close() error { return nil }

func (f *fakeKeys) setFail(err error) {
	f.mu.Lock()
	f.fail = err
	f.mu.Unlock()
}

type testEnv struct {
	svc   *Service
	keys  *fakeKeys
	store *kv.Store
	logs  *bytes.Buffer
	dir   string
}

// lockedBuffer lets the service log from many goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.Buffer.Write(p)
}

func newEnv(t *testing.T) *testEnv {
	t.Helper()
	dir := t.TempDir()
	store, err := kv.Open(context.Background(), kv.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	keys := newFakeKeys()
	logs := &lockedBuffer{}
	svc, err := New(context.Background(), Config{Version: "test", Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, keys, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return &testEnv{svc: svc, keys: keys, store: store, logs: &logs.Buffer, dir: dir}
}

var (
	rootPrincipal = Principal{Channel: ChannelUnix, HasCred: true, UID: 0, GID: 0, PID: 1}
	userPrincipal = Principal{Channel: ChannelUnix, HasCred: true, UID: 54321, GID: 54321, PID: 2}
	anonPrincipal = Principal{Channel: ChannelUnix}
	vsockGuest    = Principal{Channel: ChannelVsock, CID: 42}
)

func (e *testEnv) grant(t *testing.T, a Action, r Resource) Grant {
	t.Helper()
	g, err := e.svc.Authorize(context.Background(), rootPrincipal, a, r)
	if err != nil {
		t.Fatalf("authorize %s %+v: %v", a, r, err)
	}
	return g
}

func (e *testEnv) createSecret(t *testing.T, project string, in SecretInput) Secret {
	t.Helper()
	s, err := e.svc.CreateSecret(context.Background(), e.grant(t, ActManageProject, Resource{Project: project}), in)
	if err != nil {
		t.Fatalf("create secret: %v", err)
	}
	return s
}

// wantCode fails unless err has the wire code want ("" = no error).
func wantCode(t *testing.T, err error, want string) {
	t.Helper()
	if want == "" {
		if err != nil {
			t.Fatalf("unexpected error: %v", err)
		}
		return
	}
	if err == nil {
		t.Fatalf("got no error, want %s", want)
	}
	if got := CodeOf(err); got != want {
		t.Fatalf("got code %s (%v), want %s", got, err, want)
	}
}

var errFakeHSM = errors.New("CKR_DEVICE_REMOVED")
