//go:build !nodaemon

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/internal/atomicfile"
)

var backupCommand = &cli.Command{
	Name:      "backup",
	Usage:     "write a sealed backup of the daemon's whole store to FILE (system admins)",
	ArgsUsage: "FILE",
	Description: `Asks the running daemon for a consistent snapshot of its store, sealed
under a fresh key that the HSM KEK wraps: only an HSM holding that KEK can
restore it. FILE is written 0600 and appears only once the backup is
complete; an existing FILE is replaced.`,
	Action: runBackup,
}

var restoreCommand = &cli.Command{
	Name:      "restore",
	Usage:     "restore a backup FILE into a state directory (offline: stop the daemon first)",
	ArgsUsage: "FILE",
	Description: `Opens the HSM (the same --dev and --hsm-* settings as 'coffer daemon', and
its config file), unseals the backup's key, and loads the backup into a new
store with a fresh store key. The new store replaces the state directory's
only once all of the backup has read back intact; an existing store is
replaced only with --force. Refuses while a daemon has the store open.`,
	Flags: append(daemonFlags("dev", "config", "state-dir", "hsm", "hsm-module", "hsm-token", "hsm-pin-file"),
		&cli.BoolFlag{Name: "force", Usage: "replace the store the state directory holds"},
	),
	Action: runRestore,
}

// daemonFlags are the named flags of 'coffer daemon', for commands that
// open the same HSM and state directory.
func daemonFlags(names ...string) []cli.Flag {
	var out []cli.Flag
	for _, f := range daemonCommand.Flags {
		if slices.Contains(names, f.Names()[0]) {
			out = append(out, f)
		}
	}
	return out
}

// backupInfo is what backup and restore print.
type backupInfo struct {
	File       string    `json:"file"`
	StateDir   string    `json:"state_dir,omitempty"`
	Bytes      int64     `json:"bytes,omitempty"`
	CreatedAt  time.Time `json:"created_at"`
	TokenLabel string    `json:"token_label"`
	KEKLabel   string    `json:"kek_label"`
	Format     int       `json:"format"`
}

func runBackup(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("backup takes one argument: the FILE to write")
	}
	path := c.Args().First()
	if path == "-" || path == "" {
		return usagef("backup writes a file (atomically); give its path, not %q", path)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	// A closed terminal ends the backup like Ctrl-C does: with the
	// partial file removed (SIGINT and SIGTERM already cancel c.Context).
	ctx, stop := signal.NotifyContext(c.Context, syscall.SIGHUP)
	defer stop()
	sum, err := writeBackup(ctx, cl, path)
	if err != nil {
		return err
	}
	h := sum.Header
	info := backupInfo{File: path, Bytes: sum.Bytes, CreatedAt: h.CreatedAt, TokenLabel: h.TokenLabel, KEKLabel: h.KEKLabel, Format: h.Format}
	return render(c, info, func(w io.Writer) {
		writeFields(w, []field{
			{"backup", path},
			{"bytes", fmt.Sprint(sum.Bytes)},
			{"created", ts(h.CreatedAt)},
			{"sealed by", "KEK " + h.KEKLabel + " on HSM token " + h.TokenLabel},
		})
	})
}

