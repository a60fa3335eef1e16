package daemon

import (
	"bytes"
	"context"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"testing"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/hostseal"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

// fakeKeys seals in software with versioned keys, the way the HSM does
// (a fresh DEK per seal, wrapped by the current KEK). It stands in for the
// HSM in unit tests only; end-to-end tests use SoftHSM.
type fakeKeys struct {
	mu       sync.Mutex
	keks     map[string][]byte // by label
	kekLabel string            // current
	kekN     int
	sigs     map[string]crypto.Signer // *ecdsa.PrivateKey or *rsa.PrivateKey
	sigRSA   bool                     // new signing keys are RSA (PS256), as on a token without ECDSA
	sigLabel string
	sigN     int
	signs    int
	fail     error         // when set, every operation fails with it
	block    chan struct{} // when set, Check waits for it to close
	seals    int
	unseals  int
	rewraps  int
	unwraps  int
}

func newFakeKeys() *fakeKeys { return newFakeKeysRSA(false) }

// newFakeKeysRSA makes fake keys whose signing keys are RSA (PS256) when
// rsaSig is set, like a token that lacks P-256 ECDSA.
func newFakeKeysRSA(rsaSig bool) *fakeKeys {
	f := &fakeKeys{keks: map[string][]byte{}, sigs: map[string]crypto.Signer{}, sigRSA: rsaSig}
	f.addKEK()
	f.addSigner()
	return f
}

func (f *fakeKeys) addKEK() string {
	f.kekN++
	k := make([]byte, 32)
	rand.Read(k)
	f.kekLabel = "fake-kek-" + strconv.Itoa(f.kekN)
	f.keks[f.kekLabel] = k
	return f.kekLabel
}

func (f *fakeKeys) addSigner() string {
	f.sigN++
	var sig crypto.Signer
	if f.sigRSA {
		sig, _ = rsa.GenerateKey(rand.Reader, 2048) // the smallest PS256 allows: fast to make
	} else {
		sig, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	f.sigLabel = "fake-sig-" + strconv.Itoa(f.sigN)
	f.sigs[f.sigLabel] = sig
	return f.sigLabel
}

func (f *fakeKeys) Sign(_ context.Context, digest []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.signs++
	switch k := f.sigs[f.sigLabel].(type) {
	case *rsa.PrivateKey:
		return rsa.SignPSS(rand.Reader, k, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	case *ecdsa.PrivateKey:
		r, s, err := ecdsa.Sign(rand.Reader, k, digest)
		if err != nil {
			return nil, err
		}
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out, nil
	}
	return nil, errors.New("fake: unknown signing key")
}

func (f *fakeKeys) SigningPublicKey() PublicKey {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.sigs[f.sigLabel].Public().(PublicKey)
}

func gcmOf(key []byte) cipher.AEAD {
	b, _ := aes.NewCipher(key)
	g, _ := cipher.NewGCM(b)
	return g
}

func randBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func (f *fakeKeys) Seal(_ context.Context, plaintext, aad []byte) (*hsm.Sealed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.seals++
	dek := randBytes(32)
	defer clear(dek)
	s := &hsm.Sealed{KEK: f.kekLabel, WrapNonce: randBytes(12), Nonce: randBytes(12)}
	s.Ciphertext = gcmOf(dek).Seal(nil, s.Nonce, plaintext, aad)
	s.WrappedDEK = gcmOf(f.keks[f.kekLabel]).Seal(nil, s.WrapNonce, dek, aad)
	return s, nil
}

// unwrap returns s's DEK; the caller holds f.mu.
func (f *fakeKeys) unwrap(s *hsm.Sealed, aad []byte) ([]byte, error) {
	kek := f.keks[s.KEK]
	if kek == nil || len(s.WrapNonce) != 12 {
		return nil, hsm.ErrOpen
	}
	dek, err := gcmOf(kek).Open(nil, s.WrapNonce, s.WrappedDEK, aad)
	if err != nil {
		return nil, hsm.ErrOpen
	}
	return dek, nil
}

func (f *fakeKeys) Unseal(_ context.Context, s *hsm.Sealed, aad []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.unseals++
	dek, err := f.unwrap(s, aad)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	out, err := gcmOf(dek).Open(nil, s.Nonce, s.Ciphertext, aad)
	if err != nil {
		return nil, hsm.ErrOpen
	}
	return out, nil
}

func (f *fakeKeys) Rewrap(_ context.Context, s *hsm.Sealed, aad []byte) (*hsm.Sealed, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.rewraps++
	cp := *s
	if s.KEK == f.kekLabel {
		return &cp, nil
	}
	dek, err := f.unwrap(s, aad)
	if err != nil {
		return nil, err
	}
	defer clear(dek)
	cp.KEK, cp.WrapNonce = f.kekLabel, randBytes(12)
	cp.WrappedDEK = gcmOf(f.keks[f.kekLabel]).Seal(nil, cp.WrapNonce, dek, aad)
	return &cp, nil
}

func (f *fakeKeys) CurrentKEK() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.kekLabel
}

func fakeVersion(label string) int {
	_, v, _ := hsm.ParseKeyLabel(label)
	return v
}

func (f *fakeKeys) KEKs(context.Context) ([]hsm.KeyVersion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var out []hsm.KeyVersion
	for l := range f.keks {
		out = append(out, hsm.KeyVersion{Label: l, Version: fakeVersion(l), Current: l == f.kekLabel, Scheme: string(hsm.KEKAESGCM)})
	}
	slices.SortFunc(out, func(a, b hsm.KeyVersion) int { return a.Version - b.Version })
	return out, nil
}

func (f *fakeKeys) RotateKEK(context.Context) (string, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return "", f.fail
	}
	return f.addKEK(), nil
}

func (f *fakeKeys) DestroyKEK(_ context.Context, label string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	switch {
	case label == f.kekLabel:
		return hsm.ErrKeyCurrent
	case f.keks[label] == nil:
		return hsm.ErrKeyNotFound
	}
	delete(f.keks, label)
	return nil
}

func (f *fakeKeys) SigningKeys(context.Context) ([]hsm.KeyVersion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	var out []hsm.KeyVersion
	for l, k := range f.sigs {
		out = append(out, hsm.KeyVersion{Label: l, Version: fakeVersion(l), Current: l == f.sigLabel, Public: k.Public().(PublicKey)})
	}
	slices.SortFunc(out, func(a, b hsm.KeyVersion) int { return a.Version - b.Version })
	return out, nil
}

func (f *fakeKeys) RotateSigningKey(context.Context) (hsm.KeyVersion, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return hsm.KeyVersion{}, f.fail
	}
	l := f.addSigner()
	return hsm.KeyVersion{Label: l, Version: f.sigN, Current: true, Public: f.sigs[l].Public().(PublicKey)}, nil
}

