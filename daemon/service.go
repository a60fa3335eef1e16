// Package daemon is coffer's domain: projects, secrets, who may do what, and
// how secrets are sealed and kept. It talks to the HSM and the store through
// the small interfaces below and knows nothing of HTTP.
package daemon

import (
	"cmp"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/internal/atomicfile"
	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/policy"
)

// Keys seals and unseals with keys held in the HSM.
type Keys interface {
	Seal(ctx context.Context, plaintext, aad []byte) (*hsm.Sealed, error)
	Unseal(ctx context.Context, s *hsm.Sealed, aad []byte) ([]byte, error)
	Sign(ctx context.Context, digest []byte) ([]byte, error)
	SigningPublicKey() PublicKey
	// ImportPublicKey and UnwrapImport are the import key (sealed import,
	// import.go): RSA-OAEP SHA-256 unwrapping inside the HSM.
	ImportPublicKey() *rsa.PublicKey
	UnwrapImport(ctx context.Context, wrapped []byte) ([]byte, error)
	Check(ctx context.Context) error
	Info() hsm.Info
	Close() error

	// KEK rotation (kekrotation.go).
	CurrentKEK() string
	KEKs(ctx context.Context) ([]hsm.KeyVersion, error)
	RotateKEK(ctx context.Context) (string, error)
	Rewrap(ctx context.Context, s *hsm.Sealed, aad []byte) (*hsm.Sealed, error)
	DestroyKEK(ctx context.Context, label string) error

	// Signing key rotation (signingkeys.go).
	SigningKeys(ctx context.Context) ([]hsm.KeyVersion, error)
	RotateSigningKey(ctx context.Context) (hsm.KeyVersion, error)
	DestroySigningKey(ctx context.Context, label string) error
}

// Store keeps records in transactions.
type Store interface {
	Update(ctx context.Context, fn func(tx *kv.Txn) error) error
	View(ctx context.Context, fn func(tx *kv.Txn) error) error
	Check(ctx context.Context) error
	Backup(ctx context.Context, w io.Writer) error
	Close() error
	// OnCommit has fn told which tables each commit wrote, before the
	// commit's Updates return.
	OnCommit(fn func(kv.Commit))
}

// Config configures a Service.
type Config struct {
	// Dev runs on a self-contained state directory with its own SoftHSM
	// token, and treats the daemon's own uid as a system admin.
	Dev bool
	// StateDir holds the store (StateDir/data) and, in dev mode, the
	// SoftHSM token and PIN (StateDir/hsm).
	StateDir string
	// HSM selects the PKCS#11 module, token and keys. In dev mode only
	// ModulePath is used.
	HSM hsm.Config
	// PINFile is read for HSM.PIN when HSM.PIN is empty (not in dev mode).
	PINFile string
	// AdminGroup is a group name or numeric gid whose members are system
	// admins. Empty: only uid 0.
	AdminGroup string
	// MetricsGroup names a Unix group whose members may read the metrics
	// and the status counts (system admins always may); "" for none.
	MetricsGroup string
	// Observer, when set, is told of each HSM operation and store write
	// (the metrics registry).
	Observer Observer
	// AllowReservedCIDs lets users bind vsock CIDs 0-2 (hypervisor,
	// loopback, host); only for tests that use the loopback transport.
	AllowReservedCIDs bool
	// Issuer is the OAuth2 issuer (iss) of access tokens; default
	// "coffer" plus nothing else, which callers should override with the
	// URL services know the daemon by.
	Issuer string
	// ExpiryWarning is how far ahead RunMaintenance warns about expiring
	// credentials and secrets; 0 means DefaultExpiryWarning, negative off.
	ExpiryWarning time.Duration
	// AuthLimit limits failed authentications per caller (zero value: the
	// defaults).
	AuthLimit AuthLimit
	// BearerCacheSize bounds the tokens whose resolution is kept in
	// memory (about 400 bytes each); 0 means DefaultBearerCacheSize,
	// negative no cache (every request reads its token from the store).
	BearerCacheSize int
	// Version is reported by status.
	Version string
	Logger  *slog.Logger
}

