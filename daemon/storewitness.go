package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"

	"github.com/coffer-hsm/coffer/kv"
)

// The store is opened with its witness (kv's witness.go): StateDir/
// store.witness, beside store.key and outside the store, records that the
// store exists and a lower bound of the commits it has made. A store that
// holds fewer, or whose files are damaged, is refused at start with one
// line naming the file; `coffer restore` is the way back (README, "When
// storage fails").

// auditReserve is the room kept free for the audit log (StateDir/audit,
// on the store's filesystem) on top of the store's own reserve: its next
// file's first lines and checkpoints while state changes are refused.
const auditReserve = 16 << 20

// storeOptions are the kv options of the store of stateDir. hadKey says
// that its store key existed before this start, so a store must be there.
func storeOptions(stateDir string, log *slog.Logger, key []byte, hadKey bool) kv.Options {
	return kv.Options{
		Dir:           filepath.Join(stateDir, storeDataName),
		Logger:        log,
		EncryptionKey: key,
		Witness:       filepath.Join(stateDir, storeWitnessName),
		MustExist:     hadKey,
		ExtraReserve:  auditReserve,
	}
}

// storeOpenError says what to do about a store that does not open.
func storeOpenError(err error) error {
	switch {
	case errors.Is(err, kv.ErrDamaged):
		return fmt.Errorf("%w; coffer will not serve it: restore the last backup with 'coffer restore --force FILE' (README, When storage fails)", err)
	case errors.Is(err, kv.ErrFull):
		return fmt.Errorf("%w; free some space on that filesystem and start coffer again", err)
	}
	return err
}
