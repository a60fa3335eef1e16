// Package hsm is coffer's only door to the PKCS#11 token: it holds the KEK
// that wraps per-secret DEKs (envelope sealing) and the EC P-256 key that
// signs access tokens. Key material never leaves the token; DEKs live in
// process memory only for the duration of one Seal or Unseal. On slow
// tokens a per-KEK-version intermediate key, unwrapped by the token once,
// stays in locked memory and wraps DEKs in software (intermediate.go).
package hsm

import (
	"context"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode"

	"github.com/eclipse-keypont/crypto11"
	"github.com/miekg/pkcs11"
)

// DefaultModulePath is the SoftHSM2 module shipped by Debian/Ubuntu.
const DefaultModulePath = "/usr/lib/softhsm/libsofthsm2.so"

// DefaultKEKLabel is the label (and CKA_ID) of the first key-encryption key.
const DefaultKEKLabel = "coffer-kek-1"

// DefaultSigningKeyLabel is the label (and CKA_ID) of the token signing key.
const DefaultSigningKeyLabel = "coffer-sig-1"

const (
	defaultMaxSessions = 8
	poolWaitTimeout    = 30 * time.Second
	gcmNonceSize       = 12
	gcmTagSize         = 16
	dekSize            = 32
	maxKeyLabelLen     = 64
	maxTokenLabelLen   = 32 // CK_TOKEN_INFO.label is 32 bytes
)

// Config selects the module, token and keys.
type Config struct {
	ModulePath      string // PKCS#11 module; default DefaultModulePath
	TokenLabel      string // the token's label; this or another token attribute is required
	PIN             string `json:"-"` // user PIN; never logged, put in errors or encoded
	KEKLabel        string // first KEK, created when the token has no version of it; default DefaultKEKLabel
	SigningKeyLabel string // first signing key, likewise; default DefaultSigningKeyLabel
	MaxSessions     int    // 0 = a sensible default (8)
	// NoCreate makes Open fail with ErrKeyMissing instead of creating a
	// missing KEK or signing key: set it when data made with the keys
	// already exists. (A missing import key is created anyway: nothing
	// stored depends on it.)
	NoCreate bool
	Logger   *slog.Logger // token loss and recovery; nil: slog.Default()
	// Intermediate says which KEK versions wrap DEKs through an
	// intermediate key unwrapped once (intermediate.go); "" is auto.
	Intermediate IntermediateMode

	// TokenSerial, TokenManufacturer, TokenModel and SlotID narrow the
	// choice of token (RFC 7512's serial, manufacturer, model and slot-id;
	// empty or nil: any). Open uses the one initialised token that has
	// every attribute given and refuses none or several; it then knows
	// the token by its label and serial.
	TokenSerial       string
	TokenManufacturer string
	TokenModel        string
	SlotID            *uint
	// AnyToken lets a Config with none of the attributes above select
	// the module's one initialised token, whatever it is (a pkcs11: URI
	// with an empty path); without it such a Config is an error.
	AnyToken bool

	pick int  // how the module finds the token Open selected (select.go)
	slot uint // its slot, for pickSlot
}

// Info describes the token in use, for status output.
type Info struct {
	Module     string    `json:"module"`
	TokenLabel string    `json:"token_label"`
	KeyLabels  []string  `json:"key_labels"` // current KEK label, current signing key label, import key label
	Token      TokenInfo `json:"token"`
	Schemes    Schemes   `json:"schemes"` // chosen for the token's mechanisms
}

// p11 is the part of *crypto11.Context this package uses.
type p11 interface {
	FindKeysWithAttributes(crypto11.AttributeSet) ([]*crypto11.SecretKey, error)
	GenerateSecretKeyWithAttributes(template crypto11.AttributeSet, bits int, cipher *crypto11.SymmetricCipher) (*crypto11.SecretKey, error)
	FindKeyPairsWithAttributes(crypto11.AttributeSet) ([]crypto11.Signer, error)
	GenerateECDSAKeyPairWithAttributes(public, private crypto11.AttributeSet, curve elliptic.Curve) (crypto11.Signer, error)
	GenerateRSAKeyPairWithAttributes(public, private crypto11.AttributeSet, bits int) (crypto11.SignerDecrypter, error)
	GetAttributes(key any, attributes []crypto11.AttributeType) (crypto11.AttributeSet, error)
	Close() error
}

