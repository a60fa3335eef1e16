package hsm

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// recoverWait bounds how long a test waits for the reconnect loop; the
// tests poll and never assert on timing.
const recoverWait = 30 * time.Second

// fakeToken is a token behind the configure seam, shared by every context
// configured on it. Like crypto11's, the key objects a context returns
// answer through that context: once it is closed, or the token faults,
// they fail too. Only Check, Sign and provisioning run against it: Seal and
// Unseal need a real crypto11 SecretKey (see the SoftHSM test below), so
// the fake tests call them only where they must fail before using the key.
type fakeToken struct {
	mu          sync.Mutex
	fault       uint // CKR code every call answers with; 0: healthy
	hasKEK      bool
	sigKey      *ecdsa.PrivateKey // nil: no signing key on the token
	generated   int               // KEKs and signing keys created
	impKey      *rsa.PrivateKey   // nil: no import key on the token
	impCreated  int               // import keys created (importkey_test.go)
	configures  int               // configure calls
	inConfigure int
	maxParallel int // most configure calls at once
	contexts    []*fakeCtx
	signCalls   int // Sign calls that reached a key object
	findCalls   int // Find calls that reached a context
}

type fakeCtx struct {
	tok    *fakeToken
	closes int // guarded by tok.mu
}

// install makes configure open contexts on tok for the rest of the test.
func (tok *fakeToken) install(t *testing.T) {
	t.Helper()
	orig, origInspect, origList := configure, inspect, listTokens
	configure = tok.configure
	listTokens = func(string) ([]Slot, error) {
		var slots []Slot // one for each label the fake-token tests open
		for i, l := range []string{"fake-token", "fake-nocreate", "fake-old", "fake-res"} {
			slots = append(slots, Slot{ID: uint(i), Label: l, Manufacturer: "coffer", Model: "fake token", Serial: "fake-serial-" + l})
		}
		return slots, nil
	}
	inspect = func(Config) (TokenInfo, []Mechanism, error) {
		return TokenInfo{Label: "fake", Manufacturer: "coffer", Model: "fake token"}, softHSMLike, nil
	}
	t.Cleanup(func() { configure, inspect, listTokens = orig, origInspect, origList })
}

func (tok *fakeToken) configure(*crypto11.Config) (p11, error) {
	tok.mu.Lock()
	tok.configures++
	tok.inConfigure++
	tok.maxParallel = max(tok.maxParallel, tok.inConfigure)
	fault := tok.fault
	tok.mu.Unlock()
	runtime.Gosched() // widen the window for an overlapping reconnect
	tok.mu.Lock()
	defer tok.mu.Unlock()
	tok.inConfigure--
	if fault != 0 {
		return nil, fmt.Errorf("failed to list PKCS#11 slots: %w", pkcs11.Error(fault))
	}
	c := &fakeCtx{tok: tok}
	tok.contexts = append(tok.contexts, c)
	return c, nil
}

func (tok *fakeToken) set(f func(*fakeToken)) {
	tok.mu.Lock()
	defer tok.mu.Unlock()
	f(tok)
}

func (tok *fakeToken) get(f func(*fakeToken) int) int {
	tok.mu.Lock()
	defer tok.mu.Unlock()
	return f(tok)
}

// usable fails like crypto11 on a closed context, or with the token's
// fault. Called with tok.mu held.
func (c *fakeCtx) usable() error {
	if c.closes > 0 {
		return errors.New("cannot used closed Context")
	}
	if c.tok.fault != 0 {
		return pkcs11.Error(c.tok.fault)
	}
	return nil
}

func label(a crypto11.AttributeSet) string {
	if v := a[crypto11.CkaId]; v != nil {
		return string(v.Value)
	}
	return ""
}