// DevTokenLabel is the SoftHSM token label used in dev mode.
const DevTokenLabel = "coffer-dev"

// Service is the domain. Its methods are safe for concurrent use.
type Service struct {
	cfg      Config
	keys     Keys // rawKeys, timed for cfg.Observer
	rawKeys  Keys // as given: for the optional interfaces of *hsm.HSM
	store    Store
	log      *slog.Logger
	now      func() time.Time
	started  time.Time
	selfUID  uint32
	adminGID *uint32
	// metricsGID is the group that may read metrics and counts (nil: none).
	metricsGID *uint32
	counters   counters      // metrics.go
	expiring   expiringCache // metrics.go
	groups     *groupCache
	probe      probe
	idGen      atomic.Uint64
	bearers    bearerCache
	secGen     atomic.Uint64 // see caches.go
	secrets    secretCache
	ids        idRecords // shared records of bearer resolutions
	rules      ruleSets  // compiled rule sets and role lists, shared by bearer resolutions
	lastUse    lastUse   // credentials' last use as bearers, kept in memory (credusage.go)
	authGate   *authGate // nil: failed authentications are not limited

	// Background work (the KEK re-wrap) runs on bg and ends before Close
	// closes the store and the HSM.
	bg       context.Context
	bgCancel context.CancelFunc
	bgWG     sync.WaitGroup

	kek kekRotator     // kekrotation.go
	sig signingKeyRing // signingkeys.go
	kms kmsState       // kms.go
	k8s k8sSigner      // k8s_signer.go

	decoded deliveryRecords // recordcache.go

	audit auditTrail // audit.go

	policyCompiler *policy.Compiler // policy.go
	policies       compiledPolicies
	polGen         atomic.Uint64 // see caches.go

	webhooks k8sState // the Kubernetes webhooks, when served (k8s_review.go)

	units    unitActions // on-rotate actions on systemd units (unitaction.go)
	watchers watchers    // deliveries waiting for a new version (watch.go)
}

// Open opens the HSM and the store named by cfg and returns a ready
// Service. Errors say which part failed and why, in one line.
func Open(ctx context.Context, cfg Config) (*Service, error) {
	if cfg.StateDir == "" {
		return nil, errors.New("no state directory configured")
	}
	if err := atomicfile.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("create state directory: %w", err)
	}
	// A store that exists holds data sealed and signed with the token's
	// keys (and a store key sealed by its KEK): a new KEK could not open
	// it, so a missing key is an error then.
	dataDir := filepath.Join(cfg.StateDir, storeDataName)
	haveKey, _ := exists(filepath.Join(cfg.StateDir, storeKeyName))
	haveStore := storeExists(dataDir) || haveKey
	keys, err := openKeys(ctx, cfg, haveStore)
	if haveStore && errors.Is(err, hsm.ErrKeyMissing) {
		return nil, fmt.Errorf("%w; not creating a new one: the store in %s holds data made with it (restore the token, or start with an empty state directory)", err, dataDir)
	}
	if err != nil {
		return nil, err
	}
	store, err := openStore(ctx, cfg, keys)
	if err != nil {
		keys.Close()
		var locked *kv.LockedError
		if errors.As(err, &locked) {
			holder := "another coffer daemon"
			if locked.PID > 0 {
				holder = fmt.Sprintf("another coffer daemon (pid %d)", locked.PID)
			}
			return nil, fmt.Errorf("state directory %s is in use by %s; stop it first", cfg.StateDir, holder)
		}
		return nil, err
	}
	cleanStateDir(cfg.StateDir, cfg.Logger) // leftovers.go
	s, err := New(ctx, cfg, keys, store)
	if err != nil {
		store.Close()
		keys.Close()
		return nil, err
	}
	return s, nil
}

// storeExists reports whether dir holds a store: any entry at all, or a
// directory that cannot be read (to err on the side of not creating keys).
func storeExists(dir string) bool {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return err != nil || len(entries) > 0
}