// configure is the seam over crypto11.Configure.
var configure = func(c *crypto11.Config) (p11, error) {
	ctx, err := crypto11.Configure(c)
	if err != nil {
		return nil, err
	}
	return ctx, nil
}

// moduleMu serialises everything that loads or unloads a module (crypto11
// Configure/Close, the raw handle in PrepareDevToken): a C_Finalize from one
// would pull the library out from under the other.
var moduleMu sync.Mutex

// openTokens tracks tokens that have a live *HSM in this process. PKCS#11
// login state is per process and token, and crypto11 ignores
// CKR_USER_ALREADY_LOGGED_IN, so a second Open with a wrong PIN would
// otherwise succeed. Guarded by moduleMu.
var openTokens = map[tokenKey]*tokenRef{}

type tokenKey struct{ module, token, serial string }

type tokenRef struct {
	pinHash [32]byte
	refs    int
}

// HSM is an open, logged-in token with coffer's keys. Safe for concurrent use.
type HSM struct {
	cfg Config
	ctx p11

	imp       importKey      // the import key (importkey.go)
	importPub *rsa.PublicKey // set by Open, never changed

	// What the token said at Open, and the schemes chosen for it: the
	// schemes of keys provision creates. Immutable.
	token   TokenInfo
	schemes Schemes

	// mu is held shared by every operation and exclusively by Close, so
	// Close waits for in-flight calls and no call starts after it.
	mu     sync.RWMutex
	closed bool

	// keysMu guards the current keys (rotation replaces them) and the
	// KEK cache.
	keysMu   sync.Mutex
	kekLabel string              // the current KEK: new seals use it
	keks     map[string]*wrapKey // by CKA_ID; includes the current KEK
	sigLabel string              // the current signing key
	signer   crypto11.Signer
	pub      PublicKey

	// rotMu serialises key creation and destruction (rotate.go).
	rotMu sync.Mutex
	// rsaSwapped: the module took the swapped RSA public template last
	// (rsakeys.go).
	rsaSwapped atomic.Bool
	// k8s caches the Kubernetes service-account signing keys (k8skey.go).
	k8s k8sKeys
	// ik holds the unwrapped intermediate keys (intermediate.go).
	ik intermediates

	closeOnce sync.Once
	closeErr  error

	rc reconnector // token loss and recovery (reconnect.go)
}

