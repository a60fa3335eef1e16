package hsm

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/tpmtest"
)

func TestParseIntermediateMode(t *testing.T) {
	for in, want := range map[string]IntermediateMode{"": IntermediateAuto, "auto": IntermediateAuto, "on": IntermediateOn, "off": IntermediateOff} {
		if got, err := ParseIntermediateMode(in); err != nil || got != want {
			t.Errorf("ParseIntermediateMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseIntermediateMode("yes"); err == nil || err.Error() != `intermediate key mode "yes": use auto, on or off` {
		t.Errorf("ParseIntermediateMode(yes) = %v", err)
	}
}

// ikEntries returns the IK entries h holds (to check they are wiped).
func ikEntries(h *HSM) []*ikEntry {
	h.ik.mu.Lock()
	defer h.ik.mu.Unlock()
	var out []*ikEntry
	for _, e := range h.ik.byID {
		out = append(out, e)
	}
	return out
}

// TestIntermediateSoftHSM: with the mode on, envelopes carry the
// intermediate key and open with one token unwrap of it in all; they
// refuse another aad and a changed part; envelopes made without one (the
// stores of before) open and Rewrap moves them to it under the same KEK;
// rotation moves them to the new KEK's; destroying a KEK and closing wipe
// the keys.
func TestIntermediateSoftHSM(t *testing.T) {
	cfg := tokenCfg(t, "coffer-ik")
	ctx := context.Background()

	// A store of before: envelopes wrapped by the KEK itself.
	off := cfg
	off.Intermediate = IntermediateOff
	h := openTest(t, off)
	aad := []byte("p/s/1")
	old, err := h.Seal(ctx, []byte("sealed before"), aad)
	if err != nil || old.Intermediate != nil {
		t.Fatalf("Seal (off) = %+v, %v; want no intermediate key", old, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}

	on := cfg
	on.Intermediate = IntermediateOn
	h = openTest(t, on)
	if pt, err := h.Unseal(ctx, old, aad); err != nil || string(pt) != "sealed before" {
		t.Fatalf("Unseal of an envelope of before = %q, %v", pt, err)
	}
	var sealed []*Sealed
	for i := range 20 {
		s, err := h.Seal(ctx, []byte{byte(i)}, aad)
		if err != nil {
			t.Fatal(err)
		}
		if s.Intermediate == nil || s.KEK != DefaultKEKLabel || len(s.WrapNonce) != gcmNonceSize || len(s.WrappedDEK) != ikWrappedLen {
			t.Fatalf("envelope = %+v, want one wrapped through an intermediate key", s)
		}
		sealed = append(sealed, s)
	}
	for i, s := range sealed {
		if pt, err := h.Unseal(ctx, s, aad); err != nil || !slices.Equal(pt, []byte{byte(i)}) {
			t.Fatalf("Unseal %d = %v, %v", i, pt, err)
		}
		if !slices.Equal(s.Intermediate.Wrapped, sealed[0].Intermediate.Wrapped) {
			t.Fatalf("envelope %d has another intermediate key", i)
		}
	}
	if n := h.ik.unwraps.Load(); n != 0 {
		t.Fatalf("%d token unwraps of the intermediate key this HSM made, want 0", n)
	}

	s := sealed[0]
	bad := func(f func(*Sealed)) *Sealed {
		c := *s
		iw := *s.Intermediate
		iw.Wrapped, iw.WrapNonce = slices.Clone(iw.Wrapped), slices.Clone(iw.WrapNonce)
		c.Intermediate = &iw
		c.WrapNonce, c.WrappedDEK, c.Ciphertext = slices.Clone(s.WrapNonce), slices.Clone(s.WrappedDEK), slices.Clone(s.Ciphertext)
		f(&c)
		return &c
	}
	for _, tc := range []struct {
		name string
		s    *Sealed
		aad  []byte
	}{
		{"other aad", s, []byte("p/s/2")},
		{"wrapped DEK changed", bad(func(c *Sealed) { c.WrappedDEK[3] ^= 1 }), aad},
		{"wrap nonce changed", bad(func(c *Sealed) { c.WrapNonce[0] ^= 1 }), aad},
		{"wrapped DEK cut", bad(func(c *Sealed) { c.WrappedDEK = c.WrappedDEK[:40] }), aad},
		{"intermediate key changed", bad(func(c *Sealed) { c.Intermediate.Wrapped[5] ^= 1 }), aad},
		{"intermediate key cut", bad(func(c *Sealed) { c.Intermediate.Wrapped = c.Intermediate.Wrapped[:10] }), aad},
		{"intermediate key without nonce", bad(func(c *Sealed) { c.Intermediate.WrapNonce = nil }), aad},
		{"ciphertext changed", bad(func(c *Sealed) { c.Ciphertext[0] ^= 1 }), aad},
	} {
		if _, err := h.Unseal(ctx, tc.s, tc.aad); !errors.Is(err, ErrOpen) {
			t.Errorf("Unseal with %s: %v, want ErrOpen", tc.name, err)
		}
	}

	// Migration: Rewrap moves an envelope of before to the intermediate
	// key, under the same KEK; an envelope already there comes back equal.
	moved, err := h.Rewrap(ctx, old, aad)
	if err != nil || moved.KEK != DefaultKEKLabel || moved.Intermediate == nil || !slices.Equal(moved.Ciphertext, old.Ciphertext) {
		t.Fatalf("Rewrap of an envelope of before = %+v, %v", moved, err)
	}
	if pt, err := h.Unseal(ctx, moved, aad); err != nil || string(pt) != "sealed before" {
		t.Fatalf("Unseal of the moved envelope = %q, %v", pt, err)
	}
	if same, err := h.Rewrap(ctx, s, aad); err != nil || !slices.Equal(same.WrappedDEK, s.WrappedDEK) || !slices.Equal(same.Intermediate.Wrapped, s.Intermediate.Wrapped) {
		t.Fatalf("Rewrap of a current envelope changed it (%v)", err)
	}

	// Rotation: the new KEK has an intermediate key of its own.
	next, err := h.RotateKEK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rot, err := h.Rewrap(ctx, s, aad)
	if err != nil || rot.KEK != next || rot.Intermediate == nil || slices.Equal(rot.Intermediate.Wrapped, s.Intermediate.Wrapped) {
		t.Fatalf("Rewrap after rotation = %+v, %v", rot, err)
	}
	if pt, err := h.Unseal(ctx, rot, aad); err != nil || !slices.Equal(pt, []byte{0}) {
		t.Fatalf("Unseal after rotation = %v, %v", pt, err)
	}
	var oldIK *ikEntry
	for _, e := range ikEntries(h) {
		if e.kek == DefaultKEKLabel {
			oldIK = e
		}
	}
	if oldIK == nil || oldIK.key == nil || oldIK.key.mem == nil {
		t.Fatal("the old KEK's intermediate key is not held")
	}
	if err := h.DestroyKEK(ctx, DefaultKEKLabel); err != nil {
		t.Fatal(err)
	}
	if oldIK.key.mem != nil || oldIK.key.key != nil {
		t.Fatal("destroying the KEK did not wipe its intermediate key")
	}
	if _, err := h.Unseal(ctx, s, aad); !errors.Is(err, ErrOpen) {
		t.Fatalf("Unseal under the destroyed KEK: %v, want ErrOpen", err)
	}
	held := ikEntries(h)
	if len(held) != 1 || held[0].kek != next {
		t.Fatalf("after destroying %s: %d intermediate keys held", DefaultKEKLabel, len(held))
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	if held[0].key.mem != nil || len(ikEntries(h)) != 0 {
		t.Fatal("Close did not wipe the intermediate keys")
	}

	// Mode off again: envelopes with an intermediate key still open, and
	// Rewrap moves them back to the KEK itself.
	h = openTest(t, off)
	if pt, err := h.Unseal(ctx, rot, aad); err != nil || !slices.Equal(pt, []byte{0}) {
		t.Fatalf("Unseal (off) of an envelope with an intermediate key = %v, %v", pt, err)
	}
	if len(ikEntries(h)) != 0 {
		t.Fatal("mode off keeps an intermediate key")
	}
	back, err := h.Rewrap(ctx, rot, aad)
	if err != nil || back.Intermediate != nil || back.KEK != next {
		t.Fatalf("Rewrap (off) = %+v, %v", back, err)
	}
	if pt, err := h.Unseal(ctx, back, aad); err != nil || !slices.Equal(pt, []byte{0}) {
		t.Fatalf("Unseal of the envelope moved back = %v, %v", pt, err)
	}
}

// TestIntermediateKept: the intermediate key CurrentIntermediate returns,
// given to UseIntermediate after a restart, is the one new seals use, so
// the envelopes of both runs open after one token unwrap.
func TestIntermediateKept(t *testing.T) {
	cfg := tokenCfg(t, "coffer-ik-kept")
	cfg.Intermediate = IntermediateOn
	ctx := context.Background()
	h := openTest(t, cfg)
	aad := []byte("a")
	s1, err := h.Seal(ctx, []byte("one"), aad)
	if err != nil {
		t.Fatal(err)
	}
	ik, err := h.CurrentIntermediate(ctx)
	if err != nil || ik == nil || ik.KEK != DefaultKEKLabel || ik.Scheme != string(KEKAESGCM) || !slices.Equal(ik.Wrapped, s1.Intermediate.Wrapped) {
		t.Fatalf("CurrentIntermediate = %+v, %v", ik, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openTest(t, cfg)
	if err := h.UseIntermediate(ctx, ik); err != nil {
		t.Fatal(err)
	}
	s2, err := h.Seal(ctx, []byte("two"), aad)
	if err != nil || !slices.Equal(s2.Intermediate.Wrapped, ik.Wrapped) {
		t.Fatalf("Seal after UseIntermediate: %v, same key %v", err, err == nil && slices.Equal(s2.Intermediate.Wrapped, ik.Wrapped))
	}
	for _, s := range []*Sealed{s1, s2} {
		if _, err := h.Unseal(ctx, s, aad); err != nil {
			t.Fatal(err)
		}
	}
	if n := h.ik.unwraps.Load(); n != 1 {
		t.Fatalf("%d token unwraps, want 1 (UseIntermediate's)", n)
	}
	// Unsigned, or signed for another key: refused (see
	// TestTPMIntermediateKey for a planted one).
	unsigned := *ik
	unsigned.Sig = nil
	if err := h.UseIntermediate(ctx, &unsigned); !errors.Is(err, ErrOpen) {
		t.Fatalf("UseIntermediate of an unsigned key: %v, want ErrOpen", err)
	}
	// A changed key is refused.
	badIK := *ik
	badIK.Wrapped = slices.Clone(ik.Wrapped)
	badIK.Wrapped[0] ^= 1
	if err := h.UseIntermediate(ctx, &badIK); !errors.Is(err, ErrOpen) {
		t.Fatalf("UseIntermediate of a changed key: %v, want ErrOpen", err)
	}
	// Mode off: there is none to keep.
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.Intermediate = IntermediateOff
	h = openTest(t, cfg)
	if ik, err := h.CurrentIntermediate(ctx); err != nil || ik != nil {
		t.Fatalf("CurrentIntermediate (off) = %+v, %v", ik, err)
	}
}

// TestTPMIntermediateKey: on a TPM (auto mode) many envelopes, opened by
// many goroutines at once, cost the TPM one unwrap; after a rotation and a
// restart with the kept key, one more.
func TestTPMIntermediateKey(t *testing.T) {
	tok := tpmtest.Start(t, "coffer-ik")
	tok.Setenv(t)
	cfg := Config{ModulePath: tok.Module, TokenLabel: tok.Label, PIN: tok.PIN}
	ctx := context.Background()
	h, err := Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = h.Close() }()
	aad := []byte("p/s/1")
	var sealed []*Sealed
	for i := range 30 {
		s, err := h.Seal(ctx, []byte{byte(i)}, aad)
		if err != nil {
			t.Fatal(err)
		}
		if s.Scheme != string(KEKRSAOAEP) || s.Intermediate == nil || len(s.Intermediate.Wrapped) != rsaKEKSize {
			t.Fatalf("envelope = %+v, want an RSA-wrapped intermediate key", s)
		}
		sealed = append(sealed, s)
	}
	ik, err := h.CurrentIntermediate(ctx)
	if err != nil || ik == nil {
		t.Fatalf("CurrentIntermediate = %v, %v", ik, err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	cfg.NoCreate = true
	if h, err = Open(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	// Cold: 16 goroutines open everything at once.
	errs := make(chan error, len(sealed))
	for i, s := range sealed {
		go func() {
			pt, err := h.Unseal(ctx, s, aad)
			if err == nil && !slices.Equal(pt, []byte{byte(i)}) {
				err = errors.New("other plaintext")
			}
			errs <- err
		}()
	}
	for range sealed {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if n := h.ik.unwraps.Load(); n != 1 {
		t.Fatalf("%d TPM unwraps for %d envelopes, want 1", n, len(sealed))
	}
	// The attack an RSA KEK invites: a key of the attacker's choosing,
	// wrapped with the KEK's public half (no token needed), planted as the
	// kept IK (a forged backup, a swapped store). New seals must not use
	// it: it is not signed by the token.
	label, k := h.currentKEK()
	chosen := make([]byte, dekSize)
	nonce, wrapped, err := h.wrapDEK(ctx, k, chosen, ikAAD(label))
	if err != nil {
		t.Fatal(err)
	}
	planted := &IntermediateKey{KEK: label, Scheme: string(KEKRSAOAEP), WrappedKey: WrappedKey{WrapNonce: nonce, Wrapped: wrapped}}
	if err := h.UseIntermediate(ctx, planted); !errors.Is(err, ErrOpen) {
		t.Fatalf("UseIntermediate of a planted key: %v, want ErrOpen", err)
	}
	planted.Sig = ik.Sig // another key's signature
	if err := h.UseIntermediate(ctx, planted); !errors.Is(err, ErrOpen) {
		t.Fatalf("UseIntermediate of a planted key with another's signature: %v, want ErrOpen", err)
	}
	if err := h.UseIntermediate(ctx, ik); err != nil {
		t.Fatal(err)
	}
	if s, err := h.Seal(ctx, []byte("after"), aad); err != nil || !slices.Equal(s.Intermediate.Wrapped, ik.Wrapped) {
		t.Fatalf("a seal after the planted key was refused: %v, want the token's own key", err)
	}
	next, err := h.RotateKEK(ctx)
	if err != nil {
		t.Fatal(err)
	}
	moved, err := h.Rewrap(ctx, sealed[0], aad)
	if err != nil || moved.KEK != next || moved.Intermediate == nil {
		t.Fatalf("Rewrap = %+v, %v", moved, err)
	}
	if pt, err := h.Unseal(ctx, moved, aad); err != nil || !slices.Equal(pt, []byte{0}) {
		t.Fatalf("Unseal after rotation = %v, %v", pt, err)
	}
	if _, err := h.Unseal(ctx, moved, []byte("p/s/2")); !errors.Is(err, ErrOpen) {
		t.Fatalf("Unseal with another aad: %v, want ErrOpen", err)
	}
}

// TestIntermediateWaiterOutlivesOwner: callers waiting for the first
// unwrap of an intermediate key do not fail because the caller doing it
// gave up (its context ended); they unwrap it themselves.
func TestIntermediateWaiterOutlivesOwner(t *testing.T) {
	cfg := tokenCfg(t, "coffer-ik-wait")
	cfg.Intermediate = IntermediateOn
	ctx := context.Background()
	h := openTest(t, cfg)
	aad := []byte("a")
	s, err := h.Seal(ctx, []byte("x"), aad)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Close(); err != nil {
		t.Fatal(err)
	}
	h = openTest(t, cfg) // nothing unwrapped yet

	ownerCtx, cancel := context.WithCancel(ctx)
	waiting := make(chan struct{})
	testHookIKUnwrap = func(hctx context.Context) {
		if hctx != ownerCtx {
			return
		}
		<-waiting // the other caller waits for this unwrap
		cancel()
	}
	t.Cleanup(func() { testHookIKUnwrap = nil })
	ownerErr := make(chan error, 1)
	go func() { _, err := h.Unseal(ownerCtx, s, aad); ownerErr <- err }()
	// Wait for the owner's entry, then join it.
	for len(ikEntries(h)) == 0 {
		time.Sleep(time.Millisecond)
	}
	waiterErr := make(chan error, 1)
	go func() {
		pt, err := h.Unseal(ctx, s, aad)
		if err == nil && string(pt) != "x" {
			err = errors.New("other plaintext")
		}
		waiterErr <- err
	}()
	for {
		h.ik.mu.Lock()
		n := 0
		for _, e := range h.ik.byID {
			n = e.refs
		}
		h.ik.mu.Unlock()
		if n == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	close(waiting)
	if err := <-ownerErr; !errors.Is(err, context.Canceled) {
		t.Fatalf("the owner's Unseal: %v, want context.Canceled", err)
	}
	if err := <-waiterErr; err != nil {
		t.Fatalf("the waiter's Unseal: %v, want its plaintext", err)
	}
}
