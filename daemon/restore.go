package daemon

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/internal/atomicfile"
	"github.com/coffer-hsm/coffer/kv"
)

// RestoreOptions tunes Restore.
type RestoreOptions struct {
	// Source names the backup in messages (its file name).
	Source string
	// Force replaces a store that StateDir already holds.
	Force bool
}

// Restore loads a backup (as written by Backup) into cfg.StateDir, offline:
// no daemon may have the store open (Badger's directory lock tells). It
// opens the HSM that cfg names, unseals the backup key, loads the backup
// into a new store with a fresh store key in a temporary directory next to
// the store, and only when all of it read back intact puts it in place.
// A backup whose key this HSM cannot unseal, or that is changed or cut
// short, leaves StateDir as it was.
func Restore(ctx context.Context, cfg Config, r io.Reader, opts RestoreOptions) (BackupHeader, error) {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	src := opts.Source
	if src == "" {
		src = "(stream)"
	}
	br := bufio.NewReaderSize(r, 64<<10)
	h, digest, err := ReadBackupHeader(br)
	if err != nil {
		return h, fmt.Errorf("backup %s: %w", src, err)
	}
	if cfg.StateDir == "" {
		return h, errors.New("no state directory configured")
	}
	if err := atomicfile.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return h, fmt.Errorf("create state directory: %w", err)
	}
	release, err := claimStateDir(cfg.StateDir, opts.Force)
	if err != nil {
		return h, err
	}
	defer release()
	cleanStateDir(cfg.StateDir, log)

	keys, err := restoreKeys(ctx, cfg)
	if errors.Is(err, hsm.ErrKeyMissing) {
		return h, fmt.Errorf("backup %s was sealed by KEK %s on token %s; this HSM cannot unseal it: %w", src, h.KEKLabel, h.TokenLabel, err)
	}
	if err != nil {
		return h, err
	}
	defer keys.Close()
	backupKey, err := keys.Unseal(ctx, h.SealedKey, []byte(backupKeyAAD))
	if err != nil {
		clear(backupKey)
		if errors.Is(err, hsm.ErrOpen) {
			return h, fmt.Errorf("backup %s was sealed by KEK %s on token %s; this HSM (token %s) cannot unseal it", src, h.KEKLabel, h.TokenLabel, keys.Info().TokenLabel)
		}
		return h, fmt.Errorf("unseal the key of backup %s: %w", src, err)
	}
	chunks, err := newChunkReader(br, h, digest, backupKey)
	clear(backupKey)
	if err != nil {
		return h, err
	}
	defer chunks.Close()

	staged, err := os.MkdirTemp(cfg.StateDir, ".restore-")
	if err != nil {
		return h, fmt.Errorf("restore: %w", err)
	}
	keep := false
	defer func() {
		if !keep {
			os.RemoveAll(staged)
		}
	}()
	if err := loadStaged(ctx, staged, chunks, keys, log, func(store *kv.Store) error {
		if err := recordRestore(ctx, store, cfg.StateDir, src, h); err != nil {
			return err
		}
		// The token is not rolled back with the store: the Kubernetes
		// KMS's usage records may be older than its use of a KEK.
		n, err := markKMSRestored(ctx, store, keys, time.Now().UTC())
		if n > 0 {
			log.Info("restore: every retired KEK on the token is marked as possibly used by the Kubernetes KMS (remove-kek needs --force)", "keks", n)
		}
		return err
	}); err != nil {
		return h, fmt.Errorf("restore %s: %w; %s is unchanged", src, err, cfg.StateDir)
	}
	if err := matchOwner(cfg.StateDir, staged); err != nil {
		return h, fmt.Errorf("restore: %w", err)
	}
	keep = true
	if err := swapInStaged(cfg.StateDir, staged, log); err != nil {
		return h, err
	}
	log.Info("backup restored", "backup", src, "state_dir", cfg.StateDir, "created_at", h.CreatedAt.Format(time.RFC3339), "token", h.TokenLabel)
	return h, nil
}

// restoreKeys opens the HSM for Restore; unit tests put fake keys here.
// A restore never makes keys: the backup's KEK must be on the token.
var restoreKeys = func(ctx context.Context, cfg Config) (Keys, error) {
	return openKeys(ctx, cfg, true)
}