func (c *fakeCtx) FindKeysWithAttributes(a crypto11.AttributeSet) ([]*crypto11.SecretKey, error) {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	c.tok.findCalls++
	if err := c.usable(); err != nil {
		return nil, err
	}
	if c.tok.hasKEK && (label(a) == DefaultKEKLabel || label(a) == "") { // "": a listing by key type
		return []*crypto11.SecretKey{{}}, nil
	}
	return nil, nil
}

func (c *fakeCtx) GenerateSecretKeyWithAttributes(crypto11.AttributeSet, int, *crypto11.SymmetricCipher) (*crypto11.SecretKey, error) {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	if err := c.usable(); err != nil {
		return nil, err
	}
	c.tok.generated++
	c.tok.hasKEK = true
	return &crypto11.SecretKey{}, nil
}

func (c *fakeCtx) FindKeyPairsWithAttributes(a crypto11.AttributeSet) ([]crypto11.Signer, error) {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	c.tok.findCalls++
	if err := c.usable(); err != nil {
		return nil, err
	}
	if c.tok.sigKey != nil && (label(a) == DefaultSigningKeyLabel || label(a) == "") {
		return []crypto11.Signer{&fakeSigner{ctx: c, pub: c.tok.sigKey.PublicKey}}, nil
	}
	if c.tok.impKey != nil && label(a) == ImportKeyLabel {
		return []crypto11.Signer{&fakeDecrypter{ctx: c, pub: c.tok.impKey.PublicKey}}, nil
	}
	return nil, nil
}

func (c *fakeCtx) GenerateECDSAKeyPairWithAttributes(_, _ crypto11.AttributeSet, curve elliptic.Curve) (crypto11.Signer, error) {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	if err := c.usable(); err != nil {
		return nil, err
	}
	k, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		return nil, err
	}
	c.tok.generated++
	c.tok.sigKey = k
	return &fakeSigner{ctx: c, pub: k.PublicKey}, nil
}

func (c *fakeCtx) GetAttributes(key any, _ []crypto11.AttributeType) (crypto11.AttributeSet, error) {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	if err := c.usable(); err != nil {
		return nil, err
	}
	a := crypto11.NewAttributeSet()
	id := DefaultKEKLabel // the fake token holds one key of each kind
	if _, ok := key.(*fakeSigner); ok {
		id = DefaultSigningKeyLabel
	}
	a[crypto11.CkaId] = pkcs11.NewAttribute(pkcs11.CKA_ID, []byte(id))
	a[crypto11.CkaValueLen] = pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, []byte{dekSize, 0, 0, 0, 0, 0, 0, 0})
	a[crypto11.CkaSensitive] = pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, []byte{1})
	a[crypto11.CkaExtractable] = pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, []byte{0})
	a[crypto11.CkaDecrypt] = pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, []byte{1})
	return a, nil
}

func (c *fakeCtx) Close() error {
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	c.closes++
	return nil
}

// fakeSigner is the signing key as one context sees it.
type fakeSigner struct {
	ctx *fakeCtx
	pub ecdsa.PublicKey
}

func (s *fakeSigner) Public() crypto.PublicKey { return &s.pub }
func (s *fakeSigner) Delete() error            { return errors.New("not supported") }

func (s *fakeSigner) Sign(r io.Reader, digest []byte, _ crypto.SignerOpts) ([]byte, error) {
	tok := s.ctx.tok
	tok.mu.Lock()
	defer tok.mu.Unlock()
	tok.signCalls++
	if err := s.ctx.usable(); err != nil {
		return nil, err
	}
	if tok.sigKey == nil || !tok.sigKey.PublicKey.Equal(&s.pub) {
		return nil, pkcs11.Error(pkcs11.CKR_KEY_HANDLE_INVALID)
	}
	return ecdsa.SignASN1(r, tok.sigKey, digest)
}

// syncLog collects log output safely across goroutines.
type syncLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *syncLog) lines(level, msg string) []string {
	var out []string
	for _, line := range strings.Split(l.String(), "\n") {
		if strings.Contains(line, "level="+level) && strings.Contains(line, `msg="`+msg) {
			out = append(out, line)
		}
	}
	return out
}