func (f *fakeKeys) DestroySigningKey(_ context.Context, label string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return f.fail
	}
	switch {
	case label == f.sigLabel:
		return hsm.ErrKeyCurrent
	case f.sigs[label] == nil:
		return hsm.ErrKeyNotFound
	}
	delete(f.sigs, label)
	return nil
}

func (f *fakeKeys) Check(context.Context) error {
	f.mu.Lock()
	block, fail := f.block, f.fail
	f.mu.Unlock()
	if block != nil {
		<-block
	}
	return fail
}

// blockChecks makes Check wait until ch closes (a token that hangs).
func (f *fakeKeys) blockChecks(ch chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.block = ch
}

func (f *fakeKeys) Info() hsm.Info {
	f.mu.Lock()
	defer f.mu.Unlock()
	return hsm.Info{Module: "fake.so", TokenLabel: "fake", KeyLabels: []string{f.kekLabel, f.sigLabel},
		Token:   hsm.TokenInfo{Label: "fake", Manufacturer: "coffer", Model: "fake", Serial: "0001"},
		Schemes: hsm.Schemes{KEK: hsm.KEKAESGCM, KEKWhy: "fake reason", Signing: hsm.SignES256, SigningWhy: "fake reason"}}
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
	audit *recordingAudit
}

// recordingAudit is an AuditLog that keeps what it is given: Appended
// (state changes, in order) and recorded (best effort).
type recordingAudit struct {
	mu       sync.Mutex
	appended []audit.Event
	recorded []audit.Event
	fail     error // Append fails with it while set
}

