package daemon

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/internal/atomicfile"
	"github.com/coffer-hsm/coffer/kv"
)

// The store is encrypted at rest (Badger's encryption) with a random
// 256-bit store key that exists on disk only sealed by the HSM KEK, in
// StateDir/store.key.
const (
	storeKeyName      = "store.key"
	storeWitnessName  = "store.witness" // kv's witness of the store (storewitness.go)
	storeDataName     = "data"
	storeKeySize      = 32
	storeKeyAAD       = "coffer/store-key/v1"
	storeKeyFormat    = 1
	restoreMarkerName = "restore.incomplete"
)

// storeKeyFile is the JSON in StateDir/store.key.
type storeKeyFile struct {
	Format int         `json:"format"`
	Token  string      `json:"token"` // label of the token that sealed it, for messages
	Sealed *hsm.Sealed `json:"sealed"`
}

// openStore opens StateDir/data with the store key: on first start it
// makes the key; later it unseals it (re-sealing it first when its KEK is
// not the current one). A store without its key, or a key this HSM
// cannot unseal, stops the start with one line saying so.
func openStore(ctx context.Context, cfg Config, keys Keys) (*kv.Store, error) {
	marker := filepath.Join(cfg.StateDir, restoreMarkerName)
	if ok, err := exists(marker); err != nil || ok {
		if err != nil {
			return nil, fmt.Errorf("check %s: %w", marker, err)
		}
		return nil, fmt.Errorf("a restore into %s did not finish (%s exists): run coffer restore again", cfg.StateDir, restoreMarkerName)
	}
	log := cfg.Logger
	if log == nil {
		log = slog.Default()
	}
	dataDir := filepath.Join(cfg.StateDir, storeDataName)
	// A store key made before this start means a store was made with it.
	hadKey, err := exists(filepath.Join(cfg.StateDir, storeKeyName))
	if err != nil {
		return nil, err
	}
	key, err := loadStoreKey(ctx, cfg.StateDir, keys, log)
	if err != nil {
		return nil, err
	}
	store, err := kv.Open(ctx, storeOptions(cfg.StateDir, log, key, hadKey))
	clear(key) // kv keeps its own copy for Badger, cleared on Close
	if errors.Is(err, kv.ErrKeyMismatch) {
		return nil, fmt.Errorf("store %s does not open with the key in %s: %w", dataDir, filepath.Join(cfg.StateDir, storeKeyName), kv.ErrKeyMismatch)
	}
	if err != nil {
		return nil, storeOpenError(err)
	}
	return store, nil
}

// loadStoreKey returns the store key of stateDir, making it when neither
// the key nor a store exists yet. The caller clears the key.
func loadStoreKey(ctx context.Context, stateDir string, keys Keys, log *slog.Logger) ([]byte, error) {
	path := filepath.Join(stateDir, storeKeyName)
	f, err := readStoreKeyFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		var key []byte
		key, err = firstStoreKey(ctx, stateDir, keys, log)
		if !errors.Is(err, fs.ErrExist) {
			return key, err
		}
		// Another process made the key first: use that one.
		f, err = readStoreKeyFile(path)
	}
	if err != nil {
		return nil, err
	}
	key, err := keys.Unseal(ctx, f.Sealed, []byte(storeKeyAAD))
	if err != nil {
		clear(key)
		if errors.Is(err, hsm.ErrOpen) {
			return nil, fmt.Errorf("store key %s was sealed by KEK %s on HSM token %s; this HSM (token %s) cannot unseal it", path, f.Sealed.KEK, f.Token, keys.Info().TokenLabel)
		}
		return nil, fmt.Errorf("unseal store key %s: %w", path, err)
	}
	if len(key) != storeKeySize {
		clear(key)
		return nil, fmt.Errorf("store key %s holds %d bytes, want %d", path, len(key), storeKeySize)
	}
	if err := resealStoreKey(ctx, path, f, key, keys, log); err != nil {
		clear(key)
		return nil, err
	}
	return key, nil
}

