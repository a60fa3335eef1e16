package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
)

// config is $XDG_CONFIG_HOME/coffer/config.toml. A profile names a socket
// and a token FILE; a token itself is never stored here.
type config struct {
	Current  string             `toml:"current,omitempty" json:"current,omitempty"`
	Profiles map[string]profile `toml:"profiles,omitempty" json:"profiles,omitempty"`
}

type profile struct {
	Socket    string `toml:"socket" json:"socket"`
	TokenFile string `toml:"token_file,omitempty" json:"token_file,omitempty"`
}

// configPath is $XDG_CONFIG_HOME/coffer/config.toml, or
// ~/.config/coffer/config.toml when XDG_CONFIG_HOME is unset or relative
// (the XDG spec says to ignore a relative one).
func configPath() (string, error) {
	if dir := os.Getenv("XDG_CONFIG_HOME"); dir != "" && filepath.IsAbs(dir) {
		return filepath.Join(dir, "coffer", "config.toml"), nil
	}
	home := os.Getenv("HOME")
	if home == "" {
		return "", errors.New("cannot find the config file: neither $XDG_CONFIG_HOME nor $HOME is set")
	}
	return filepath.Join(home, ".config", "coffer", "config.toml"), nil
}

// loadConfig reads the config file; a missing file is an empty config.
// Unknown settings are an error, so that a `token = ...` line is not
// silently ignored.
func loadConfig(path string) (config, error) {
	if path == "" {
		return config{}, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return config{}, nil
	}
	if err != nil {
		return config{}, fmt.Errorf("config %s: %w", path, err)
	}
	return parseConfig(path, data)
}

// parseConfig parses the contents of the config file path.
func parseConfig(path string, data []byte) (config, error) {
	var cfg config
	md, err := toml.Decode(string(data), &cfg)
	if err != nil {
		return config{}, fmt.Errorf("config %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		keys := make([]string, 0, len(und))
		for _, k := range und {
			keys = append(keys, k.String())
		}
		return config{}, fmt.Errorf("config %s: unknown setting %s (a profile has socket and token_file only)", path, strings.Join(keys, ", "))
	}
	return cfg, nil
}

// saveConfig writes cfg atomically: file 0600 in a directory 0700, both
// fsynced with their directory.
func saveConfig(path string, cfg config) error {
	dir := filepath.Dir(path)
	if err := atomicfile.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create config directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("config directory: %w", err)
	}
	var buf bytes.Buffer
	if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	if err := atomicfile.Write(path, buf.Bytes(), 0o600); err != nil {
		return fmt.Errorf("write config: %w", err)
	}
	return nil
}

// editConfig loads the config, lets fn change it and saves it.
func editConfig(fn func(path string, cfg *config) error) error {
	path, err := configPath()
	if err != nil {
		return err
	}
	cfg, err := loadConfig(path)
	if err != nil {
		return err
	}
	if err := fn(path, &cfg); err != nil {
		return err
	}
	return saveConfig(path, cfg)
}

// profileEntry is one profile as list prints it.
type profileEntry struct {
	Name      string `json:"name"`
	Socket    string `json:"socket"`
	TokenFile string `json:"token_file,omitempty"`
	Current   bool   `json:"current"`
}

var profileCommand = group("profile", "save connection settings (socket, token file) under a name",
	&cli.Command{
		Name:      "add",
		Usage:     "add a profile, or replace the one of that name",
		ArgsUsage: "NAME",
		Description: `Saves a socket path and, optionally, the path of a file holding the bearer
token, in $XDG_CONFIG_HOME/coffer/config.toml (default
~/.config/coffer/config.toml, written 0600). The token itself is never
saved: only the path of its file. Select a profile with --profile NAME or
$COFFER_PROFILE, or make it the default with 'coffer profile use NAME'.
Explicit flags and environment variables win over a profile.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "socket", Usage: "the daemon's Unix socket `PATH`"},
			&cli.StringFlag{Name: "token-file", Usage: "`FILE` holding the bearer token (its path is saved, not the token)"},
		},
		Action: func(c *cli.Context) error {
			name, err := oneArg(c, "NAME")
			if err != nil {
				return err
			}
			if !validName(name) {
				return usagef("profile name %q: use lower-case letters, digits, '.', '_' and '-'", name)
			}
			if c.String("socket") == "" {
				return usagef("'%s' needs --socket PATH", c.Command.HelpName)
			}
			p := profile{}
			if p.Socket, err = filepath.Abs(c.String("socket")); err != nil {
				return err
			}
			if tf := c.String("token-file"); tf != "" {
				if tf == "-" {
					return usagef("--token-file of a profile must be a file, not standard input")
				}
				if p.TokenFile, err = filepath.Abs(tf); err != nil {
					return err
				}
			}
			return editConfig(func(_ string, cfg *config) error {
				if cfg.Profiles == nil {
					cfg.Profiles = map[string]profile{}
				}
				cfg.Profiles[name] = p
				return nil
			})
		},
	},
	&cli.Command{
		Name:  "list",
		Usage: "list profiles; * marks the current one",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("profile list takes no arguments")
			}
			path, err := configPath()
			if err != nil {
				return err
			}
			cfg, err := loadConfig(path)
			if err != nil {
				return err
			}
			entries := profileEntries(cfg)
			return render(c, entries, func(w io.Writer) {
				rows := make([][]string, 0, len(entries))
				for _, e := range entries {
					cur := ""
					if e.Current {
						cur = "*"
					}
					rows = append(rows, []string{cur, e.Name, e.Socket, e.TokenFile})
				}
				writeRows(w, []string{"CURRENT", "NAME", "SOCKET", "TOKEN FILE"}, rows)
			})
		},
	},
	&cli.Command{
		Name:      "use",
		Usage:     "make a profile the current one (used when no --profile is given)",
		ArgsUsage: "NAME",
		Action: func(c *cli.Context) error {
			name, err := oneArg(c, "NAME")
			if err != nil {
				return err
			}
			return editConfig(func(path string, cfg *config) error {
				if _, ok := cfg.Profiles[name]; !ok {
					return usagef("no profile %q in %s", name, path)
				}
				cfg.Current = name
				return nil
			})
		},
	},
	&cli.Command{
		Name:      "remove",
		Aliases:   []string{"rm"},
		Usage:     "remove a profile (the token file is left alone)",
		ArgsUsage: "NAME",
		Action: func(c *cli.Context) error {
			name, err := oneArg(c, "NAME")
			if err != nil {
				return err
			}
			err = editConfig(func(path string, cfg *config) error {
				if _, ok := cfg.Profiles[name]; !ok {
					return usagef("no profile %q in %s", name, path)
				}
				delete(cfg.Profiles, name)
				if cfg.Current == name {
					cfg.Current = ""
				}
				return nil
			})
			if err != nil {
				return err
			}
			return done(c, "profile", name, "removed")
		},
	},
)

func profileEntries(cfg config) []profileEntry {
	out := make([]profileEntry, 0, len(cfg.Profiles))
	for name, p := range cfg.Profiles {
		out = append(out, profileEntry{Name: name, Socket: p.Socket, TokenFile: p.TokenFile, Current: name == cfg.Current})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// validName is the API's name pattern, used for profile names too.
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= '0' && ch <= '9'
		inner := ch == '.' || ch == '_' || ch == '-'
		if !alnum && (!inner || i == 0 || i == len(s)-1) {
			return false
		}
	}
	return true
}