func (a *recordingAudit) Record(e audit.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.recorded = append(a.recorded, e)
}

func (a *recordingAudit) Append(_ context.Context, es []audit.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	for _, e := range es {
		if n := len(a.appended); n > 0 && e.Change <= a.appended[n-1].Change {
			continue
		}
		a.appended = append(a.appended, e)
	}
	return nil
}

func (a *recordingAudit) LastChange() uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if n := len(a.appended); n > 0 {
		return a.appended[n-1].Change
	}
	return 0
}

func (a *recordingAudit) setFail(err error) {
	a.mu.Lock()
	a.fail = err
	a.mu.Unlock()
}

// changes returns the appended events after draining the outbox.
func (e *testEnv) changes(t testing.TB) []audit.Event {
	t.Helper()
	if err := e.svc.drainOutbox(context.Background()); err != nil {
		t.Fatalf("drain the outbox: %v", err)
	}
	e.audit.mu.Lock()
	defer e.audit.mu.Unlock()
	return slices.Clone(e.audit.appended)
}

// events returns the best-effort events recorded so far.
func (e *testEnv) events() []audit.Event {
	e.audit.mu.Lock()
	defer e.audit.mu.Unlock()
	return slices.Clone(e.audit.recorded)
}

// findEvent returns the first event of action and outcome whose target has
// every pair of want.
func findEvent(es []audit.Event, action, outcome string, want map[string]string) (audit.Event, bool) {
	for _, e := range es {
		if e.Action != action || e.Outcome != outcome {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && e.Target[k] == v
		}
		if ok {
			return e, true
		}
	}
	return audit.Event{}, false
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

func newEnv(t testing.TB) *testEnv {
	t.Helper()
	return newEnvKeys(t, newFakeKeys())
}

// newEnvKeys is newEnv with these keys.
func newEnvKeys(t testing.TB, keys *fakeKeys) *testEnv {
	t.Helper()
	return newEnvStore(t, keys, 0)
}

// newEnvStore is newEnvKeys over a store with this memtable size (0: the
// default), which sets how much one transaction may write.
func newEnvStore(t testing.TB, keys *fakeKeys, memTable int64) *testEnv {
	t.Helper()
	dir := t.TempDir()
	store, err := kv.Open(context.Background(), kv.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1, MemTableSize: memTable})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	svc, err := New(context.Background(), Config{Version: "test", Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, keys, store)
	if err != nil {
		t.Fatal(err)
	}
	rec := &recordingAudit{}
	if err := svc.SetAuditLog(context.Background(), rec); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		svc.CloseAudit(context.Background())
		svc.Close()
	})
	return &testEnv{svc: svc, keys: keys, store: store, logs: &logs.Buffer, dir: dir, audit: rec}
}

var (
	rootPrincipal = Principal{Channel: ChannelUnix, HasCred: true, UID: 0, GID: 0, PID: 1}
	userPrincipal = Principal{Channel: ChannelUnix, HasCred: true, UID: 54321, GID: 54321, PID: 2}
	anonPrincipal = Principal{Channel: ChannelUnix}
	vsockGuest    = Principal{Channel: ChannelVsock, CID: 42}
)

func (e *testEnv) grant(t testing.TB, a Action, r Resource) Grant {
	t.Helper()
	g, err := e.svc.Authorize(context.Background(), rootPrincipal, a, r)
	if err != nil {
		t.Fatalf("authorize %s %+v: %v", a, r, err)
	}
	return g
}

func (e *testEnv) createSecret(t testing.TB, project string, in SecretInput) Secret {
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

// fakeImportKey is the fake HSM's import key, made once (RSA-3072 is slow).
var fakeImportKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, hostseal.MinKeyBits)
	if err != nil {
		panic(err)
	}
	return k
})

func (f *fakeKeys) ImportPublicKey() *rsa.PublicKey { return &fakeImportKey().PublicKey }

func (f *fakeKeys) UnwrapImport(_ context.Context, wrapped []byte) ([]byte, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		return nil, f.fail
	}
	f.unwraps++
	dek, err := rsa.DecryptOAEP(sha256.New(), nil, fakeImportKey(), wrapped, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", hsm.ErrOpen, err)
	}
	return dek, nil
}