// writeBackup streams the daemon's backup into a temporary file next to
// path, checks that it is complete, and renames it to path; on any
// failure (or Ctrl-C, or a closed terminal) the temporary file goes and
// path is untouched. The temporary file is locked while it is written,
// and the partial files of earlier backups to path that no process holds
// (a kill -9 or power loss leaves them) are removed first.
func writeBackup(ctx context.Context, cl *client.Client, path string) (sum daemon.BackupSummary, err error) {
	dir := filepath.Dir(path)
	removeStalePartials(path)
	f, err := os.CreateTemp(dir, partialPrefix(path)+"*")
	if err != nil {
		return sum, fmt.Errorf("create backup file: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return sum, fmt.Errorf("lock backup file: %w", err)
	}
	if err := f.Chmod(0o600); err != nil {
		return sum, fmt.Errorf("create backup file: %w", err)
	}
	if _, err := cl.Backup(ctx, f); err != nil {
		var apiErr *client.APIError
		var unreachable *client.UnreachableError
		if errors.As(err, &apiErr) || errors.As(err, &unreachable) || ctx.Err() != nil {
			return sum, err
		}
		return sum, fmt.Errorf("the backup was cut short (%w); nothing was written to %s", err, path)
	}
	if err := f.Sync(); err != nil {
		return sum, fmt.Errorf("write backup file: %w", err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return sum, fmt.Errorf("read back backup file: %w", err)
	}
	if sum, err = daemon.CheckBackupFile(f); err != nil {
		return sum, fmt.Errorf("the daemon's backup stream is incomplete (%w); nothing was written to %s", err, path)
	}
	if err := f.Close(); err != nil {
		return sum, fmt.Errorf("write backup file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return sum, fmt.Errorf("write backup file: %w", err)
	}
	if err := atomicfile.SyncDir(dir); err != nil {
		return sum, fmt.Errorf("backup written to %s, but %w", path, err)
	}
	return sum, nil
}

// partialPrefix starts the name of a partial backup file of path.
func partialPrefix(path string) string { return "." + filepath.Base(path) + ".partial-" }

// removeStalePartials removes the partial files of backups to path that
// no backup is writing (each holds a lock on its own). Failures are
// ignored: a stale file costs space, not correctness.
func removeStalePartials(path string) {
	dir, prefix := filepath.Dir(path), partialPrefix(path)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), prefix) || !e.Type().IsRegular() {
			continue
		}
		m := filepath.Join(dir, e.Name())
		f, err := os.Open(m)
		if err != nil {
			continue
		}
		if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) == nil {
			os.Remove(m) // unlocked: its backup is gone
		}
		f.Close()
	}
}

func runRestore(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("restore takes one argument: the backup FILE")
	}
	path := c.Args().First()
	if err := applyRestoreConfig(c); err != nil {
		return err
	}
	dev := c.Bool("dev")
	stateDir := c.String("state-dir")
	if dev && !c.IsSet("state-dir") {
		stateDir = devStateDir
	}
	stateDir, err := filepath.Abs(stateDir)
	if err != nil {
		return fmt.Errorf("state directory: %w", err)
	}
	hcfg, pinFile, err := hsmSettings(c)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("open backup: %w", err)
	}
	defer f.Close()
	cfg := daemon.Config{
		Dev:      dev,
		StateDir: stateDir,
		PINFile:  pinFile,
		Logger:   slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	cfg.HSM = hcfg
	h, err := daemon.Restore(c.Context, cfg, f, daemon.RestoreOptions{Source: path, Force: c.Bool("force")})
	if err != nil {
		return err
	}
	info := backupInfo{File: path, StateDir: stateDir, CreatedAt: h.CreatedAt, TokenLabel: h.TokenLabel, KEKLabel: h.KEKLabel, Format: h.Format}
	return render(c, info, func(w io.Writer) {
		writeFields(w, []field{
			{"restored", path},
			{"into", stateDir},
			{"backup created", ts(h.CreatedAt)},
			{"sealed by", "KEK " + h.KEKLabel + " on HSM token " + h.TokenLabel},
		})
	})
}

// applyRestoreConfig takes state_dir and the hsm_* settings from the
// daemon's config file (as 'coffer daemon' would), where the command line
// and environment left them unset. The daemon's other settings do not
// matter here.
func applyRestoreConfig(c *cli.Context) error {
	path, explicit := daemonConfigPath(c)
	if path == "" {
		return nil
	}
	file, err := loadDaemonFile(path, explicit)
	if err != nil {
		return err
	}
	for key, v := range file.values {
		name := strings.ReplaceAll(key, "_", "-")
		if name == "dev" || name == "config" || name == "force" || !slices.Contains(c.FlagNames(), name) || c.IsSet(name) {
			continue
		}
		if err := c.Set(name, v); err != nil {
			return fmt.Errorf("config %s: %s: %w", path, key, err)
		}
	}
	return nil
}