// Open loads the module, logs in and finds (or on first start provisions)
// the KEK and the signing key.
func Open(ctx context.Context, cfg Config) (h *HSM, err error) {
	defer func() {
		if r := recover(); r != nil {
			h, err = nil, fmt.Errorf("open HSM token %s (module %s): %w: %v", cfg.TokenLabel, cfg.ModulePath, ErrUnavailable, panicError(r))
		}
	}()
	if cfg.ModulePath == "" {
		cfg.ModulePath = DefaultModulePath
	}
	if cfg.KEKLabel == "" {
		cfg.KEKLabel = DefaultKEKLabel
	}
	if cfg.SigningKeyLabel == "" {
		cfg.SigningKeyLabel = DefaultSigningKeyLabel
	}
	if cfg.MaxSessions == 0 {
		cfg.MaxSessions = defaultMaxSessions
	}
	if cfg.Intermediate, err = ParseIntermediateMode(string(cfg.Intermediate)); err != nil {
		return nil, err
	}
	if err := validateConfig(cfg); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := checkModuleFile(cfg.ModulePath); err != nil {
		return nil, err
	}

	moduleMu.Lock()
	defer moduleMu.Unlock()

	if cfg, err = selectToken(cfg); err != nil {
		return nil, err
	}
	key := tokenKey{cfg.ModulePath, cfg.TokenLabel, cfg.TokenSerial}
	pinHash := sha256.Sum256([]byte(cfg.PIN))
	if ref := openTokens[key]; ref != nil && subtle.ConstantTimeCompare(ref.pinHash[:], pinHash[:]) != 1 {
		return nil, fmt.Errorf("wrong HSM PIN for token %s (module %s): CKR_PIN_INCORRECT", cfg.TokenLabel, cfg.ModulePath)
	}

	c11, err := configure(crypto11Config(cfg))
	if err != nil {
		return nil, configureError(cfg, err)
	}
	tok, schemes, err := chooseFor(cfg)
	if err != nil {
		_ = c11.Close()
		return nil, err
	}

	h = &HSM{
		cfg:     cfg,
		ctx:     c11,
		token:   tok,
		schemes: schemes,
		keks:    map[string]*wrapKey{},
	}
	if err := h.provision(ctx); err != nil {
		_ = c11.Close()
		return nil, err
	}
	if ref := openTokens[key]; ref != nil {
		ref.refs++
	} else {
		openTokens[key] = &tokenRef{pinHash: pinHash, refs: 1}
	}
	h.log().Info("HSM token open", "token", cfg.TokenLabel, "manufacturer", tok.Manufacturer, "model", tok.Model,
		"kek_scheme", schemes.KEK, "kek_reason", schemes.KEKWhy, "signing_scheme", schemes.Signing, "signing_reason", schemes.SigningWhy)
	return h, nil
}

func validateConfig(cfg Config) error {
	switch {
	case cfg.selection() == "" && !cfg.AnyToken:
		return errors.New("HSM token label is required")
	case len(cfg.TokenLabel) > maxTokenLabelLen:
		return fmt.Errorf("HSM token label %q is longer than %d bytes", cfg.TokenLabel, maxTokenLabelLen)
	case cfg.PIN == "":
		return fmt.Errorf("HSM PIN for token %s is empty", cfg.selection())
	case cfg.MaxSessions < 2:
		return fmt.Errorf("HSM MaxSessions must be 0 (default) or at least 2, got %d", cfg.MaxSessions)
	case cfg.KEKLabel == cfg.SigningKeyLabel:
		return fmt.Errorf("HSM KEK and signing key labels must differ (both %q)", cfg.KEKLabel)
	case cfg.KEKLabel == ImportKeyLabel || cfg.SigningKeyLabel == ImportKeyLabel:
		return fmt.Errorf("HSM key label %s is reserved for the import key", ImportKeyLabel)
	case sameFamily(cfg.KEKLabel, cfg.SigningKeyLabel):
		// Both may be RSA key pairs: only the label tells them apart.
		return fmt.Errorf("HSM KEK and signing key labels %q and %q are versions of the same name", cfg.KEKLabel, cfg.SigningKeyLabel)
	}
	for _, l := range []string{cfg.KEKLabel, cfg.SigningKeyLabel} {
		if err := validateKeyLabel(l); err != nil {
			return err
		}
		if base, what := reservedBase(l); base != "" {
			return fmt.Errorf("HSM key label %s is reserved: %s and its versions name %s", l, base, what)
		}
	}
	return nil
}

// reservedBases are the label bases of coffer's Kubernetes keys, which
// the KEK and the signing key may not take, nor any version of: a KEK or
// signing key family that took them would make coffer's own JWT verifier
// and the cluster's service-account signer (or the webhooks' TLS key)
// share keys.
var reservedBases = []struct{ base, what string }{
	{K8sKeyBase, "the Kubernetes service-account signing keys"},
	{DefaultTLSKeyLabel, "the Kubernetes webhooks' TLS key"},
}

// reservedBase returns the reserved base that label is, or a version of
// (base-N), and what it names; "" when none.
func reservedBase(label string) (base, what string) {
	b, _, ok := ParseKeyLabel(label)
	for _, r := range reservedBases {
		if label == r.base || (ok && b == r.base) {
			return r.base, r.what
		}
	}
	return "", ""
}

