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
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"

	"github.com/coffer-hsm/coffer/hostseal"
)

var importRuns atomic.Int32

// freshToken returns the config of a token no earlier run (-count) used.
func freshToken(t *testing.T, prefix string) Config {
	t.Helper()
	return tokenCfg(t, fmt.Sprintf("%s-%03d", prefix, importRuns.Add(1)))
}

func TestImportKeyOnToken(t *testing.T) {
	cfg := freshToken(t, "coffer-imp")
	h := openTest(t, cfg)
	pub := h.ImportPublicKey()
	if pub == nil || pub.N.BitLen() != ImportKeyBits || pub.E != 65537 {
		t.Fatalf("ImportPublicKey = %v", pub)
	}
	t.Logf("token decrypts with raw RSA and OAEP decoding in coffer: %v", h.imp.raw)
	c11 := h.ctx.(*crypto11.Context)
	pairs, err := c11.FindKeyPairs([]byte(ImportKeyLabel), nil)
	if err != nil || len(pairs) != 1 {
		t.Fatalf("%d import key pairs with CKA_ID %s (err %v), want 1", len(pairs), ImportKeyLabel, err)
	}
	if byLabel, err := c11.FindKeyPairs(nil, []byte(ImportKeyLabel)); err != nil || len(byLabel) != 1 {
		t.Fatalf("%d import key pairs by label (err %v), want 1", len(byLabel), err)
	}
	flag := func(set crypto11.AttributeSet, a crypto11.AttributeType) bool {
		v := set[a]
		if v == nil || len(v.Value) != 1 {
			t.Fatalf("attribute %v: %v", a, v)
		}
		return v.Value[0] != 0
	}
	priv, err := c11.GetAttributes(pairs[0], []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable,
		crypto11.CkaDecrypt, crypto11.CkaSign, crypto11.CkaUnwrap, crypto11.CkaToken, crypto11.CkaPrivate})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []struct {
		t    crypto11.AttributeType
		name string
		want bool
	}{
		{crypto11.CkaSensitive, "CKA_SENSITIVE", true},
		{crypto11.CkaExtractable, "CKA_EXTRACTABLE", false},
		{crypto11.CkaDecrypt, "CKA_DECRYPT", true},
		{crypto11.CkaSign, "CKA_SIGN", false},
		{crypto11.CkaUnwrap, "CKA_UNWRAP", false},
		{crypto11.CkaToken, "CKA_TOKEN", true},
		{crypto11.CkaPrivate, "CKA_PRIVATE", true},
	} {
		if got := flag(priv, a.t); got != a.want {
			t.Errorf("private half: %s = %v, want %v", a.name, got, a.want)
		}
	}
	pubAttrs, err := c11.GetPubAttributes(pairs[0], []crypto11.AttributeType{crypto11.CkaEncrypt, crypto11.CkaVerify, crypto11.CkaWrap})
	if err != nil {
		t.Fatal(err)
	}
	if !flag(pubAttrs, crypto11.CkaEncrypt) || flag(pubAttrs, crypto11.CkaVerify) || flag(pubAttrs, crypto11.CkaWrap) {
		t.Errorf("public half: encrypt %v verify %v wrap %v, want true false false",
			flag(pubAttrs, crypto11.CkaEncrypt), flag(pubAttrs, crypto11.CkaVerify), flag(pubAttrs, crypto11.CkaWrap))
	}
	// The key signs nothing: the token refuses.
	d := sha256.Sum256([]byte("x"))
	if _, err := pairs[0].Sign(rand.Reader, d[:], crypto.SHA256); err == nil {
		t.Error("the import key signed")
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	// A restart finds the same key and makes no second one.
	h = openTest(t, cfg)
	if !h.ImportPublicKey().Equal(pub) {
		t.Fatal("import key changed after reopen")
	}
	if pairs, err := h.ctx.(*crypto11.Context).FindKeyPairs([]byte(ImportKeyLabel), nil); err != nil || len(pairs) != 1 {
		t.Fatalf("%d import key pairs after reopen (err %v), want 1", len(pairs), err)
	}
}

