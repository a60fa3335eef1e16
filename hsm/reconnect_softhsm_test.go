package hsm

import (
	"context"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse-keypont/crypto11"
)

var lostRuns atomic.Int32

// countKeys wraps a real crypto11 context and counts key creation.
type countKeys struct {
	p11
	n *atomic.Int32
}

func (c countKeys) GenerateSecretKeyWithAttributes(t crypto11.AttributeSet, bits int, ci *crypto11.SymmetricCipher) (*crypto11.SecretKey, error) {
	c.n.Add(1)
	return c.p11.GenerateSecretKeyWithAttributes(t, bits, ci)
}

func (c countKeys) GenerateECDSAKeyPairWithAttributes(pub, priv crypto11.AttributeSet, curve elliptic.Curve) (crypto11.Signer, error) {
	c.n.Add(1)
	return c.p11.GenerateECDSAKeyPairWithAttributes(pub, priv, curve)
}

// tokenDir finds the SoftHSM directory of the token labelled label.
func tokenDir(t *testing.T, label string) string {
	t.Helper()
	tokens := filepath.Join(testDir, "tokens")
	entries, err := os.ReadDir(tokens)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		raw, err := os.ReadFile(filepath.Join(tokens, e.Name(), "token.object"))
		if err == nil && strings.Contains(string(raw), label) {
			return filepath.Join(tokens, e.Name())
		}
	}
	t.Fatalf("no token directory for %s", label)
	return ""
}

// TestSoftHSMTokenLossRecovers takes a real SoftHSM token away under an
// open HSM (its directory is moved out of the token store, which makes
// SoftHSM drop the token and its object handles) and brings it back: the
// HSM fails with ErrUnavailable meanwhile, then recovers by itself, opens
// what it sealed before, and creates no keys. It needs to be the only user
// of the module, as the hsm tests are sequential.
func TestSoftHSMTokenLossRecovers(t *testing.T) {
	label := fmt.Sprintf("coffer-lost-%03d", lostRuns.Add(1)) // a fresh token on every run (-count)
	cfg := tokenCfg(t, label)
	var created atomic.Int32
	orig := configure
	configure = func(c *crypto11.Config) (p11, error) {
		p, err := orig(c)
		if err != nil {
			return nil, err
		}
		return countKeys{p11: p, n: &created}, nil
	}
	t.Cleanup(func() { configure = orig })

	ctx := context.Background()
	logs := &syncLog{}
	cfg.Logger = slog.New(slog.NewTextHandler(logs, nil))
	h := openTest(t, cfg)
	h.rc.minDelay, h.rc.maxDelay = time.Millisecond, 50*time.Millisecond
	if n := created.Load(); n != 2 {
		t.Fatalf("a fresh token got %d keys, want 2", n)
	}
	before, err := h.Seal(ctx, []byte("sealed before the outage"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	pub := h.SigningPublicKey()

	dir := tokenDir(t, label)
	away := filepath.Join(testDir, "away-"+label)
	if err := os.Rename(dir, away); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Rename(away, dir) })

	_, err = h.Seal(ctx, []byte("x"), []byte("aad"))
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "CKR_OBJECT_HANDLE_INVALID") {
		t.Fatalf("Seal with the token gone: %v, want ErrUnavailable with CKR_OBJECT_HANDLE_INVALID", err)
	}
	if _, err := h.Unseal(ctx, before, []byte("aad")); !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrOpen) || !strings.Contains(err.Error(), "reconnecting") {
		t.Errorf("Unseal with the token gone: %v, want the fail-fast ErrUnavailable", err)
	}
	if err := sign(h); !errors.Is(err, ErrUnavailable) {
		t.Errorf("Sign with the token gone: %v", err)
	}
	waitFor(t, "a failed reconnect", func() bool {
		err := h.Check(ctx)
		return err != nil && strings.Contains(err.Error(), "last attempt: HSM token "+label+" not found")
	})

	if err := os.Rename(away, dir); err != nil {
		t.Fatal(err)
	}
	waitRecovered(t, h)
	got, err := h.Unseal(ctx, before, []byte("aad"))
	if err != nil || string(got) != "sealed before the outage" {
		t.Fatalf("Unseal after recovery = %q, %v", got, err)
	}
	s, err := h.Seal(ctx, []byte("after"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := h.Unseal(ctx, s, nil); err != nil || string(got) != "after" {
		t.Fatalf("round trip after recovery = %q, %v", got, err)
	}
	if err := sign(h); err != nil || !h.SigningPublicKey().Equal(pub) {
		t.Fatalf("Sign after recovery: %v (same key: %v)", err, h.SigningPublicKey().Equal(pub))
	}
	if n := created.Load(); n != 2 {
		t.Errorf("%d keys created in all, want 2: the reconnect created keys", n)
	}
	if lost, back := logs.lines("WARN", "HSM token lost"), logs.lines("INFO", "HSM token is back"); len(lost) != 1 || len(back) != 1 {
		t.Errorf("log has %d loss and %d recovery lines, want 1 each:\n%s", len(lost), len(back), logs)
	}
	if strings.Contains(logs.String(), cfg.PIN) {
		t.Error("the log contains the PIN")
	}
}