// sameFamily reports whether two labels are versions of one base name.
func sameFamily(a, b string) bool {
	ab, _, okA := ParseKeyLabel(a)
	bb, _, okB := ParseKeyLabel(b)
	return okA && okB && ab == bb
}

// validateKeyLabel accepts 1..64 bytes of printable, non-space characters.
func validateKeyLabel(l string) error {
	if l == "" || len(l) > maxKeyLabelLen {
		return fmt.Errorf("HSM key label %q must be 1 to %d bytes", l, maxKeyLabelLen)
	}
	for _, r := range l {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return fmt.Errorf("HSM key label %q contains a space or control character", l)
		}
	}
	return nil
}

// checkModuleFile checks the module ourselves: crypto11 reports a failed
// dlopen only as "failed to open module", without the reason.
func checkModuleFile(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("cannot load PKCS#11 module %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("cannot load PKCS#11 module %s: not a regular file", path)
	}
	return nil
}

// configureError turns a crypto11.Configure failure into an operator message.
func configureError(cfg Config, err error) error {
	mod, tok := cfg.ModulePath, cfg.TokenLabel
	switch {
	case err.Error() == crypto11TokenNotFound:
		return fmt.Errorf("HSM token %s not found in module %s: CKR_TOKEN_NOT_PRESENT (no slot holds a token with that label)", tok, mod)
	case hasCKR(err, pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_INVALID, pkcs11.CKR_PIN_LEN_RANGE):
		return fmt.Errorf("wrong HSM PIN for token %s (module %s): %s", tok, mod, ckrName(err))
	case hasCKR(err, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_EXPIRED):
		return fmt.Errorf("HSM PIN for token %s (module %s) is locked or expired: %s", tok, mod, ckrName(err))
	case err.Error() == "failed to create module context: failed to open module":
		return fmt.Errorf("cannot load PKCS#11 module %s: not a loadable PKCS#11 library", mod)
	case strings.Contains(err.Error(), "failed to initialize module"):
		// For SoftHSM this usually means SOFTHSM2_CONF or its tokendir is wrong.
		return fmt.Errorf("cannot initialise PKCS#11 module %s: %s", mod, ckrName(err))
	default:
		return fmt.Errorf("cannot open HSM token %s (module %s): %s", tok, mod, ckrName(err))
	}
}

// provision finds the current KEK and signing key by CKA_ID, creating the
// configured ones if the token holds no version of them, and the import
// key (importkey.go). The current key
// is the highest version on the token (see rotate.go).
func (h *HSM) provision(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	kek, err := h.findCurrentKEK()
	if err != nil {
		return h.keyError("find KEK", h.cfg.KEKLabel, err)
	}
	if kek == nil && h.cfg.NoCreate {
		return h.missingKey("KEK", h.cfg.KEKLabel)
	}
	if kek == nil {
		if kek, err = h.generateKEK(h.cfg.KEKLabel); err != nil {
			return h.keyError("create KEK", h.cfg.KEKLabel, err)
		}
	}
	if err := h.checkKEK(kek); err != nil {
		return err
	}

	if err := ctx.Err(); err != nil {
		return err
	}
	sigLabel, signer, err := h.findCurrentSigner()
	if err != nil {
		return h.keyError("find signing key", h.cfg.SigningKeyLabel, err)
	}
	if signer == nil && h.cfg.NoCreate {
		return h.missingKey("signing key", h.cfg.SigningKeyLabel)
	}
	if signer == nil {
		sigLabel = h.cfg.SigningKeyLabel
		if signer, err = h.generateSigner(sigLabel); err != nil {
			return h.keyError("create signing key", sigLabel, err)
		}
	}
	pub, err := h.checkSigner(sigLabel, signer)
	if err != nil {
		return err
	}
	h.keysMu.Lock()
	h.kekLabel, h.keks[kek.label] = kek.label, kek
	h.sigLabel, h.signer, h.pub = sigLabel, signer, pub
	h.keysMu.Unlock()
	return h.provisionImportKey(ctx)
}

