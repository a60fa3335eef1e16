package hsm

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

func TestOpenErrors(t *testing.T) {
	// A token of its own, so no other *HSM has it logged in.
	good := tokenCfg(t, "coffer-errs")
	notLib := filepath.Join(t.TempDir(), "not-a-module.so")
	if err := os.WriteFile(notLib, []byte("not ELF"), 0o600); err != nil {
		t.Fatal(err)
	}
	with := func(f func(*Config)) Config { c := good; f(&c); return c }
	const wrongPIN = "0123456789abcdef-wrong"
	tests := []struct {
		name string
		cfg  Config
		want string // exact error text
	}{
		{"wrong PIN", with(func(c *Config) { c.PIN = wrongPIN }),
			"wrong HSM PIN for token coffer-errs (module " + DefaultModulePath + "): CKR_PIN_INCORRECT"},
		{"missing module", with(func(c *Config) { c.ModulePath = "/nonexistent/libpkcs11.so" }),
			"cannot load PKCS#11 module /nonexistent/libpkcs11.so: stat /nonexistent/libpkcs11.so: no such file or directory"},
		{"module is a directory", with(func(c *Config) { c.ModulePath = t.TempDir() }),
			""},
		{"module not a library", with(func(c *Config) { c.ModulePath = notLib }),
			"cannot load PKCS#11 module " + notLib + ": not a loadable PKCS#11 library"},
		{"unknown token", with(func(c *Config) { c.TokenLabel = "no-such-token" }),
			"HSM token no-such-token not found in module " + DefaultModulePath + ": CKR_TOKEN_NOT_PRESENT (no initialised token matches; the module has "},
		{"no token label", with(func(c *Config) { c.TokenLabel = "" }),
			"HSM token label is required"},
		{"empty PIN", with(func(c *Config) { c.PIN = "" }),
			"HSM PIN for token coffer-errs is empty"},
		{"one session", with(func(c *Config) { c.MaxSessions = 1 }),
			"HSM MaxSessions must be 0 (default) or at least 2, got 1"},
		{"same key labels", with(func(c *Config) { c.KEKLabel = "k"; c.SigningKeyLabel = "k" }),
			`HSM KEK and signing key labels must differ (both "k")`},
		{"bad key label", with(func(c *Config) { c.KEKLabel = "a b" }),
			`HSM key label "a b" contains a space or control character`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h *HSM
			var err error
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("Open panicked: %v", r)
					}
				}()
				h, err = Open(context.Background(), tt.cfg)
			}()
			if err == nil {
				h.Close()
				t.Fatal("Open succeeded")
			}
			if strings.HasSuffix(tt.want, "the module has ") && strings.HasPrefix(err.Error(), tt.want) {
				// followed by the test store's tokens (slot, label, serial)
			} else if tt.want != "" && err.Error() != tt.want {
				t.Fatalf("Open err =\n  %q\nwant\n  %q", err, tt.want)
			}
			if tt.want == "" && !strings.HasPrefix(err.Error(), "cannot load PKCS#11 module") {
				t.Fatalf("Open err = %q", err)
			}
			if strings.Contains(err.Error(), good.PIN) || strings.Contains(err.Error(), wrongPIN) {
				t.Fatal("error contains a PIN")
			}
		})
	}

	// The good config still works afterwards, and a wrong PIN is still
	// rejected while the token is logged in (PKCS#11 login is per process).
	h := openTest(t, good)
	_, err := Open(context.Background(), with(func(c *Config) { c.PIN = wrongPIN }))
	if err == nil || !strings.Contains(err.Error(), "wrong HSM PIN") || !strings.Contains(err.Error(), "CKR_PIN_INCORRECT") {
		t.Fatalf("Open with wrong PIN while logged in: %v", err)
	}
	if err := h.Check(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestReopenFindsSameKeys(t *testing.T) {
	cfg := tokenCfg(t, "coffer-reopen")
	ctx := context.Background()

	h, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	s, err := h.Seal(ctx, []byte("survives restart"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	pub := h.SigningPublicKey()
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	for round := 0; round < 2; round++ {
		h = openTest(t, cfg)
		got, err := h.Unseal(ctx, s, []byte("aad"))
		if err != nil || string(got) != "survives restart" {
			t.Fatalf("round %d: Unseal after reopen = %q, %v", round, got, err)
		}
		if !h.SigningPublicKey().Equal(pub) {
			t.Fatalf("round %d: signing key changed after reopen", round)
		}
		c11 := h.ctx.(*crypto11.Context)
		keks, err := c11.FindKeys([]byte(DefaultKEKLabel), nil)
		if err != nil || len(keks) != 1 {
			t.Fatalf("round %d: %d KEKs with CKA_ID %s (err %v), want 1", round, len(keks), DefaultKEKLabel, err)
		}
		pairs, err := c11.FindKeyPairs([]byte(DefaultSigningKeyLabel), nil)
		if err != nil || len(pairs) != 1 {
			t.Fatalf("round %d: %d signing key pairs (err %v), want 1", round, len(pairs), err)
		}
		// Also by label: CKA_LABEL = CKA_ID.
		byLabel, err := c11.FindKeys(nil, []byte(DefaultKEKLabel))
		if err != nil || len(byLabel) != 1 {
			t.Fatalf("round %d: %d KEKs by label (err %v), want 1", round, len(byLabel), err)
		}
		attrs, err := c11.GetAttributes(keks[0], []crypto11.AttributeType{crypto11.CkaSensitive, crypto11.CkaExtractable, crypto11.CkaToken})
		if err != nil {
			t.Fatal(err)
		}
		if attrs[crypto11.CkaSensitive].Value[0] != 1 || attrs[crypto11.CkaExtractable].Value[0] != 0 || attrs[crypto11.CkaToken].Value[0] != 1 {
			t.Fatalf("KEK attributes: %v", attrs)
		}
	}
}

func TestPrepareDevTokenTwice(t *testing.T) {
	needHSM(t)
	ctx := context.Background()
	a, err := PrepareDevToken(ctx, testDir, DefaultModulePath, "coffer-twice")
	if err != nil {
		t.Fatal(err)
	}
	h := openTest(t, a)
	s, err := h.Seal(ctx, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b, err := PrepareDevToken(ctx, testDir, DefaultModulePath, "coffer-twice")
	if err != nil {
		t.Fatal(err)
	}
	if a != b {
		t.Fatalf("second PrepareDevToken returned a different Config")
	}
	if pin, err := ReadPIN(filepath.Join(testDir, "hsm-pin")); err != nil || pin != a.PIN {
		t.Fatalf("hsm-pin does not hold the returned PIN (err %v)", err)
	}
	for _, f := range []string{"hsm-pin", "hsm-so-pin", "softhsm2.conf"} {
		fi, err := os.Stat(filepath.Join(testDir, f))
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: mode %v, err %v", f, fi.Mode(), err)
		}
	}
	if fi, err := os.Stat(filepath.Join(testDir, "tokens")); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("tokens dir: %v %v", fi.Mode(), err)
	}
	if got := os.Getenv("SOFTHSM2_CONF"); got != filepath.Join(testDir, "softhsm2.conf") {
		t.Fatalf("SOFTHSM2_CONF = %q", got)
	}
	// Same token: the blob sealed before opens with a fresh HSM.
	h.Close()
	h2 := openTest(t, b)
	if got, err := h2.Unseal(ctx, s, nil); err != nil || string(got) != "x" {
		t.Fatalf("Unseal = %q, %v", got, err)
	}
	// Exactly one token with that label.
	entries, err := os.ReadDir(filepath.Join(testDir, "tokens"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(testDir, "tokens", e.Name(), "token.object"))
		if err == nil && strings.Contains(string(raw), "coffer-twice") {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("%d tokens labelled coffer-twice, want 1", n)
	}
	// A different dir cannot be used while the module is loaded.
	if _, err := PrepareDevToken(ctx, t.TempDir(), DefaultModulePath, "other"); err == nil || !strings.Contains(err.Error(), "one dev token dir per process") {
		t.Fatalf("PrepareDevToken on another dir while loaded: %v", err)
	}
}

func TestSign(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	ctx := context.Background()
	pub, ok := h.SigningPublicKey().(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		t.Fatalf("SigningPublicKey = %v", h.SigningPublicKey())
	}
	for _, msg := range []string{"", "header.payload", strings.Repeat("x", 5000)} {
		d := sha256.Sum256([]byte(msg))
		sig, err := h.Sign(ctx, d[:])
		if err != nil {
			t.Fatal(err)
		}
		if len(sig) != 64 {
			t.Fatalf("len(sig) = %d, want 64", len(sig))
		}
		r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
		if !ecdsa.Verify(pub, d[:], r, s) {
			t.Fatalf("signature over %q does not verify", msg)
		}
		d[0] ^= 1
		if ecdsa.Verify(pub, d[:], r, s) {
			t.Fatal("signature verifies for another digest")
		}
	}
	for _, n := range []int{0, 20, 31, 33, 64} {
		if _, err := h.Sign(ctx, make([]byte, n)); err == nil {
			t.Errorf("Sign(%d-byte digest) succeeded", n)
		}
	}
}

func TestDERToRaw(t *testing.T) {
	// r and s shorter than 32 bytes are left-padded.
	der := []byte{0x30, 0x06, 0x02, 0x01, 0x05, 0x02, 0x01, 0x07}
	raw, err := derToRaw(der, 32)
	if err != nil {
		t.Fatal(err)
	}
	if raw[31] != 5 || raw[63] != 7 || len(raw) != 64 {
		t.Fatalf("derToRaw = %x", raw)
	}
	for _, bad := range [][]byte{nil, {0x30}, append(der, 0)} {
		if _, err := derToRaw(bad, 32); err == nil {
			t.Errorf("derToRaw(%x) succeeded", bad)
		}
	}
}

func TestCloseTwiceAndUseAfterClose(t *testing.T) {
	h, err := Open(context.Background(), tokenCfg(t, testToken))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := h.Seal(ctx, []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := h.Seal(ctx, []byte("x"), nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Seal after Close err = %v, want ErrUnavailable", err)
	}
	if _, err := h.Unseal(ctx, s, nil); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Unseal after Close err = %v, want ErrUnavailable", err)
	}
	if _, err := h.Sign(ctx, make([]byte, 32)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Sign after Close err = %v, want ErrUnavailable", err)
	}
	if err := h.Check(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check after Close err = %v, want ErrUnavailable", err)
	}
}

func TestInfoAndCheck(t *testing.T) {
	cfg := tokenCfg(t, testToken)
	h := openTest(t, cfg)
	info := h.Info()
	if info.Module != DefaultModulePath || info.TokenLabel != testToken ||
		len(info.KeyLabels) != 3 || info.KeyLabels[0] != DefaultKEKLabel || info.KeyLabels[1] != DefaultSigningKeyLabel ||
		info.KeyLabels[2] != ImportKeyLabel {
		t.Fatalf("Info = %+v", info)
	}
	if err := h.Check(context.Background()); err != nil {
		t.Fatalf("Check: %v", err)
	}
}

func TestReadPIN(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	chmod := func(p string, m os.FileMode) string {
		if err := os.Chmod(p, m); err != nil {
			t.Fatal(err)
		}
		return p
	}
	missing := filepath.Join(dir, "missing")
	tests := []struct {
		name, path, want, wantErr string
	}{
		{"plain", write("plain", "1234"), "1234", ""},
		{"trailing newline", write("nl", "s3cret-pin\n"), "s3cret-pin", ""},
		{"trailing whitespace", write("ws", "pin \t\r\n\n"), "pin", ""},
		{"missing", missing, "", "read HSM PIN file " + missing + ": no such file or directory"},
		{"empty", write("empty", ""), "", "HSM PIN file " + filepath.Join(dir, "empty") + " is empty"},
		{"only newline", write("blank", "\n"), "", "HSM PIN file " + filepath.Join(dir, "blank") + " is empty"},
		{"directory", dir, "", "read HSM PIN file " + dir + ": is a directory"},
		{"group-readable", chmod(write("group", "1234"), 0o640), "1234", ""},
		{"world-readable", chmod(write("world", "1234"), 0o644), "", "HSM PIN file " + filepath.Join(dir, "world") + " is readable by every user (mode 0644): chmod o-rwx " + filepath.Join(dir, "world")},
		// Any user could put another PIN there: the daemon's next start
		// or reconnect would log in with it, and an HSM that counts
		// failed logins locks the token.
		{"world-writable", chmod(write("wworld", "1234"), 0o602), "", "HSM PIN file " + filepath.Join(dir, "wworld") + " is writable by every user (mode 0602): chmod o-rwx " + filepath.Join(dir, "wworld")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ReadPIN(tt.path)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("ReadPIN err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("ReadPIN = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

// closeOnce lets a test kill the crypto11 context under a live *HSM while
// keeping HSM.Close's own crypto11 Close from running twice.
type closeOnce struct {
	p11
	once sync.Once
}

func (c *closeOnce) Close() error {
	c.once.Do(func() { _ = c.p11.Close() })
	return nil
}

func TestDeadTokenIsUnavailableNotPanic(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	ctx := context.Background()
	s, err := h.Seal(ctx, []byte("x"), []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	co := &closeOnce{p11: h.ctx}
	h.ctx = co
	_ = co.Close() // the token goes away under the HSM

	if _, err := h.Seal(ctx, []byte("x"), []byte("a")); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Seal err = %v, want ErrUnavailable", err)
	}
	if _, err := h.Unseal(ctx, s, []byte("a")); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOpen) {
		t.Errorf("Unseal err = %v, want ErrUnavailable only", err)
	}
	if _, err := h.Sign(ctx, make([]byte, 32)); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Sign err = %v, want ErrUnavailable", err)
	}
	if err := h.Check(ctx); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Check err = %v, want ErrUnavailable", err)
	}
}

func TestConfigureError(t *testing.T) {
	cfg := Config{ModulePath: "/m.so", TokenLabel: "tok"}
	p11err := func(code uint) error { return pkcs11.Error(code) }
	tests := []struct {
		name string
		err  error
		want string
	}{
		{"token not found", errors.New("could not find PKCS#11 token"),
			"HSM token tok not found in module /m.so: CKR_TOKEN_NOT_PRESENT (no slot holds a token with that label)"},
		{"wrong PIN", fmt.Errorf("failed to log into long term session: %w", p11err(pkcs11.CKR_PIN_INCORRECT)),
			"wrong HSM PIN for token tok (module /m.so): CKR_PIN_INCORRECT"},
		{"PIN length", p11err(pkcs11.CKR_PIN_LEN_RANGE),
			"wrong HSM PIN for token tok (module /m.so): CKR_PIN_LEN_RANGE"},
		{"PIN locked", p11err(pkcs11.CKR_PIN_LOCKED),
			"HSM PIN for token tok (module /m.so) is locked or expired: CKR_PIN_LOCKED"},
		{"dlopen", errors.New("failed to create module context: failed to open module"),
			"cannot load PKCS#11 module /m.so: not a loadable PKCS#11 library"},
		{"initialize", fmt.Errorf("failed to create module context: %w", fmt.Errorf("failed to initialize module: %w", p11err(pkcs11.CKR_GENERAL_ERROR))),
			"cannot initialise PKCS#11 module /m.so: CKR_GENERAL_ERROR"},
		{"other", fmt.Errorf("failed to create long term session: %w", p11err(pkcs11.CKR_SESSION_COUNT)),
			"cannot open HSM token tok (module /m.so): CKR_SESSION_COUNT"},
		{"unknown code", p11err(0x8000abcd),
			"cannot open HSM token tok (module /m.so): CKR 0x8000ABCD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := configureError(cfg, tt.err).Error(); got != tt.want {
				t.Fatalf("configureError =\n  %q\nwant\n  %q", got, tt.want)
			}
		})
	}
}