// firstStoreKey makes the store key of a state dir that has none: only
// when there is no store yet either. An error matching fs.ErrExist means
// another process wrote the key first.
func firstStoreKey(ctx context.Context, stateDir string, keys Keys, log *slog.Logger) ([]byte, error) {
	path := filepath.Join(stateDir, storeKeyName)
	dataDir := filepath.Join(stateDir, storeDataName)
	full, err := nonEmptyDir(dataDir)
	if err != nil {
		return nil, fmt.Errorf("check store %s: %w", dataDir, err)
	}
	if full {
		return nil, fmt.Errorf("store %s exists but its key %s does not: coffer stores are encrypted at rest and cannot be opened without their key (restore a backup with coffer restore, or move the directory away to start empty)", dataDir, path)
	}
	return newStoreKey(ctx, path, keys, log)
}

// newStoreKey makes a random store key and writes it sealed to path,
// which must not exist yet.
func newStoreKey(ctx context.Context, path string, keys Keys, log *slog.Logger) ([]byte, error) {
	key := make([]byte, storeKeySize)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("make store key: %w", err)
	}
	if err := writeStoreKey(ctx, path, key, keys, true); err != nil {
		clear(key)
		return nil, err
	}
	log.Info("made a new store key, sealed by the HSM", "path", path, "token", keys.Info().TokenLabel)
	return key, nil
}

// resealStoreKey seals key again under the HSM's current KEK and replaces
// path, when the KEK that sealed f is another one (after a KEK rotation).
func resealStoreKey(ctx context.Context, path string, f storeKeyFile, key []byte, keys Keys, log *slog.Logger) error {
	current := currentKEK(keys)
	if current == "" || f.Sealed.KEK == current {
		return nil
	}
	if err := writeStoreKey(ctx, path, key, keys, false); err != nil {
		return fmt.Errorf("re-seal store key under KEK %s: %w", current, err)
	}
	log.Info("re-sealed the store key under the current KEK", "path", path, "from_kek", f.Sealed.KEK, "to_kek", current)
	return nil
}

// writeStoreKey seals key with the HSM and writes it to path atomically
// (0600): replacing the file, or with create only when there is none yet
// (else an error matching fs.ErrExist).
func writeStoreKey(ctx context.Context, path string, key []byte, keys Keys, create bool) error {
	sealed, err := keys.Seal(ctx, key, []byte(storeKeyAAD))
	if err != nil {
		return fmt.Errorf("seal store key: %w", err)
	}
	b, err := json.Marshal(storeKeyFile{Format: storeKeyFormat, Token: keys.Info().TokenLabel, Sealed: sealed})
	if err != nil {
		return fmt.Errorf("encode store key: %w", err)
	}
	b = append(b, '\n')
	if create {
		return atomicfile.Create(path, b, 0o600)
	}
	return atomicfile.Write(path, b, 0o600)
}

// readStoreKeyFile reads and checks path; a missing file is fs.ErrNotExist.
func readStoreKeyFile(path string) (storeKeyFile, error) {
	var f storeKeyFile
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return f, err
	}
	if err != nil {
		return f, fmt.Errorf("read store key: %w", err)
	}
	if err := json.Unmarshal(b, &f); err != nil || f.Sealed == nil {
		return f, fmt.Errorf("store key %s is not a sealed coffer store key", path)
	}
	if f.Format != storeKeyFormat {
		return f, fmt.Errorf("store key %s has format %d; this coffer reads format %d", path, f.Format, storeKeyFormat)
	}
	return f, nil
}

// currentKEK is the label of the KEK that Seal uses now: the first of the
// HSM's key labels ("" when it does not say).
func currentKEK(keys Keys) string {
	if l := keys.Info().KeyLabels; len(l) > 0 {
		return l[0]
	}
	return ""
}
