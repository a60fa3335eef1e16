package hsm

// Losing the token while running, and getting it back.
//
// A token can go away under a running daemon: a USB HSM is pulled, a network
// HSM reboots, SoftHSM's token directory is moved. The module then answers
// with codes that say the session, the object handles or the token itself
// are gone, and retrying on the same crypto11 context never helps: its
// sessions, its login and every key object belong to the old module
// instance. So on such an error the HSM is marked lost; from then on every
// call fails at once with ErrUnavailable (no pool waits), and one background
// loop closes the context (finalising the module), then configures, logs in
// and finds the keys again, with jittered exponential backoff, until that
// works or Close is called. The loop never creates keys: a key that is not
// on the token after a reconnect keeps the HSM lost.

import (
	"context"
	"crypto/elliptic"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// Reconnect backoff: the first attempt after reconnectMinDelay, doubling up
// to reconnectMaxDelay, each wait jittered to [d/2, 3d/2).
const (
	reconnectMinDelay = 100 * time.Millisecond
	reconnectMaxDelay = 10 * time.Second
)

// ErrKeyMissing is returned (wrapped) when a key coffer needs is not on the
// token and may not be created: the store already holds data made with it
// (Config.NoCreate), or the token was lost and came back without it.
var ErrKeyMissing = errors.New("HSM key missing")

// keyMissingError names the missing key; it is ErrKeyMissing for errors.Is.
type keyMissingError struct{ msg string }

func (e *keyMissingError) Error() string        { return e.msg }
func (e *keyMissingError) Is(target error) bool { return target == ErrKeyMissing }

func (h *HSM) missingKey(kind, label string) error {
	return &keyMissingError{fmt.Sprintf("HSM %s %s is missing from token %s (module %s): C_FindObjects found no object with CKA_ID %q",
		kind, label, h.cfg.TokenLabel, h.cfg.ModulePath, label)}
}

// lostCodes are the PKCS#11 codes that mean the session, the login, the
// object handles or the token are gone: only a new module instance helps.
var lostCodes = []uint{
	pkcs11.CKR_SESSION_HANDLE_INVALID,
	pkcs11.CKR_SESSION_CLOSED,
	pkcs11.CKR_TOKEN_NOT_PRESENT,
	pkcs11.CKR_TOKEN_NOT_RECOGNIZED,
	pkcs11.CKR_DEVICE_REMOVED,
	pkcs11.CKR_DEVICE_ERROR,
	pkcs11.CKR_SLOT_ID_INVALID,
	pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED,
	pkcs11.CKR_OBJECT_HANDLE_INVALID,
	pkcs11.CKR_KEY_HANDLE_INVALID,
	pkcs11.CKR_USER_NOT_LOGGED_IN,
	// A session the module left in the middle of an operation (see
	// renewSessions) is of no use any more.
	pkcs11.CKR_OPERATION_ACTIVE,
}

// lost reports whether err means the token (or our hold on it) is gone.
func lost(err error) bool {
	return err != nil && (errors.Is(err, ErrKeyMissing) || hasCKR(err, lostCodes...))
}

// outage describes the current loss of the token; immutable once stored.
type outage struct {
	since    time.Time
	cause    string // what showed the loss: a CKR_ name or a missing key
	attempts int    // reconnect attempts so far
	last     string // why the last attempt failed; "" before the first
}

// reconnector is the HSM's loss and reconnect state. The zero value is
// ready: healthy, default backoff.
type reconnector struct {
	outage atomic.Pointer[outage] // nil while the token is usable
	back   atomic.Uint64          // times the token came back (Reconnects)

	minDelay, maxDelay time.Duration // 0: the defaults (tests shorten them)

	once sync.Once
	stop chan struct{} // closed by Close
	wg   sync.WaitGroup
}

// Reconnects is how many times the token came back after it was lost.
func (h *HSM) Reconnects() uint64 { return h.rc.back.Load() }

func (r *reconnector) stopCh() chan struct{} {
	r.once.Do(func() { r.stop = make(chan struct{}) })
	return r.stop
}

func (h *HSM) log() *slog.Logger {
	if h.cfg.Logger != nil {
		return h.cfg.Logger
	}
	return slog.Default()
}

// lostErr is the fail-fast error while the token is lost, nil otherwise.
func (h *HSM) lostErr() error {
	o := h.rc.outage.Load()
	if o == nil {
		return nil
	}
	last := ""
	if o.last != "" {
		last = "; last attempt: " + o.last
	}
	return fmt.Errorf("%w: HSM token %s (module %s) lost at %s (%s), reconnecting%s",
		ErrUnavailable, h.cfg.TokenLabel, h.cfg.ModulePath, o.since.UTC().Format(time.RFC3339), o.cause, last)
}

// observe marks the token lost when *errp says so. Operations defer it
// while holding h.mu shared, so an error from a context that a reconnect
// has since replaced can never mark the new one lost.
func (h *HSM) observe(errp *error) {
	if err := *errp; lost(err) {
		h.markLost(err)
	}
}

// markLost starts an outage and its reconnect loop, unless one is running.
// It does not block. Called with h.mu held shared, so Close cannot be
// between setting h.closed and waiting for the loop.
func (h *HSM) markLost(cause error) {
	why := ckrName(cause)
	if errors.Is(cause, ErrKeyMissing) {
		why = "a key is missing"
	}
	if !h.rc.outage.CompareAndSwap(nil, &outage{since: time.Now(), cause: why}) {
		return
	}
	h.log().Warn("HSM token lost: operations that need it fail with hsm_unavailable while coffer reconnects",
		"token", h.cfg.TokenLabel, "module", h.cfg.ModulePath, "err", cause)
	h.rc.wg.Go(h.reconnectLoop)
}

// renewSessions replaces the context and its sessions through the
// reconnect path, after a failure that the module leaves its session
// unusable by: tpm2-pkcs11 (1.9) keeps a C_Decrypt that failed active, so
// every later call on that session, which crypto11's pool hands to the
// next caller, answers CKR_OPERATION_ACTIVE (TokenInfo.failedDecryptSticks;
// on other modules CKR_OPERATION_ACTIVE is a lost code, which gets the
// same cure one failed call later). It does not block. Called with h.mu
// held shared.
func (h *HSM) renewSessions(why string) {
	if !h.rc.outage.CompareAndSwap(nil, &outage{since: time.Now(), cause: why}) {
		return
	}
	h.log().Warn("HSM sessions renewed: operations fail with hsm_unavailable until coffer has reconnected",
		"token", h.cfg.TokenLabel, "module", h.cfg.ModulePath, "why", why)
	h.rc.wg.Go(h.reconnectLoop)
}

// stopReconnect ends the reconnect loop, if any, and waits for it. Close
// calls it after setting h.closed.
func (h *HSM) stopReconnect() {
	close(h.rc.stopCh())
	h.rc.wg.Wait()
}

// reconnectLoop retries reconnect with backoff until it succeeds or the HSM
// is closed. There is at most one per HSM (markLost).
func (h *HSM) reconnectLoop() {
	stop := h.rc.stopCh()
	minD, maxD := h.rc.minDelay, h.rc.maxDelay
	if minD <= 0 {
		minD = reconnectMinDelay
	}
	if maxD < minD {
		maxD = max(reconnectMaxDelay, minD)
	}
	delay := minD
	t := time.NewTimer(jitter(delay))
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		done, err := h.reconnect()
		if done {
			return
		}
		delay = min(2*delay, maxD)
		attempts := 0
		if cur := h.rc.outage.Load(); cur != nil { // only reconnect clears it, and then done is true
			o := *cur
			o.attempts++
			o.last = err.Error()
			attempts = o.attempts
			h.rc.outage.Store(&o)
		}
		h.log().Debug("HSM reconnect failed", "token", h.cfg.TokenLabel, "attempt", attempts, "retry_in", delay.String(), "err", err)
		t.Reset(jitter(delay))
	}
}

