package hsm

// Intermediate keys (issue 16). On a token whose unwrap is slow (a TPM:
// RSA-3072 decryption in the chip, about 25 ms on swtpm and more on a real
// one) one HSM call per delivery makes a boot, where dozens of units ask
// for their secrets at once, wait seconds. With an intermediate key the
// token unwraps once per KEK version instead of once per secret:
//
//   - each KEK version has one intermediate key (IK): 256 random bits,
//     wrapped by the KEK in the KEK's scheme (the token unwraps it);
//   - a DEK is wrapped in software with AES-256-GCM under the IK, with the
//     record's additional data bound, and the envelope carries the wrapped
//     IK too (Sealed.Intermediate), so every envelope still opens on its
//     own with nothing but the token (backup, restore, a copied store);
//   - the first unseal of an IK unwraps it in the token and keeps it in
//     memory locked against swapping (mlock), left out of core dumps
//     (MADV_DONTDUMP) and wiped when its KEK is destroyed or the HSM is
//     closed. Later unseals under it make no HSM call. (Each use builds
//     an AES key schedule on the Go heap, which is neither locked nor
//     wiped: the unit forbids core dumps and swap for that reason.)
//   - an IK is signed by the token's signing key when it is made, and a
//     kept one is used for new seals only with that signature: under an
//     RSA-OAEP KEK anyone can wrap a key of their choosing.
//
// The trade: a copy of the daemon's memory now holds a key that opens
// every secret sealed under that KEK version (given the store), where it
// held only the DEKs of operations in flight. Hence the mode: "auto" (the
// default) uses IKs only for KEK versions of a slow scheme (RSA-OAEP, as a
// TPM has), "on" for every KEK, "off" for none; envelopes of either form
// open in every mode, and Rewrap moves them to the form the mode wants.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// IntermediateMode says which KEK versions wrap DEKs through an
// intermediate key.
type IntermediateMode string

const (
	// IntermediateAuto: KEK versions of a slow scheme (rsa-3072-oaep-
	// sha256, a TPM's) only. The empty mode is auto.
	IntermediateAuto IntermediateMode = "auto"
	// IntermediateOn: every KEK version.
	IntermediateOn IntermediateMode = "on"
	// IntermediateOff: none; DEKs are wrapped by the KEK in the token.
	IntermediateOff IntermediateMode = "off"
)

// ParseIntermediateMode checks a mode given by a user.
func ParseIntermediateMode(s string) (IntermediateMode, error) {
	switch m := IntermediateMode(s); m {
	case "", IntermediateAuto:
		return IntermediateAuto, nil
	case IntermediateOn, IntermediateOff:
		return m, nil
	}
	return "", fmt.Errorf("intermediate key mode %q: use auto, on or off", s)
}

// WrappedKey is a key wrapped by a KEK: for aes-256-gcm with a 12-byte
// nonce (the key's additional data names the KEK), for rsa-3072-oaep-
// sha256 without one.
type WrappedKey struct {
	WrapNonce []byte `json:"wrap_nonce,omitempty"`
	Wrapped   []byte `json:"wrapped"`
}

// IntermediateKey is a KEK version's intermediate key as the daemon keeps
// it between starts (so that the secrets sealed in every run share one):
// the key wrapped by KEK in Scheme. Nothing in it is secret.
type IntermediateKey struct {
	KEK    string `json:"kek"`
	Scheme string `json:"scheme"`
	WrappedKey
	// Sig is the token's signing key's signature of the rest (ikDigest):
	// under an RSA-OAEP KEK anyone with the public key can wrap a key of
	// their choosing, and a kept IK that new seals use must be one the
	// token made, or whoever planted it (a forged backup, a swapped
	// store) would read every secret sealed after.
	Sig []byte `json:"sig,omitempty"`
}