func TestUnwrapImport(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	ctx := context.Background()
	fp, err := hostseal.Fingerprint(h.ImportPublicKey())
	if err != nil {
		t.Fatal(err)
	}
	payload := []byte("sealed to this host only")
	kvs := map[string]string{"region": "eu-west-1", "role": "arn:aws:iam::1:role/x"}
	seal := func(t *testing.T, pub *rsa.PublicKey) *hostseal.File {
		t.Helper()
		f, err := hostseal.Seal(pub, "default", "db password", hostseal.Contents{Payload: bytes.Clone(payload), KeyValues: kvs}, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		return f
	}

	// The round trip: sealed offline to the public key, opened in the token.
	c, err := hostseal.Open(ctx, seal(t, h.ImportPublicKey()), fp, h.UnwrapImport)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	if !bytes.Equal(c.Payload, payload) || len(c.KeyValues) != 2 || c.KeyValues["region"] != "eu-west-1" || c.KeyValues["role"] != kvs["role"] {
		t.Fatalf("round trip lost data: payload equal %v, key values %d", bytes.Equal(c.Payload, payload), len(c.KeyValues))
	}
	c.Clear()

	other, err := rsa.GenerateKey(rand.Reader, ImportKeyBits)
	if err != nil {
		t.Fatal(err)
	}
	good := seal(t, h.ImportPublicKey())
	tests := []struct {
		name    string
		wrapped []byte
	}{
		{"sealed to another key", seal(t, &other.PublicKey).WrappedDEK},
		{"one bit flipped", flip(good.WrappedDEK, 100)},
		{"last bit flipped", flip(good.WrappedDEK, len(good.WrappedDEK)-1)},
		{"all zero", make([]byte, len(good.WrappedDEK))},
		{"all ones (above the modulus)", bytes.Repeat([]byte{0xff}, len(good.WrappedDEK))},
		{"truncated", good.WrappedDEK[:len(good.WrappedDEK)-1]},
		{"empty", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dek, err := h.UnwrapImport(ctx, tt.wrapped)
			if err == nil {
				t.Fatalf("UnwrapImport succeeded (%d bytes)", len(dek))
			}
			if !errors.Is(err, ErrOpen) || errors.Is(err, ErrUnavailable) {
				t.Fatalf("UnwrapImport: %v, want ErrOpen and not ErrUnavailable", err)
			}
			if h.rc.outage.Load() != nil {
				t.Fatal("a bad ciphertext marked the token lost")
			}
		})
	}
	// The token is healthy throughout, and still opens the good file.
	if err := h.Check(ctx); err != nil {
		t.Fatal(err)
	}
	if c, err := hostseal.Open(ctx, good, fp, h.UnwrapImport); err != nil || !bytes.Equal(c.Payload, payload) {
		t.Fatalf("Open after failures: %v", err)
	}
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 1
	return c
}

func TestUnwrapImportClosed(t *testing.T) {
	h, err := Open(context.Background(), tokenCfg(t, testToken))
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, h.ImportPublicKey(), make([]byte, 32), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := h.UnwrapImport(context.Background(), wrapped); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOpen) {
		t.Fatalf("UnwrapImport after Close: %v, want ErrUnavailable", err)
	}
}