// jitter spreads d over [d/2, 3d/2).
func jitter(d time.Duration) time.Duration {
	return d/2 + rand.N(d)
}

// reconnect makes one attempt with h.mu held exclusively: no operation runs
// meanwhile, and none starts with a half-replaced context. done is true when
// the token is back or the HSM was closed.
func (h *HSM) reconnect() (done bool, err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return true, nil
	}
	moduleMu.Lock()
	defer moduleMu.Unlock()
	defer func() {
		if r := recover(); r != nil {
			done, err = false, fmt.Errorf("reconnect HSM token %s: %v", h.cfg.TokenLabel, panicError(r))
		}
	}()

	if old := h.ctx; old != (noContext{}) {
		// Closing the last context finalises the module, so the next
		// Configure starts a fresh module instance that sees the token
		// as it is now. Replaced first, so a Close that panics is not
		// retried.
		h.ctx = noContext{}
		h.keysMu.Lock()
		clear(h.keks)
		h.keysMu.Unlock()
		_ = old.Close()
	}

	c11, err := configure(crypto11Config(h.cfg))
	if err != nil {
		return false, configureError(h.cfg, err)
	}
	// Find the keys on a scratch HSM: provision sets fields that readers
	// such as SigningPublicKey use without the lock.
	// importPub set: the import key must be there, and be the same.
	n := &HSM{cfg: h.cfg, ctx: c11, token: h.token, schemes: h.schemes, sigLabel: h.sigLabel, keks: map[string]*wrapKey{}, importPub: h.importPub}
	n.cfg.NoCreate = true
	if err := n.provision(context.Background()); err != nil {
		_ = c11.Close()
		return false, err
	}
	if !n.pub.Equal(h.pub) {
		_ = c11.Close()
		return false, fmt.Errorf("HSM signing key %s on token %s (module %s) is not the key in use before the token was lost; not using it",
			h.sigLabel, h.cfg.TokenLabel, h.cfg.ModulePath)
	}
	h.adopt(n)

	if o := h.rc.outage.Swap(nil); o != nil {
		h.rc.back.Add(1)
		h.log().Info("HSM token is back", "token", h.cfg.TokenLabel, "module", h.cfg.ModulePath,
			"down_for", time.Since(o.since).Round(time.Millisecond).String(), "attempts", o.attempts+1)
	}
	return true, nil
}