// New returns a Service over the given keys and store, which it owns from
// then on, and makes sure the default project exists.
func New(ctx context.Context, cfg Config, keys Keys, store Store) (*Service, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Service{
		cfg:     cfg,
		keys:    observeKeys(keys, cfg.Observer),
		rawKeys: keys,
		store:   store,
		log:     cfg.Logger,
		now:     func() time.Time { return time.Now().UTC() },
		started: time.Now(),
		selfUID: uint32(os.Getuid()),
		groups:  newGroupCache(),
		bearers: bearerCache{max: cmp.Or(cfg.BearerCacheSize, DefaultBearerCacheSize)},
		secrets: secretCache{max: secretCacheSize},
		audit:   newAuditTrail(),
	}
	s.authGate = newAuthGate(cfg.AuthLimit, time.Now, s.log)
	pc, err := newPolicyCompiler()
	if err != nil {
		return nil, err
	}
	s.policyCompiler = pc
	s.bg, s.bgCancel = context.WithCancel(context.Background())
	// Every commit tells the caches what it wrote (caches.go), from the
	// first one on.
	store.OnCommit(s.committed)
	if cfg.AdminGroup != "" {
		gid, err := ResolveGroup(cfg.AdminGroup)
		if err != nil {
			return nil, err
		}
		s.adminGID = &gid
	}
	if cfg.MetricsGroup != "" {
		gid, err := ResolveGroup(cfg.MetricsGroup)
		if err != nil {
			return nil, fmt.Errorf("metrics group: %w", err)
		}
		s.metricsGID = &gid
	}
	if err := CheckSigner(ctx, keys); err != nil {
		return nil, err
	}
	if err := s.countOutbox(ctx); err != nil {
		return nil, fmt.Errorf("read the audit outbox: %w", err)
	}
	if err := s.migrate(ctx); err != nil {
		return nil, err
	}
	if err := s.ensureDefaultProject(ctx); err != nil {
		return nil, err
	}
	if err := s.loadSigningKeys(ctx); err != nil {
		return nil, err
	}
	// The intermediate key before anything seals: the rotation's
	// re-wrap below seals under it. It only saves token unwraps, so a
	// failure is logged, not fatal.
	if err := s.keepIntermediate(ctx); err != nil {
		s.log.Warn("intermediate key not kept; the next start makes another", "err", err)
	}
	if err := s.resumeKEKRotation(ctx); err != nil {
		s.stopBackground()
		return nil, err
	}
	if err := s.startFormMigration(ctx); err != nil {
		s.log.Warn("sealed records not moved to the intermediate key form; the next start tries again", "err", err)
	}
	return s, nil
}

// Close stops background work and releases the store and the HSM. Changes
// not yet in the audit log (see CloseAudit) wait in the store, among them
// the last uses of bearers not yet written (RunMaintenance writes them
// when it ends; this is for a Service run without it).
func (s *Service) Close() error {
	if s.audit.stop != nil {
		s.audit.stop()
		<-s.audit.stopped
	}
	s.stopBackground()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	s.logFlushLastUse(s.flushLastUse(ctx))
	cancel()
	return errors.Join(s.store.Close(), s.keys.Close())
}

// stopBackground cancels background work and waits for it to end.
func (s *Service) stopBackground() {
	s.bgCancel()
	s.bgWG.Wait()
}

// ResolveGroup turns a group name or numeric gid into a gid.
func ResolveGroup(g string) (uint32, error) {
	if n, err := strconv.ParseUint(g, 10, 32); err == nil {
		return uint32(n), nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("admin group %q: %w", g, err)
	}
	n, err := strconv.ParseUint(grp.Gid, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("admin group %q has gid %q: %w", g, grp.Gid, err)
	}
	return uint32(n), nil
}

// storeErr turns a store failure into an unavailable error; the cause goes
// to the log through the transport, never to the caller.
func storeErr(err error) error {
	if err == nil {
		return nil
	}
	var de *Error
	if errors.As(err, &de) {
		return err
	}
	return storeFault(err)
}

// hsmErr turns an HSM failure into a 503 hsm_unavailable.
func hsmErr(err error) error {
	return unavailable(CodeHSMUnavailable, "the HSM is unavailable", err)
}