// TestImportKeyAddedToExistingToken: a token provisioned before the import
// key existed gets one at the next start, even when its KEK and signing
// key may not be created (NoCreate: the store holds data), and keeps its
// KEK and signing key.
func TestImportKeyAddedToExistingToken(t *testing.T) {
	cfg := freshToken(t, "coffer-old")
	ctx := context.Background()
	h, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := h.Seal(ctx, []byte("from before"), nil)
	if err != nil {
		t.Fatal(err)
	}
	sigPub, oldImport := h.SigningPublicKey(), h.ImportPublicKey()
	// Make it a token of the previous version: no import key.
	c11 := h.ctx.(*crypto11.Context)
	pairs, err := c11.FindKeyPairs([]byte(ImportKeyLabel), nil)
	if err != nil || len(pairs) != 1 {
		t.Fatalf("find import key: %d, %v", len(pairs), err)
	}
	if err := pairs[0].Delete(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	logs := &syncLog{}
	cfg.NoCreate = true
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	h = openTest(t, cfg)
	if pub := h.ImportPublicKey(); pub == nil || pub.Equal(oldImport) {
		t.Fatal("no new import key")
	}
	if !h.SigningPublicKey().Equal(sigPub) {
		t.Fatal("the signing key changed")
	}
	if got, err := h.Unseal(ctx, sealed, nil); err != nil || string(got) != "from before" {
		t.Fatalf("Unseal with the old KEK: %q, %v", got, err)
	}
	if n := len(logs.lines("INFO", "HSM import key created")); n != 1 {
		t.Errorf("%d log lines about the new import key, want 1:\n%s", n, logs)
	}
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, h.ImportPublicKey(), []byte("0123456789abcdef0123456789abcdef"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if dek, err := h.UnwrapImport(ctx, wrapped); err != nil || string(dek) != "0123456789abcdef0123456789abcdef" {
		t.Fatalf("UnwrapImport with the new key: %v", err)
	}
}

// fakeImportKeys are RSA keys for the fake token, made once (slow).
var fakeImportKeys = sync.OnceValue(func() [2]*rsa.PrivateKey {
	var out [2]*rsa.PrivateKey
	for i := range out {
		k, err := rsa.GenerateKey(rand.Reader, ImportKeyBits)
		if err != nil {
			panic(err)
		}
		out[i] = k
	}
	return out
})

func (c *fakeCtx) GenerateRSAKeyPairWithAttributes(_, _ crypto11.AttributeSet, bits int) (crypto11.SignerDecrypter, error) {
	k := fakeImportKeys()[0]
	c.tok.mu.Lock()
	defer c.tok.mu.Unlock()
	if err := c.usable(); err != nil {
		return nil, err
	}
	if bits != k.N.BitLen() {
		return nil, fmt.Errorf("fake token: %d-bit RSA keys only", k.N.BitLen())
	}
	c.tok.impCreated++
	c.tok.impKey = k
	return &fakeDecrypter{ctx: c, pub: k.PublicKey}, nil
}

// fakeDecrypter is the import key as one context sees it.
type fakeDecrypter struct {
	ctx *fakeCtx
	pub rsa.PublicKey
}

func (d *fakeDecrypter) Public() crypto.PublicKey { return &d.pub }
func (d *fakeDecrypter) Delete() error            { return errors.New("not supported") }

func (d *fakeDecrypter) Sign(io.Reader, []byte, crypto.SignerOpts) ([]byte, error) {
	return nil, pkcs11.Error(pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED)
}

// Decrypt answers a ciphertext that does not decode as SoftHSM 2.6 does.
func (d *fakeDecrypter) Decrypt(_ io.Reader, ct []byte, opts crypto.DecrypterOpts) ([]byte, error) {
	tok := d.ctx.tok
	tok.mu.Lock()
	defer tok.mu.Unlock()
	if err := d.ctx.usable(); err != nil {
		return nil, err
	}
	if tok.impKey == nil || !tok.impKey.PublicKey.Equal(&d.pub) {
		return nil, pkcs11.Error(pkcs11.CKR_KEY_HANDLE_INVALID)
	}
	o, ok := opts.(*rsa.OAEPOptions)
	if !ok || o.Hash != crypto.SHA256 {
		return nil, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID)
	}
	pt, err := rsa.DecryptOAEP(sha256.New(), nil, tok.impKey, ct, o.Label)
	if err != nil {
		return nil, fakeBadOAEP
	}
	return pt, nil
}

// wrapFake encrypts a DEK to the fake token's import key.
func wrapFake(t *testing.T, h *HSM) []byte {
	t.Helper()
	w, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, h.ImportPublicKey(), make([]byte, dekSize), nil)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func TestImportKeyFakeFaults(t *testing.T) {
	needModuleFile(t)
	h, tok, _ := openFake(t)
	ctx := context.Background()
	if n := tok.get(func(f *fakeToken) int { return f.impCreated }); n != 1 {
		t.Fatalf("a fresh token got %d import keys, want 1", n)
	}
	w := wrapFake(t, h)
	if dek, err := h.UnwrapImport(ctx, w); err != nil || len(dek) != dekSize {
		t.Fatalf("UnwrapImport: %d bytes, %v", len(dek), err)
	}
	bad := flip(w, 7)
	if _, err := h.UnwrapImport(ctx, bad); !errors.Is(err, ErrOpen) || errors.Is(err, ErrUnavailable) {
		t.Fatalf("UnwrapImport of a flipped ciphertext: %v, want ErrOpen", err)
	}
	// A token that fails every call: the probe fails too, so a bad
	// ciphertext is not called tampered, and nothing is marked lost.
	tok.set(func(f *fakeToken) { f.fault = pkcs11.CKR_FUNCTION_FAILED })
	for _, in := range [][]byte{w, bad} {
		if _, err := h.UnwrapImport(ctx, in); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOpen) {
			t.Fatalf("UnwrapImport on a failing token: %v, want ErrUnavailable", err)
		}
	}
	if h.rc.outage.Load() != nil {
		t.Fatal("CKR_FUNCTION_FAILED marked the token lost")
	}
	// A lost token: ErrUnavailable, then fail-fast until it is back.
	tok.set(func(f *fakeToken) { f.fault = pkcs11.CKR_DEVICE_REMOVED })
	if _, err := h.UnwrapImport(ctx, w); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "CKR_DEVICE_REMOVED") {
		t.Fatalf("UnwrapImport with the device removed: %v", err)
	}
	if _, err := h.UnwrapImport(ctx, w); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "reconnecting") {
		t.Fatalf("UnwrapImport while lost: %v, want the fail-fast error", err)
	}
	tok.set(func(f *fakeToken) { f.fault = 0 })
	waitRecovered(t, h)
	// The key object of the new context answers (the old one is closed).
	if _, err := h.UnwrapImport(ctx, w); err != nil {
		t.Fatalf("UnwrapImport after recovery: %v", err)
	}
	if n := tok.get(func(f *fakeToken) int { return f.impCreated }); n != 1 {
		t.Errorf("%d import keys created, want 1", n)
	}
}