const fakePIN = "fake-pin-0123456789"

// openFake opens an HSM on a fresh fake token (which provisions both keys)
// with a fast reconnect backoff.
func openFake(t *testing.T) (*HSM, *fakeToken, *syncLog) {
	t.Helper()
	tok := &fakeToken{}
	tok.install(t)
	logs := &syncLog{}
	h, err := Open(context.Background(), Config{
		ModulePath: DefaultModulePath, // only stat'ed: the fake does the rest
		TokenLabel: "fake-token",
		PIN:        fakePIN,
		Logger:     slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatalf("Open on the fake token: %v", err)
	}
	h.rc.minDelay, h.rc.maxDelay = time.Millisecond, 5*time.Millisecond
	t.Cleanup(func() { _ = h.Close() })
	if n := tok.get(func(f *fakeToken) int { return f.generated }); n != 2 {
		t.Fatalf("a fresh token got %d keys, want 2 (KEK and signing key)", n)
	}
	return h, tok, logs
}

func needModuleFile(t *testing.T) {
	t.Helper()
	if err := checkModuleFile(DefaultModulePath); err != nil {
		needHSM(t)
		t.Skip(err)
	}
}

// sign signs a fixed digest and verifies the signature with h's public key.
func sign(h *HSM) error {
	d := sha256.Sum256([]byte("coffer"))
	sig, err := h.Sign(context.Background(), d[:])
	if err != nil {
		return err
	}
	r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
	if !ecdsa.Verify(h.SigningPublicKey().(*ecdsa.PublicKey), d[:], r, s) {
		return errors.New("signature does not verify")
	}
	return nil
}

// waitFor polls cond until it is true or recoverWait passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(recoverWait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up after %s waiting for %s", recoverWait, what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitRecovered(t *testing.T, h *HSM) {
	t.Helper()
	var last error
	waitFor(t, "the HSM to recover", func() bool {
		last = h.Check(context.Background())
		return last == nil
	})
}

// failFast asserts that every operation fails with ErrUnavailable naming
// the outage, without reaching the token.
func failFast(t *testing.T, h *HSM, tok *fakeToken, cause string) {
	t.Helper()
	ctx := context.Background()
	calls := func(f *fakeToken) int { return f.signCalls + f.findCalls }
	before := tok.get(calls)
	envelope := &Sealed{KEK: DefaultKEKLabel, WrapNonce: make([]byte, gcmNonceSize), WrappedDEK: make([]byte, dekSize+gcmTagSize),
		Nonce: make([]byte, gcmNonceSize), Ciphertext: make([]byte, gcmTagSize)}
	d := sha256.Sum256(nil)
	for name, call := range map[string]func() error{
		"Seal":   func() error { _, err := h.Seal(ctx, []byte("x"), nil); return err },
		"Unseal": func() error { _, err := h.Unseal(ctx, envelope, nil); return err },
		"Sign":   func() error { _, err := h.Sign(ctx, d[:]); return err },
		"Check":  func() error { return h.Check(ctx) },
	} {
		err := call()
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOpen) {
			t.Errorf("%s while lost: %v, want ErrUnavailable", name, err)
			continue
		}
		for _, want := range []string{"lost at", "reconnecting", cause, h.cfg.TokenLabel} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s while lost: %q lacks %q", name, err, want)
			}
		}
	}
	// The loop cannot reach Find while configure fails, so any call here
	// came from an operation that did not fail fast.
	if after := tok.get(calls); after != before {
		t.Errorf("%d calls reached the token while it was lost", after-before)
	}
}