// claimStateDir refuses a state dir whose store is open, or that holds a
// store unless force (or an unfinished restore) allows replacing it, and
// holds the store's lock until release.
func claimStateDir(stateDir string, force bool) (release func(), err error) {
	dataDir := filepath.Join(stateDir, storeDataName)
	full, err := nonEmptyDir(dataDir)
	if err != nil {
		return nil, fmt.Errorf("check store %s: %w", dataDir, err)
	}
	if !full {
		return func() {}, nil
	}
	unlock, err := kv.LockDir(dataDir)
	var locked *kv.LockedError
	if errors.As(err, &locked) {
		holder := "a coffer daemon"
		if locked.PID > 0 {
			holder = fmt.Sprintf("a coffer daemon (pid %d)", locked.PID)
		}
		return nil, fmt.Errorf("the store in %s is in use by %s: stop it before restoring", stateDir, holder)
	}
	if err != nil {
		return nil, err
	}
	unfinished, err := exists(filepath.Join(stateDir, restoreMarkerName))
	if err != nil {
		unlock()
		return nil, err
	}
	if !force && !unfinished {
		unlock()
		return nil, fmt.Errorf("%s already holds a store: restore replaces it only with --force", stateDir)
	}
	return func() { unlock() }, nil
}

// loadStaged makes staged/store.key (a fresh store key sealed by keys) and
// loads the backup stream into the store staged/data, checking that the
// backup ended with its final chunk.
func loadStaged(ctx context.Context, staged string, chunks *chunkReader, keys Keys, log *slog.Logger, after func(*kv.Store) error) error {
	storeKey := make([]byte, storeKeySize)
	defer clear(storeKey)
	if _, err := rand.Read(storeKey); err != nil {
		return fmt.Errorf("make store key: %w", err)
	}
	if err := writeStoreKey(ctx, filepath.Join(staged, storeKeyName), storeKey, keys, true); err != nil {
		return err
	}
	opts := storeOptions(staged, log, storeKey, false)
	opts.GCInterval = -1
	store, err := kv.Open(ctx, opts) // its witness records the loaded store's commits at Close
	if err != nil {
		return err
	}
	err = store.Load(ctx, chunks)
	if err == nil && !chunks.complete() {
		err = badBackup("it ends before its last chunk")
	}
	if err == nil && after != nil {
		err = after(store)
	}
	if cerr := store.Close(); err == nil {
		err = cerr
	}
	if err != nil && chunks.err != nil && !errors.Is(chunks.err, io.EOF) {
		// The backup itself is at fault: say that, not how Badger
		// wrapped it.
		return chunks.err
	}
	return err
}

// swapInStaged puts staged/data, staged/store.key and staged/store.witness
// in place of stateDir's. A marker file keeps the daemon from starting on
// a half-swapped directory; a crash in between leaves the marker and both
// stores on disk.
func swapInStaged(stateDir, staged string, log *slog.Logger) error {
	marker := filepath.Join(stateDir, restoreMarkerName)
	note := fmt.Sprintf("coffer restore started %s; new store in %s\n", time.Now().UTC().Format(time.RFC3339), staged)
	if err := atomicfile.Write(marker, []byte(note), 0o600); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	old, err := os.MkdirTemp(stateDir, ".replaced-")
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	half := func(err error) error {
		return fmt.Errorf("restore into %s stopped half-way (%w): the previous store is in %s, the restored one in %s; the daemon will not start until a restore finishes", stateDir, err, old, staged)
	}
	for _, name := range []string{storeKeyName, storeWitnessName, storeDataName} {
		if err := os.Rename(filepath.Join(stateDir, name), filepath.Join(old, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return half(err)
		}
	}
	for _, name := range []string{storeDataName, storeWitnessName, storeKeyName} {
		if err := os.Rename(filepath.Join(staged, name), filepath.Join(stateDir, name)); err != nil {
			return half(err)
		}
	}
	if err := atomicfile.SyncDir(stateDir); err != nil {
		return half(err)
	}
	if err := os.Remove(marker); err != nil {
		return half(err)
	}
	if err := atomicfile.SyncDir(stateDir); err != nil {
		return err
	}
	for _, dir := range []string{old, staged} {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("restore: could not remove a leftover directory", "dir", dir, "err", err)
		}
	}
	return nil
}

// matchOwner gives the files under staged the owner of stateDir, when
// restore runs as root for a daemon that runs as its own user.
func matchOwner(stateDir, staged string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	fi, err := os.Stat(stateDir)
	if err != nil {
		return err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok || st.Uid == 0 {
		return nil
	}
	return filepath.WalkDir(staged, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, int(st.Uid), int(st.Gid))
	})
}