// adopt takes the context and keys that n found. Called with h.mu held
// exclusively; every field provision sets, except the unchanged public key,
// must be copied here.
func (h *HSM) adopt(n *HSM) {
	h.ctx = n.ctx
	h.imp = n.imp
	h.keysMu.Lock()
	h.kekLabel, h.keks = n.kekLabel, n.keks
	h.sigLabel, h.signer = n.sigLabel, n.signer
	h.keysMu.Unlock()
}

// crypto11Config is how coffer configures crypto11, at Open and on every
// reconnect.
func crypto11Config(cfg Config) *crypto11.Config {
	c := &crypto11.Config{
		Path:            cfg.ModulePath,
		Pin:             cfg.PIN,
		MaxSessions:     cfg.MaxSessions,
		PoolWaitTimeout: poolWaitTimeout,
		GCMIVLength:     gcmNonceSize,
		UseGCMIVFromHSM: false,
	}
	switch cfg.pick { // exactly one of them (select.go)
	case pickSerial:
		c.TokenSerial = cfg.TokenSerial
	case pickSlot:
		n := int(cfg.slot)
		c.SlotNumber = &n
	default:
		c.TokenLabel = cfg.TokenLabel
	}
	return c
}

// errNoContext is what noContext answers.
var errNoContext = errors.New("not connected to the token")

// noContext stands in for the crypto11 context between closing the lost
// one and configuring a new one.
type noContext struct{}

func (noContext) FindKeysWithAttributes(crypto11.AttributeSet) ([]*crypto11.SecretKey, error) {
	return nil, errNoContext
}

func (noContext) GenerateSecretKeyWithAttributes(crypto11.AttributeSet, int, *crypto11.SymmetricCipher) (*crypto11.SecretKey, error) {
	return nil, errNoContext
}

func (noContext) FindKeyPairsWithAttributes(crypto11.AttributeSet) ([]crypto11.Signer, error) {
	return nil, errNoContext
}

func (noContext) GenerateECDSAKeyPairWithAttributes(crypto11.AttributeSet, crypto11.AttributeSet, elliptic.Curve) (crypto11.Signer, error) {
	return nil, errNoContext
}

func (noContext) GetAttributes(any, []crypto11.AttributeType) (crypto11.AttributeSet, error) {
	return nil, errNoContext
}

func (noContext) Close() error { return nil }