func TestTokenLossAndRecovery(t *testing.T) {
	needModuleFile(t)
	tests := []struct {
		code    uint
		trigger string // the operation that meets the fault
	}{
		{pkcs11.CKR_SESSION_HANDLE_INVALID, "Sign"},
		{pkcs11.CKR_SESSION_CLOSED, "Check"},
		{pkcs11.CKR_DEVICE_REMOVED, "Sign"},
		{pkcs11.CKR_DEVICE_ERROR, "Check"},
		{pkcs11.CKR_TOKEN_NOT_PRESENT, "Check"},
		{pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, "Sign"},
		{pkcs11.CKR_OBJECT_HANDLE_INVALID, "Check"},
		{pkcs11.CKR_KEY_HANDLE_INVALID, "Sign"},
		{pkcs11.CKR_USER_NOT_LOGGED_IN, "Sign"},
	}
	for _, tt := range tests {
		code := ckrName(pkcs11.Error(tt.code))
		t.Run(code, func(t *testing.T) {
			h, tok, logs := openFake(t)
			pub := h.SigningPublicKey()
			if err := sign(h); err != nil {
				t.Fatal(err)
			}
			tok.set(func(f *fakeToken) { f.fault = tt.code })

			var err error
			if tt.trigger == "Sign" {
				err = sign(h)
			} else {
				err = h.Check(context.Background())
			}
			if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), code) {
				t.Fatalf("%s on a faulty token: %v, want ErrUnavailable naming %s", tt.trigger, err, code)
			}
			failFast(t, h, tok, code)
			// the loop keeps trying while the token is away
			waitFor(t, "a second reconnect attempt", func() bool { return tok.get(func(f *fakeToken) int { return f.configures }) >= 3 })
			if err := h.Check(context.Background()); err == nil || !strings.Contains(err.Error(), "last attempt: cannot open HSM token") {
				t.Errorf("Check while reconnecting: %v, want the last attempt's error", err)
			}

			tok.set(func(f *fakeToken) { f.fault = 0 })
			waitRecovered(t, h)
			if err := sign(h); err != nil {
				t.Fatalf("Sign after recovery: %v", err)
			}
			if !h.SigningPublicKey().Equal(pub) {
				t.Error("signing key changed across the reconnect")
			}
			tok.set(func(f *fakeToken) {
				if f.generated != 2 {
					t.Errorf("%d keys generated, want still 2: a reconnect created keys", f.generated)
				}
				if f.contexts[0].closes != 1 {
					t.Errorf("the lost context was closed %d times, want 1", f.contexts[0].closes)
				}
				if live := f.contexts[len(f.contexts)-1]; live.closes != 0 || len(f.contexts) != 2 {
					t.Errorf("%d contexts (last closed %d times), want 2, the new one open", len(f.contexts), live.closes)
				}
				if f.maxParallel != 1 {
					t.Errorf("%d reconnects ran at once, want 1", f.maxParallel)
				}
			})

			if n := len(logs.lines("WARN", "HSM token lost")); n != 1 {
				t.Errorf("%d warn lines about the loss, want 1:\n%s", n, logs)
			}
			back := logs.lines("INFO", "HSM token is back")
			if len(back) != 1 || !strings.Contains(back[0], "down_for=") {
				t.Errorf("info lines about the recovery: %q, want one with down_for", back)
			}
			if strings.Contains(logs.String(), fakePIN) {
				t.Error("the log contains the PIN")
			}
		})
	}
}

func TestNonLossErrorsDoNotReconnect(t *testing.T) {
	needModuleFile(t)
	h, tok, _ := openFake(t)
	tok.set(func(f *fakeToken) { f.fault = pkcs11.CKR_FUNCTION_FAILED })
	for i := range 3 {
		before := tok.get(func(f *fakeToken) int { return f.signCalls })
		if err := sign(h); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "CKR_FUNCTION_FAILED") {
			t.Fatalf("Sign #%d: %v, want ErrUnavailable with CKR_FUNCTION_FAILED", i, err)
		}
		if tok.get(func(f *fakeToken) int { return f.signCalls }) != before+1 {
			t.Fatalf("Sign #%d did not reach the token: a non-loss error marked it lost", i)
		}
	}
	if n := tok.get(func(f *fakeToken) int { return f.configures }); n != 1 {
		t.Errorf("%d configure calls, want 1 (no reconnect)", n)
	}
	tok.set(func(f *fakeToken) { f.fault = 0 })
	if err := sign(h); err != nil {
		t.Fatal(err)
	}
}

