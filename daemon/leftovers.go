package daemon

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
)

// Interrupted work leaves files in the state directory that nothing else
// removes: a restore stopped before its swap leaves its staged store
// (.restore-*), one stopped after the swap the whole previous store
// (.replaced-*), a crash mid-write an atomic file's temporary
// (.NAME.tmp-*), and a backup written into the state directory its
// partial file (.NAME.partial-*). removeLeftovers removes them at start,
// once the store is open (its lock keeps any other coffer out), logging
// each. While a restore is unfinished (its marker is there) it removes
// nothing: that restore's directories are the way forward or back, and
// the daemon does not start anyway.
func removeLeftovers(stateDir string, log *slog.Logger) error {
	unfinished, err := exists(filepath.Join(stateDir, restoreMarkerName))
	if err != nil || unfinished {
		return err
	}
	entries, err := os.ReadDir(stateDir)
	if err != nil {
		return fmt.Errorf("look for leftovers in %s: %w", stateDir, err)
	}
	var errs []error
	for _, e := range entries {
		what := leftover(e.Name(), e.IsDir())
		if what == "" {
			continue
		}
		path := filepath.Join(stateDir, e.Name())
		if err := os.RemoveAll(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove leftover %s: %w", path, err))
			continue
		}
		log.Info("removed a leftover of interrupted work", "path", path, "was", what)
	}
	return errors.Join(errs...)
}

// leftover says what the state directory entry name is a leftover of, or
// "" when it is not one.
func leftover(name string, dir bool) string {
	switch {
	case dir && strings.HasPrefix(name, ".restore-"):
		return "the staged store of a restore that did not finish"
	case dir && strings.HasPrefix(name, ".replaced-"):
		return "the store a finished restore replaced"
	case !dir && strings.HasPrefix(name, ".") && strings.Contains(name, ".tmp-"):
		return "the temporary file of an interrupted write"
	case !dir && strings.HasPrefix(name, ".") && strings.Contains(name, ".partial-"):
		return "the partial file of an interrupted backup"
	}
	return ""
}

// cleanStateDir is removeLeftovers for Open and Restore: a failure is
// logged, not fatal.
func cleanStateDir(stateDir string, log *slog.Logger) {
	if log == nil {
		log = slog.Default()
	}
	if err := removeLeftovers(stateDir, log); err != nil {
		log.Warn("could not remove leftovers of interrupted work", "err", err)
	}
}