// TestImportKeyReconnect: a reconnect never creates the import key and
// refuses another one under its label.
func TestImportKeyReconnect(t *testing.T) {
	needModuleFile(t)
	h, tok, _ := openFake(t)
	ctx := context.Background()
	pub := h.ImportPublicKey()
	var kept *rsa.PrivateKey
	tok.set(func(f *fakeToken) { f.fault = pkcs11.CKR_DEVICE_REMOVED })
	if err := h.Check(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatal(err)
	}
	tok.set(func(f *fakeToken) { kept, f.impKey, f.fault = f.impKey, nil, 0 })
	waitFor(t, "a reconnect that misses the import key", func() bool {
		err := h.Check(ctx)
		return err != nil && strings.Contains(err.Error(), "last attempt: HSM import key "+ImportKeyLabel+" is missing from token")
	})
	if n := tok.get(func(f *fakeToken) int { return f.impCreated }); n != 1 {
		t.Fatalf("%d import keys created, want 1: a reconnect created one", n)
	}
	tok.set(func(f *fakeToken) { f.impKey = fakeImportKeys()[1] })
	waitFor(t, "a reconnect that refuses another import key", func() bool {
		err := h.Check(ctx)
		return err != nil && strings.Contains(err.Error(), "HSM import key "+ImportKeyLabel+" on token fake-token") &&
			strings.Contains(err.Error(), "is not the key in use before the token was lost")
	})
	if !h.ImportPublicKey().Equal(pub) {
		t.Fatal("the import public key changed")
	}
	tok.set(func(f *fakeToken) { f.impKey = kept })
	waitRecovered(t, h)
	if _, err := h.UnwrapImport(ctx, wrapFake(t, h)); err != nil {
		t.Fatal(err)
	}
}

// TestImportKeyNoCreate: NoCreate guards the KEK and the signing key only;
// a token that has them but no import key gets one at Open.
func TestImportKeyNoCreate(t *testing.T) {
	needModuleFile(t)
	tok := &fakeToken{hasKEK: true, sigKey: fakeSigningKey(t)}
	tok.install(t)
	h, err := Open(context.Background(), Config{ModulePath: DefaultModulePath, TokenLabel: "fake-old", PIN: fakePIN, NoCreate: true})
	if err != nil {
		t.Fatalf("Open with NoCreate on a token without an import key: %v", err)
	}
	defer h.Close()
	tok.set(func(f *fakeToken) {
		if f.generated != 0 || f.impCreated != 1 {
			t.Errorf("created %d KEKs/signing keys and %d import keys, want 0 and 1", f.generated, f.impCreated)
		}
	})
	if h.ImportPublicKey() == nil {
		t.Fatal("no import key")
	}
}

func TestImportKeyLabelReserved(t *testing.T) {
	needModuleFile(t)
	(&fakeToken{}).install(t)
	_, err := Open(context.Background(), Config{ModulePath: DefaultModulePath, TokenLabel: "fake-res", PIN: fakePIN, KEKLabel: ImportKeyLabel})
	if err == nil || err.Error() != "HSM key label "+ImportKeyLabel+" is reserved for the import key" {
		t.Fatalf("Open with the KEK labelled %s: %v", ImportKeyLabel, err)
	}
}

// fakeBadOAEP is what SoftHSM 2.6 answers for a ciphertext that does not
// decrypt.
var fakeBadOAEP error = pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)

func fakeSigningKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// BenchmarkUnwrapImport measures one unwrap with the import key in the
// token (raw RSA and OAEP decoding in Go on SoftHSM 2.6).
func BenchmarkUnwrapImport(b *testing.B) {
	h := openTest(b, tokenCfg(b, testToken))
	wrapped, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, h.ImportPublicKey(), make([]byte, dekSize), nil)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := h.UnwrapImport(context.Background(), wrapped); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("raw RSA + OAEP decoding in coffer: %v", h.imp.raw)
}