// TestReconnectNeverCreatesKeys: keys that vanish make Check report the
// loss, and a reconnect that does not find them keeps failing instead of
// creating new ones; when they come back, the HSM recovers.
func TestReconnectNeverCreatesKeys(t *testing.T) {
	needModuleFile(t)
	h, tok, _ := openFake(t)
	var kept *ecdsa.PrivateKey
	tok.set(func(f *fakeToken) { kept, f.hasKEK, f.sigKey = f.sigKey, false, nil })

	err := h.Check(context.Background())
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrKeyMissing) {
		t.Fatalf("Check with the KEK gone: %v, want ErrUnavailable and ErrKeyMissing", err)
	}
	waitFor(t, "a failed reconnect attempt", func() bool {
		err := h.Check(context.Background())
		return err != nil && strings.Contains(err.Error(), "last attempt: HSM KEK "+DefaultKEKLabel+" is missing from token")
	})
	waitFor(t, "more attempts", func() bool { return tok.get(func(f *fakeToken) int { return f.configures }) >= 4 })
	if n := tok.get(func(f *fakeToken) int { return f.generated }); n != 2 {
		t.Fatalf("%d keys generated, want 2: a reconnect created keys", n)
	}

	tok.set(func(f *fakeToken) { f.hasKEK, f.sigKey = true, kept })
	waitRecovered(t, h)
	if err := sign(h); err != nil {
		t.Fatal(err)
	}
	if n := tok.get(func(f *fakeToken) int { return f.generated }); n != 2 {
		t.Fatalf("%d keys generated, want 2", n)
	}
}

// TestReconnectRefusesOtherSigningKey: a token that comes back with another
// signing key under the same label is not the token coffer was using.
func TestReconnectRefusesOtherSigningKey(t *testing.T) {
	needModuleFile(t)
	h, tok, _ := openFake(t)
	pub := h.SigningPublicKey()
	var kept *ecdsa.PrivateKey
	tok.set(func(f *fakeToken) { f.fault = pkcs11.CKR_DEVICE_REMOVED })
	if err := sign(h); !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}
	other, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tok.set(func(f *fakeToken) { kept, f.sigKey, f.fault = f.sigKey, other, 0 })
	waitFor(t, "a refused reconnect", func() bool {
		err := h.Check(context.Background())
		return err != nil && strings.Contains(err.Error(), "is not the key in use before the token was lost")
	})
	if !h.SigningPublicKey().Equal(pub) {
		t.Fatal("the public key changed")
	}
	tok.set(func(f *fakeToken) { f.sigKey = kept })
	waitRecovered(t, h)
	if err := sign(h); err != nil {
		t.Fatal(err)
	}
}