// ikDigest is what an IntermediateKey's Sig signs: its KEK, scheme and
// wrapped key, each length-prefixed, under a domain of its own.
func ikDigest(ik *IntermediateKey) []byte {
	h := sha256.New()
	h.Write([]byte("coffer/intermediate-key-signature/v1\x00"))
	for _, f := range [][]byte{[]byte(ik.KEK), []byte(ik.Scheme), ik.WrapNonce, ik.Wrapped} {
		var n [4]byte
		binary.BigEndian.PutUint32(n[:], uint32(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// ikAAD binds a wrapped IK to the label of its KEK (aes-256-gcm only).
func ikAAD(kekLabel string) []byte { return []byte("coffer/intermediate/v1\x00" + kekLabel) }

// maxIKs bounds the IKs kept: one per KEK version in use is the norm
// (more only after restarts without the saved IK, or envelopes copied in
// from another store of the same token).
const maxIKs = 64

// lockedKey is a key in its own anonymous mapping: locked in RAM, left
// out of core dumps, zeroed and unmapped by wipe.
type lockedKey struct {
	mem      []byte // the whole mapping
	key      []byte // its first dekSize bytes
	unlocked bool   // mlock failed (RLIMIT_MEMLOCK): the page may be swapped
}

// newLockedKey copies k into locked memory. When the mapping cannot be
// locked (RLIMIT_MEMLOCK) the key is kept anyway, still left out of dumps:
// a key that may be swapped is what every DEK in flight already is.
func newLockedKey(k []byte) (*lockedKey, error) {
	mem, err := unix.Mmap(-1, 0, unix.Getpagesize(), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return nil, fmt.Errorf("map memory for an intermediate key: %w", err)
	}
	_ = unix.Madvise(mem, unix.MADV_DONTDUMP)
	l := &lockedKey{mem: mem, key: mem[:len(k):len(k)], unlocked: unix.Mlock(mem) != nil}
	copy(l.key, k)
	return l, nil
}

// lockKey is newLockedKey, with a warning (once) when the memory could
// not be locked.
func (h *HSM) lockKey(k []byte) (*lockedKey, error) {
	l, err := newLockedKey(k)
	if err == nil && l.unlocked {
		h.ik.warnOnce.Do(func() {
			h.log().Warn("an intermediate key could not be locked in memory (raise LimitMEMLOCK); it is kept out of core dumps but may be swapped", "token", h.cfg.TokenLabel)
		})
	}
	return l, err
}

// wipe zeroes the key and returns its memory.
func (l *lockedKey) wipe() {
	if l == nil || l.mem == nil {
		return
	}
	clear(l.mem)
	_ = unix.Munlock(l.mem)
	_ = unix.Munmap(l.mem)
	l.mem, l.key = nil, nil
}

// ikEntry is one IK: unwrapped once (ready closes when it is, or failed).
type ikEntry struct {
	kek   string
	ready chan struct{}
	key   *lockedKey // nil until ready, and when unwrapping failed
	err   error
	refs  int // users between get and done; guarded by intermediates.mu
	gone  bool
}

// intermediates are the IKs of one HSM.
type intermediates struct {
	mu    sync.Mutex
	byID  map[[32]byte]*ikEntry
	cur   map[string]*IntermediateKey // by KEK label: the IK new seals use
	mkMu  sync.Mutex                  // serialises making a KEK's IK
	order [][32]byte                  // insertion order, for the bound
	// unwraps counts IKs unwrapped in the token (tests, status).
	unwraps  atomic.Int64
	warnOnce sync.Once // mlock failed
}

func ikID(kek string, scheme KEKScheme, w WrappedKey) [32]byte {
	h := sha256.New()
	h.Write([]byte(kek))
	h.Write([]byte{0})
	h.Write([]byte(scheme))
	h.Write([]byte{0})
	h.Write(w.WrapNonce)
	h.Write([]byte{0})
	h.Write(w.Wrapped)
	var id [32]byte
	h.Sum(id[:0])
	return id
}

// useIK says whether new envelopes under k wrap their DEK through an IK.
func (h *HSM) useIK(k *wrapKey) bool {
	switch h.cfg.Intermediate {
	case IntermediateOn:
		return true
	case IntermediateOff:
		return false
	}
	return k.scheme == KEKRSAOAEP
}

// withIK runs f with the unwrapped IK w of KEK k (label), unwrapping it in
// the token the first time; concurrent first uses wait for one unwrap.
// With cache false (the mode does not use IKs for k) the IK is unwrapped
// for this call only and wiped after. Called with h.mu held shared.
func (h *HSM) withIK(ctx context.Context, label string, k *wrapKey, w WrappedKey, cache bool, f func(ik []byte) error) error {
	if !cache {
		ik, err := h.unwrapKey(ctx, k, label, w.WrapNonce, w.Wrapped, ikAAD(label), "intermediate key")
		defer clear(ik)
		if err != nil {
			return err
		}
		return f(ik)
	}
	for {
		retry, err := h.useCachedIK(ctx, label, k, w, f)
		if !retry {
			return err
		}
	}
}

// useCachedIK is one try of withIK's cached path. It asks for another
// when the unwrap it waited for failed only because its caller's context
// ended.
func (h *HSM) useCachedIK(ctx context.Context, label string, k *wrapKey, w WrappedKey, f func(ik []byte) error) (retry bool, err error) {
	id := ikID(label, k.scheme, w)
	c := &h.ik
	c.mu.Lock()
	if c.byID == nil {
		c.byID = map[[32]byte]*ikEntry{}
	}
	e := c.byID[id]
	owner := e == nil
	if owner {
		e = &ikEntry{kek: label, ready: make(chan struct{})}
		c.byID[id] = e
		c.order = append(c.order, id)
		c.evictLocked()
	}
	e.refs++
	c.mu.Unlock()
	defer c.release(id, e)

	if owner {
		c.unwraps.Add(1)
		if testHookIKUnwrap != nil {
			testHookIKUnwrap(ctx)
		}
		ik, err := h.unwrapKey(ctx, k, label, w.WrapNonce, w.Wrapped, ikAAD(label), "intermediate key")
		if err == nil {
			e.key, err = h.lockKey(ik)
		}
		clear(ik)
		e.err = err
		close(e.ready)
		if err != nil {
			c.mu.Lock()
			if c.byID[id] == e {
				delete(c.byID, id) // not kept: the next use tries again
			}
			c.mu.Unlock()
			return false, err
		}
	} else {
		select {
		case <-e.ready:
		case <-ctx.Done():
			return false, ctx.Err()
		}
		if e.err != nil {
			if (errors.Is(e.err, context.Canceled) || errors.Is(e.err, context.DeadlineExceeded)) && ctx.Err() == nil {
				return true, nil // the owner's caller gave up, not the token
			}
			return false, e.err
		}
	}
	return false, f(e.key.key)
}

// testHookIKUnwrap, when set (tests), runs before a token unwrap of an
// intermediate key that other callers may wait for.
var testHookIKUnwrap func(ctx context.Context)

// release ends a use of e; a dropped entry is wiped by its last user.
func (c *intermediates) release(id [32]byte, e *ikEntry) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e.refs--
	if e.gone && e.refs == 0 {
		e.key.wipe()
	}
}

// dropLocked removes e from the map and wipes it once nobody uses it.
func (c *intermediates) dropLocked(id [32]byte, e *ikEntry) {
	delete(c.byID, id)
	e.gone = true
	if e.refs == 0 {
		select {
		case <-e.ready:
			e.key.wipe()
		default: // its unwrap is in flight: the owner's release wipes it
		}
	}
}

// evictLocked keeps at most maxIKs, dropping the oldest.
func (c *intermediates) evictLocked() {
	for len(c.byID) > maxIKs && len(c.order) > 0 {
		id := c.order[0]
		c.order = c.order[1:]
		if e := c.byID[id]; e != nil {
			c.dropLocked(id, e)
		}
	}
	if len(c.order) > 4*maxIKs { // ids of entries dropped otherwise
		live := c.order[:0]
		for _, id := range c.order {
			if c.byID[id] != nil {
				live = append(live, id)
			}
		}
		c.order = live
	}
}

// dropKEK wipes the IKs of KEK label (destroyed), or of every KEK.
func (c *intermediates) dropKEK(label string, all bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for id, e := range c.byID {
		if all || e.kek == label {
			c.dropLocked(id, e)
		}
	}
	if all {
		c.cur = nil
	} else {
		delete(c.cur, label)
	}
}

// IntermediateKeys is how many unwrapped IKs the HSM holds (for status).
func (h *HSM) IntermediateKeys() int {
	h.ik.mu.Lock()
	defer h.ik.mu.Unlock()
	return len(h.ik.byID)
}

// currentIK returns the IK new seals under KEK k (label) use, making and
// wrapping one the first time. Called with h.mu held shared.
func (h *HSM) currentIK(ctx context.Context, label string, k *wrapKey) (*IntermediateKey, error) {
	c := &h.ik
	c.mu.Lock()
	cur := c.cur[label]
	c.mu.Unlock()
	if cur != nil {
		return cur, nil
	}
	c.mkMu.Lock()
	defer c.mkMu.Unlock()
	c.mu.Lock()
	cur = c.cur[label]
	c.mu.Unlock()
	if cur != nil {
		return cur, nil
	}
	ik := make([]byte, dekSize)
	defer clear(ik)
	if _, err := rand.Read(ik); err != nil {
		return nil, fmt.Errorf("make intermediate key: read random: %w", err)
	}
	nonce, wrapped, err := h.wrapDEK(ctx, k, ik, ikAAD(label))
	if err != nil {
		return nil, fmt.Errorf("wrap intermediate key: %w", err)
	}
	lk, err := h.lockKey(ik)
	if err != nil {
		return nil, err
	}
	cur = &IntermediateKey{KEK: label, Scheme: string(k.scheme), WrappedKey: WrappedKey{WrapNonce: nonce, Wrapped: wrapped}}
	// Signed in the token (the caller holds h.mu), so that a later start
	// takes it back only if the token made it (UseIntermediate).
	_, signer, pub := h.currentSigner()
	if cur.Sig, err = signWith(signer, pub, ikDigest(cur)); err != nil {
		lk.wipe()
		return nil, fmt.Errorf("%w: sign intermediate key: %s", ErrUnavailable, ckrName(err))
	}
	h.installIK(cur, k.scheme, lk)
	return cur, nil
}

// installIK makes cur the IK of its KEK for new seals and keeps its key.
func (h *HSM) installIK(cur *IntermediateKey, scheme KEKScheme, lk *lockedKey) {
	c := &h.ik
	id := ikID(cur.KEK, scheme, cur.WrappedKey)
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.byID == nil {
		c.byID = map[[32]byte]*ikEntry{}
	}
	if c.cur == nil {
		c.cur = map[string]*IntermediateKey{}
	}
	if old := c.byID[id]; old != nil {
		c.dropLocked(id, old)
	}
	e := &ikEntry{kek: cur.KEK, ready: make(chan struct{}), key: lk}
	close(e.ready)
	c.byID[id] = e
	c.order = append(c.order, id)
	c.cur[cur.KEK] = cur
	c.evictLocked()
}

// CurrentIntermediate returns the intermediate key new seals use, made
// now if there is none yet, for the caller to keep (UseIntermediate at the
// next start); nil when the mode uses none for the current KEK.
func (h *HSM) CurrentIntermediate(ctx context.Context) (ik *IntermediateKey, err error) {
	if err := h.begin(ctx); err != nil {
		return nil, err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "make intermediate key")
	label, k := h.currentKEK()
	if k == nil {
		return nil, fmt.Errorf("%w: KEK %s not loaded", ErrUnavailable, label)
	}
	if !h.useIK(k) {
		return nil, nil
	}
	cur, err := h.currentIK(ctx, label, k)
	if err != nil {
		return nil, err
	}
	cp := *cur
	return &cp, nil
}

// UseIntermediate makes ik, kept from an earlier start, the intermediate
// key new seals under its KEK use (when that KEK is current and the mode
// uses one): one unwrap in the token now instead of a new key, so the
// secrets sealed in every run share one. An ik of another KEK is ignored.
func (h *HSM) UseIntermediate(ctx context.Context, ik *IntermediateKey) (err error) {
	if ik == nil {
		return nil
	}
	if err := h.begin(ctx); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer h.recoverTo(&err, "load intermediate key")
	label, k := h.currentKEK()
	if k == nil || ik.KEK != label || !h.useIK(k) {
		return nil
	}
	if KEKScheme(ik.Scheme) != k.scheme {
		return fmt.Errorf("%w: intermediate key says %s but KEK %s is %s", ErrOpen, ik.Scheme, label, k.scheme)
	}
	if err := checkWrapped(k.scheme, ik.WrappedKey); err != nil {
		return err
	}
	if !Verify(h.SigningPublicKey(), ikDigest(ik), ik.Sig) {
		// Not made by this token, or signed by a signing key rotated
		// since: the caller makes a new one (the records under this one
		// still open, each carrying its own wrapped copy).
		return fmt.Errorf("%w: intermediate key of KEK %s is not signed by the token's current signing key", ErrOpen, label)
	}
	// Already unwrapped (the store key, sealed under it, opened first):
	// no second token call.
	h.ik.mkMu.Lock()
	defer h.ik.mkMu.Unlock()
	cp := *ik
	c := &h.ik
	c.mu.Lock()
	if e := c.byID[ikID(label, k.scheme, ik.WrappedKey)]; e != nil && !e.gone && isReady(e) && e.key != nil {
		if c.cur == nil {
			c.cur = map[string]*IntermediateKey{}
		}
		c.cur[label] = &cp
		c.mu.Unlock()
		return nil
	}
	c.mu.Unlock()
	h.ik.unwraps.Add(1)
	key, err := h.unwrapKey(ctx, k, label, ik.WrapNonce, ik.Wrapped, ikAAD(label), "intermediate key")
	defer clear(key)
	if err != nil {
		return err
	}
	lk, err := h.lockKey(key)
	if err != nil {
		return err
	}
	h.installIK(&cp, k.scheme, lk)
	return nil
}

func isReady(e *ikEntry) bool {
	select {
	case <-e.ready:
		return true
	default:
		return false
	}
}

// checkWrapped checks the shape of a key wrapped in scheme.
func checkWrapped(sc KEKScheme, w WrappedKey) error {
	switch {
	case sc == KEKAESGCM && len(w.WrapNonce) != gcmNonceSize:
		return fmt.Errorf("%w: wrap nonce is %d bytes, want %d", ErrOpen, len(w.WrapNonce), gcmNonceSize)
	case sc == KEKRSAOAEP && len(w.WrapNonce) != 0:
		return fmt.Errorf("%w: an %s wrapped key has no wrap nonce", ErrOpen, sc)
	case len(w.Wrapped) != wrappedLen(sc):
		return fmt.Errorf("%w: wrapped key is %d bytes, want %d", ErrOpen, len(w.Wrapped), wrappedLen(sc))
	}
	return nil
}

// ikWrappedLen is the size of a DEK wrapped under an IK (AES-256-GCM).
const ikWrappedLen = dekSize + gcmTagSize

// wrapUnderIK wraps dek with AES-256-GCM under ik, binding aad.
func wrapUnderIK(ik, dek, aad []byte) (nonce, wrapped []byte, err error) {
	g, err := newGCM(ik)
	if err != nil {
		return nil, nil, err
	}
	nonce = make([]byte, gcmNonceSize)
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, fmt.Errorf("read random: %w", err)
	}
	return nonce, g.Seal(nil, nonce, dek, aad), nil
}

// unwrapUnderIK opens a DEK wrapped under ik; a failure is ErrOpen.
func unwrapUnderIK(ik, nonce, wrapped, aad []byte) ([]byte, error) {
	g, err := newGCM(ik)
	if err != nil {
		return nil, err
	}
	dek, err := g.Open(nil, nonce, wrapped, aad)
	if err != nil {
		return nil, fmt.Errorf("%w: unwrap DEK with its intermediate key: %v", ErrOpen, err)
	}
	if len(dek) != dekSize {
		clear(dek)
		return nil, fmt.Errorf("%w: unwrapped DEK has the wrong length", ErrOpen)
	}
	return dek, nil
}
