package hsm

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"sync"
	"testing"
)

func TestSealUnsealRoundTrip(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	ctx := context.Background()
	tests := []struct {
		name string
		size int
		aad  []byte
	}{
		{"empty", 0, []byte("p/s/1")},
		{"1 byte", 1, []byte("p/s/1")},
		{"1 byte no aad", 1, nil},
		{"block", 16, []byte("p/s/2")},
		{"odd", 1000, []byte("project/secret/3")},
		{"8 KiB", 8 << 10, []byte("project/secret/4")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pt := make([]byte, tt.size)
			if _, err := rand.Read(pt); err != nil {
				t.Fatal(err)
			}
			s, err := h.Seal(ctx, pt, tt.aad)
			if err != nil {
				t.Fatalf("Seal: %v", err)
			}
			if s.KEK != DefaultKEKLabel || len(s.Nonce) != 12 || len(s.WrapNonce) != 12 || len(s.WrappedDEK) != 48 {
				t.Fatalf("envelope shape: kek=%q nonce=%d wrapnonce=%d wrapped=%d", s.KEK, len(s.Nonce), len(s.WrapNonce), len(s.WrappedDEK))
			}
			if tt.size >= 16 && bytes.Contains(s.Ciphertext, pt) {
				t.Fatal("ciphertext contains plaintext")
			}
			// Through JSON, as callers store it.
			js, err := json.Marshal(s)
			if err != nil {
				t.Fatal(err)
			}
			var s2 Sealed
			if err := json.Unmarshal(js, &s2); err != nil {
				t.Fatal(err)
			}
			got, err := h.Unseal(ctx, &s2, tt.aad)
			if err != nil {
				t.Fatalf("Unseal: %v", err)
			}
			if !bytes.Equal(got, pt) {
				t.Fatalf("Unseal = %d bytes, want %d matching bytes", len(got), len(pt))
			}
		})
	}
}

func TestSealTwiceDiffers(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	ctx := context.Background()
	pt, aad := []byte("same plaintext"), []byte("p/s/1")
	a, err := h.Seal(ctx, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	b, err := h.Seal(ctx, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	for name, pair := range map[string][2][]byte{
		"Ciphertext": {a.Ciphertext, b.Ciphertext},
		"Nonce":      {a.Nonce, b.Nonce},
		"WrapNonce":  {a.WrapNonce, b.WrapNonce},
		"WrappedDEK": {a.WrappedDEK, b.WrappedDEK},
	} {
		if bytes.Equal(pair[0], pair[1]) {
			t.Errorf("%s equal across two seals", name)
		}
	}
}

func TestUnsealFailsWithErrOpen(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	ctx := context.Background()
	pt, aad := []byte("top secret value"), []byte("proj/secret/7")
	orig, err := h.Seal(ctx, pt, aad)
	if err != nil {
		t.Fatal(err)
	}
	clone := func() *Sealed {
		return &Sealed{
			KEK:        orig.KEK,
			WrapNonce:  bytes.Clone(orig.WrapNonce),
			WrappedDEK: bytes.Clone(orig.WrappedDEK),
			Nonce:      bytes.Clone(orig.Nonce),
			Ciphertext: bytes.Clone(orig.Ciphertext),
		}
	}
	tests := []struct {
		name   string
		mutate func(s *Sealed)
		aad    []byte
	}{
		{"wrong aad", func(*Sealed) {}, []byte("proj/secret/8")},
		{"nil aad", func(*Sealed) {}, nil},
		{"tampered Ciphertext", func(s *Sealed) { s.Ciphertext[0] ^= 1 }, aad},
		{"tampered Ciphertext tag", func(s *Sealed) { s.Ciphertext[len(s.Ciphertext)-1] ^= 0x80 }, aad},
		{"truncated Ciphertext", func(s *Sealed) { s.Ciphertext = s.Ciphertext[:10] }, aad},
		{"tampered WrappedDEK", func(s *Sealed) { s.WrappedDEK[3] ^= 1 }, aad},
		{"tampered WrappedDEK tag", func(s *Sealed) { s.WrappedDEK[47] ^= 1 }, aad},
		{"short WrappedDEK", func(s *Sealed) { s.WrappedDEK = s.WrappedDEK[:47] }, aad},
		{"tampered Nonce", func(s *Sealed) { s.Nonce[0] ^= 1 }, aad},
		{"short Nonce", func(s *Sealed) { s.Nonce = s.Nonce[:11] }, aad},
		{"tampered WrapNonce", func(s *Sealed) { s.WrapNonce[11] ^= 1 }, aad},
		{"long WrapNonce", func(s *Sealed) { s.WrapNonce = append(s.WrapNonce, 0) }, aad},
		{"swapped nonces", func(s *Sealed) { s.Nonce, s.WrapNonce = s.WrapNonce, s.Nonce }, aad},
		{"unknown KEK", func(s *Sealed) { s.KEK = "coffer-kek-999" }, aad},
		{"empty KEK", func(s *Sealed) { s.KEK = "" }, aad},
		{"KEK label is signing key", func(s *Sealed) { s.KEK = DefaultSigningKeyLabel }, aad},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := clone()
			tt.mutate(s)
			got, err := h.Unseal(ctx, s, tt.aad)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("Unseal err = %v, want ErrOpen", err)
			}
			if got != nil {
				t.Fatal("Unseal returned data on failure")
			}
			if bytes.Contains([]byte(err.Error()), pt) {
				t.Fatal("error contains plaintext")
			}
		})
	}
	if _, err := h.Unseal(ctx, nil, aad); !errors.Is(err, ErrOpen) {
		t.Fatalf("Unseal(nil) err = %v, want ErrOpen", err)
	}
	// The original still opens: failures leave no state behind.
	if got, err := h.Unseal(ctx, orig, aad); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("Unseal(orig) = %q, %v", got, err)
	}
}

