//go:build !nodaemon

package main

import (
	"fmt"
	"io"
	"log/slog"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/daemon"
)

var storeCommand = &cli.Command{
	Name:  "store",
	Usage: "offline maintenance of a state directory's store",
	Subcommands: []*cli.Command{{
		Name:  "check",
		Usage: "verify a store offline: table checksums, indexes, sealed secrets (stop the daemon first)",
		Description: `Opens the HSM and the store as 'coffer daemon' does (the same --dev,
--state-dir, --hsm-* settings and config file), with every start-up check
(damaged or missing files, fewer commits than the store's witness
records), then verifies every table's checksums, every index entry and
unique claim against its record, and opens every secret's sealed version
with the HSM. Exits 0 when the store is whole, 1 with one line per problem
otherwise. 'coffer restore' is the way back from a damaged store.`,
		Flags:  daemonFlags("dev", "config", "state-dir", "hsm", "hsm-module", "hsm-token", "hsm-pin-file"),
		Action: runStoreCheck,
	}},
}

// storeCheckInfo is what store check prints.
type storeCheckInfo struct {
	StateDir string   `json:"state_dir"`
	Commits  uint64   `json:"commits"`
	Tables   int      `json:"tables"`
	Records  int      `json:"records"`
	Indexes  int      `json:"index_entries"`
	Uniques  int      `json:"unique_claims"`
	Secrets  int      `json:"secrets_opened"`
	Problems []string `json:"problems"`
	More     int      `json:"more_problems,omitempty"`
}

func runStoreCheck(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("store check takes no arguments")
	}
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
	cfg := daemon.Config{
		Dev:      dev,
		StateDir: stateDir,
		PINFile:  pinFile,
		Logger:   slog.New(slog.NewTextHandler(c.App.ErrWriter, &slog.HandlerOptions{Level: slog.LevelWarn})),
	}
	cfg.HSM = hcfg
	res, err := daemon.CheckStore(c.Context, cfg)
	if err != nil {
		return err
	}
	info := storeCheckInfo{StateDir: stateDir, Commits: res.Commits, Tables: res.Tables, Records: res.Records,
		Indexes: res.Indexes, Uniques: res.Uniques, Secrets: res.Secrets, Problems: res.Problems, More: res.More}
	if info.Problems == nil {
		info.Problems = []string{}
	}
	err = render(c, info, func(w io.Writer) {
		verdict := "whole"
		if n := len(res.Problems) + res.More; n > 0 {
			verdict = fmt.Sprintf("%d problems", n)
		}
		writeFields(w, []field{
			{"store", filepath.Join(stateDir, "data")},
			{"verdict", verdict},
			{"commits", fmt.Sprint(res.Commits)},
			{"tables", fmt.Sprint(res.Tables)},
			{"records", fmt.Sprint(res.Records)},
			{"index entries", fmt.Sprint(res.Indexes)},
			{"unique claims", fmt.Sprint(res.Uniques)},
			{"secrets opened", fmt.Sprint(res.Secrets)},
		})
		for _, p := range res.Problems {
			fmt.Fprintln(w, "problem: "+p)
		}
		if res.More > 0 {
			fmt.Fprintf(w, "and %d more problems\n", res.More)
		}
	})
	if err != nil {
		return err
	}
	if n := len(res.Problems) + res.More; n > 0 {
		return fmt.Errorf("store check: %d problems in %s", n, filepath.Join(stateDir, "data"))
	}
	return nil
}