func (h *HSM) keyError(what, label string, err error) error {
	return fmt.Errorf("%w: %s %s on HSM token %s (module %s): %s", ErrUnavailable, what, label, h.cfg.TokenLabel, h.cfg.ModulePath, ckrName(err))
}

func keyAttrs(label string) crypto11.AttributeSet {
	a := crypto11.NewAttributeSet()
	_ = a.Set(crypto11.CkaId, []byte(label))
	return a
}

// bytesToUint decodes a CK_ULONG attribute (native byte order, little-endian
// on every platform we ship).
func bytesToUint(b []byte) uint {
	var n uint
	for i := len(b) - 1; i >= 0; i-- {
		n = n<<8 | uint(b[i])
	}
	return n
}

// Close logs out and unloads the module (when no other HSM uses it).
// Safe to call more than once; waits for in-flight operations.
func (h *HSM) Close() error {
	h.closeOnce.Do(func() {
		h.mu.Lock()
		h.closed = true
		h.mu.Unlock()
		// No operation runs any more: wipe the intermediate keys.
		h.ik.dropKEK("", true)
		h.stopReconnect()

		moduleMu.Lock()
		defer moduleMu.Unlock()
		defer func() {
			if r := recover(); r != nil {
				h.closeErr = fmt.Errorf("close HSM token %s: %v", h.cfg.TokenLabel, panicError(r))
			}
		}()
		key := tokenKey{h.cfg.ModulePath, h.cfg.TokenLabel, h.cfg.TokenSerial}
		if ref := openTokens[key]; ref != nil {
			if ref.refs--; ref.refs <= 0 {
				delete(openTokens, key)
			}
		}
		if err := h.ctx.Close(); err != nil {
			h.closeErr = fmt.Errorf("close HSM token %s: %s", h.cfg.TokenLabel, ckrName(err))
		}
	})
	return h.closeErr
}

// begin takes the shared lock for one operation; the caller must call
// h.mu.RUnlock when begin returns nil.
func (h *HSM) begin(ctx context.Context) error {
	if err := h.lostErr(); err != nil {
		return err // fail fast, without queueing behind a reconnect
	}
	h.mu.RLock()
	if h.closed {
		h.mu.RUnlock()
		return fmt.Errorf("%w: HSM token %s is closed", ErrUnavailable, h.cfg.TokenLabel)
	}
	if err := h.lostErr(); err != nil {
		h.mu.RUnlock()
		return err
	}
	if err := ctx.Err(); err != nil {
		h.mu.RUnlock()
		return err
	}
	return nil
}

// SigningPublicKey returns the public half of the current signing key:
// *ecdsa.PublicKey (ES256) or *rsa.PublicKey (PS256), see SigningSchemeOf.
func (h *HSM) SigningPublicKey() PublicKey {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	return h.pub
}

// Info describes the module, token and current keys.
func (h *HSM) Info() Info {
	h.keysMu.Lock()
	defer h.keysMu.Unlock()
	return Info{
		Module:     h.cfg.ModulePath,
		TokenLabel: h.cfg.TokenLabel,
		KeyLabels:  []string{h.kekLabel, h.sigLabel, ImportKeyLabel},
		Token:      h.token,
		Schemes:    h.schemes,
	}
}

// Check is a cheap health probe: it looks the current KEK up on the token
// again.
func (h *HSM) Check(ctx context.Context) (err error) {
	if err := h.begin(ctx); err != nil {
		return err
	}
	defer h.mu.RUnlock()
	defer h.observe(&err)
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: check HSM token %s: %v", ErrUnavailable, h.cfg.TokenLabel, panicError(r))
		}
	}()
	label := h.CurrentKEK()
	k, err := h.findKEK(label)
	if err != nil {
		return h.keyError("find KEK", label, err)
	}
	if k == nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, h.missingKey("KEK", label))
	}
	return nil
}