func TestKEKRotationUnsealsOldEnvelopes(t *testing.T) {
	cfg := tokenCfg(t, testToken)
	ctx := context.Background()
	h1 := openTest(t, cfg)
	old, err := h1.Seal(ctx, []byte("v1"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.KEKLabel = "coffer-kek-rot-2"
	h2 := openTest(t, cfg)
	fresh, err := h2.Seal(ctx, []byte("v2"), []byte("aad"))
	if err != nil {
		t.Fatal(err)
	}
	if fresh.KEK != "coffer-kek-rot-2" {
		t.Fatalf("fresh.KEK = %q", fresh.KEK)
	}
	for i := 0; i < 2; i++ { // second round hits the cache
		if got, err := h2.Unseal(ctx, old, []byte("aad")); err != nil || string(got) != "v1" {
			t.Fatalf("Unseal old with rotated HSM = %q, %v", got, err)
		}
	}
	if got, err := h1.Unseal(ctx, fresh, []byte("aad")); err != nil || string(got) != "v2" {
		t.Fatalf("Unseal new with old HSM = %q, %v", got, err)
	}
	// Wrapping with the old KEK and opening with the new one must not work.
	tampered := *old
	tampered.KEK = "coffer-kek-rot-2"
	if _, err := h2.Unseal(ctx, &tampered, []byte("aad")); !errors.Is(err, ErrOpen) {
		t.Fatalf("Unseal with relabelled KEK err = %v, want ErrOpen", err)
	}
}

func TestConcurrentSealUnseal(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	ctx := context.Background()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 20; i++ {
				pt := []byte{byte(g), byte(i)}
				s, err := h.Seal(ctx, pt, pt)
				if err != nil {
					errs <- err
					return
				}
				got, err := h.Unseal(ctx, s, pt)
				if err != nil || !bytes.Equal(got, pt) {
					errs <- errors.Join(errors.New("round trip mismatch"), err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestCanceledContext(t *testing.T) {
	h := openTest(t, tokenCfg(t, testToken))
	s, err := h.Seal(context.Background(), []byte("x"), nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := h.Seal(ctx, []byte("x"), nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Seal err = %v, want context.Canceled", err)
	}
	if _, err := h.Unseal(ctx, s, nil); !errors.Is(err, context.Canceled) {
		t.Errorf("Unseal err = %v, want context.Canceled", err)
	}
	if _, err := h.Sign(ctx, make([]byte, 32)); !errors.Is(err, context.Canceled) {
		t.Errorf("Sign err = %v, want context.Canceled", err)
	}
	if err := h.Check(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("Check err = %v, want context.Canceled", err)
	}
}

func BenchmarkSeal(b *testing.B) {
	h := openTest(b, tokenCfg(b, testToken))
	ctx := context.Background()
	pt, aad := make([]byte, 256), []byte("project/secret/1")
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.Seal(ctx, pt, aad); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

func BenchmarkUnseal(b *testing.B) {
	h := openTest(b, tokenCfg(b, testToken))
	ctx := context.Background()
	pt, aad := make([]byte, 256), []byte("project/secret/1")
	s, err := h.Seal(ctx, pt, aad)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if _, err := h.Unseal(ctx, s, aad); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