// TestReconnectConcurrent runs operations from many goroutines while the
// token comes and goes (run with -race): every failure is ErrUnavailable,
// one reconnect runs at a time, and no key is ever created.
func TestReconnectConcurrent(t *testing.T) {
	needModuleFile(t)
	h, tok, logs := openFake(t)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				var err error
				switch i % 3 {
				case 0:
					err = sign(h)
				case 1:
					err = h.Check(context.Background())
				default:
					// readers that take no lock, racing the key swap
					if h.SigningPublicKey() == nil || h.Info().TokenLabel == "" {
						err = errors.New("no public key or token label")
					}
					runtime.Gosched()
				}
				if err != nil && !errors.Is(err, ErrUnavailable) {
					select {
					case errs <- err:
					default:
					}
				}
			}
		})
	}
	const rounds = 5
	for range rounds {
		tok.set(func(f *fakeToken) { f.fault = pkcs11.CKR_DEVICE_REMOVED })
		waitFor(t, "the loss to be noticed", func() bool { return h.rc.outage.Load() != nil })
		tok.set(func(f *fakeToken) { f.fault = 0 })
		waitRecovered(t, h)
	}
	close(stop)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("operation failed with something other than ErrUnavailable: %v", err)
	}
	tok.set(func(f *fakeToken) {
		if f.generated != 2 {
			t.Errorf("%d keys generated, want 2", f.generated)
		}
		if f.maxParallel != 1 {
			t.Errorf("%d reconnects ran at once, want 1", f.maxParallel)
		}
		for i, c := range f.contexts[:len(f.contexts)-1] {
			if c.closes != 1 {
				t.Errorf("context %d closed %d times, want 1", i, c.closes)
			}
		}
	})
	if err := sign(h); err != nil {
		t.Fatal(err)
	}
	if n := len(logs.lines("WARN", "HSM token lost")); n != rounds {
		t.Errorf("%d loss lines for %d outages", n, rounds)
	}
}

// TestCloseStopsReconnect: Close ends a reconnect loop that cannot succeed
// and closes every context exactly once.
func TestCloseStopsReconnect(t *testing.T) {
	needModuleFile(t)
	h, tok, _ := openFake(t)
	tok.set(func(f *fakeToken) { f.fault = pkcs11.CKR_TOKEN_NOT_PRESENT })
	if err := h.Check(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}
	waitFor(t, "reconnect attempts", func() bool { return tok.get(func(f *fakeToken) int { return f.configures }) >= 3 })
	if err := h.Close(); err != nil {
		t.Fatalf("Close while reconnecting: %v", err)
	}
	n := tok.get(func(f *fakeToken) int { return f.configures })
	// Close waited for the loop: nothing configures any more.
	for range 20 {
		runtime.Gosched()
	}
	if m := tok.get(func(f *fakeToken) int { return f.configures }); m != n {
		t.Errorf("configure ran %d more times after Close", m-n)
	}
	tok.set(func(f *fakeToken) {
		if len(f.contexts) != 1 || f.contexts[0].closes != 1 {
			t.Errorf("contexts %d, first closed %d times; want 1 context closed once", len(f.contexts), f.contexts[0].closes)
		}
	})
	if err := h.Check(context.Background()); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check after Close: %v", err)
	}
}

func TestOpenNoCreate(t *testing.T) {
	needModuleFile(t)
	tok := &fakeToken{}
	tok.install(t)
	cfg := Config{ModulePath: DefaultModulePath, TokenLabel: "fake-nocreate", PIN: fakePIN, NoCreate: true}
	_, err := Open(context.Background(), cfg)
	want := "HSM KEK coffer-kek-1 is missing from token fake-nocreate (module " + DefaultModulePath + `): C_FindObjects found no object with CKA_ID "coffer-kek-1"`
	if !errors.Is(err, ErrKeyMissing) || err.Error() != want {
		t.Fatalf("Open with NoCreate on an empty token:\n  %v\nwant\n  %s", err, want)
	}
	tok.set(func(f *fakeToken) {
		if f.generated != 0 {
			t.Errorf("NoCreate generated %d keys", f.generated)
		}
		if f.contexts[0].closes != 1 {
			t.Errorf("the context was closed %d times, want 1", f.contexts[0].closes)
		}
		f.hasKEK = true
	})
	_, err = Open(context.Background(), cfg)
	if !errors.Is(err, ErrKeyMissing) || !strings.Contains(err.Error(), "HSM signing key coffer-sig-1 is missing") {
		t.Fatalf("Open with NoCreate and no signing key: %v", err)
	}
	cfg.NoCreate = false
	h, err := Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	if n := tok.get(func(f *fakeToken) int { return f.generated }); n != 1 {
		t.Fatalf("generated %d keys, want 1 (the signing key)", n)
	}
}
