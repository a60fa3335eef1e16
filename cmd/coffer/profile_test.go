package main

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestConfigPath(t *testing.T) {
	tests := []struct{ xdg, home, want, wantErr string }{
		{xdg: "/x", home: "/h", want: "/x/coffer/config.toml"},
		{xdg: "", home: "/h", want: "/h/.config/coffer/config.toml"},
		{xdg: "rel", home: "/h", want: "/h/.config/coffer/config.toml"},
		{xdg: "", home: "", wantErr: "cannot find the config file: neither $XDG_CONFIG_HOME nor $HOME is set"},
	}
	for _, tt := range tests {
		t.Run(tt.xdg+"|"+tt.home, func(t *testing.T) {
			t.Setenv("XDG_CONFIG_HOME", tt.xdg)
			t.Setenv("HOME", tt.home)
			got, err := configPath()
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestConfigSaveLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "coffer", "config.toml")

	cfg, err := loadConfig(path)
	if err != nil || !reflect.DeepEqual(cfg, config{}) {
		t.Fatalf("missing file: got %+v, %v; want an empty config", cfg, err)
	}
	want := config{Current: "prod", Profiles: map[string]profile{
		"prod": {Socket: "/run/coffer/coffer.sock", TokenFile: "/home/u/prod.tok"},
		"dev":  {Socket: "/w/.coffer/coffer.sock"},
	}}
	if err := saveConfig(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := loadConfig(path)
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, %v; want %+v", got, err, want)
	}
	for p, mode := range map[string]os.FileMode{path: 0o600, filepath.Dir(path): 0o700 | os.ModeDir} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode() != mode {
			t.Errorf("%s: mode %v, want %v", p, st.Mode(), mode)
		}
	}
	if entries, _ := os.ReadDir(filepath.Dir(path)); len(entries) != 1 {
		t.Errorf("config directory holds %d files, want only config.toml", len(entries))
	}

	// A looser existing file and directory are tightened on save.
	os.Chmod(path, 0o644)
	os.Chmod(filepath.Dir(path), 0o755)
	if err := saveConfig(path, want); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(path); st.Mode() != 0o600 {
		t.Errorf("after save: mode %v, want 0600", st.Mode())
	}
	if st, _ := os.Stat(filepath.Dir(path)); st.Mode() != 0o700|os.ModeDir {
		t.Errorf("after save: directory mode %v, want 0700", st.Mode())
	}
}

func TestLoadConfigRejects(t *testing.T) {
	tests := []struct{ name, text, wantErr string }{
		{"token in a profile", "[profiles.p]\nsocket = \"/s\"\ntoken = \"cfs_x\"\n", "unknown setting profiles.p.token (a profile has socket and token_file only)"},
		{"unknown top-level key", "currnet = \"p\"\n", "unknown setting currnet (a profile has socket and token_file only)"},
		{"not TOML", "[profiles\n", "toml: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			os.WriteFile(path, []byte(tt.text), 0o600)
			_, err := loadConfig(path)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Fatalf("err = %v, want one naming %s and containing %q", err, path, tt.wantErr)
			}
			if strings.Contains(err.Error(), "cfs_x") {
				t.Fatalf("the error quotes the token: %v", err)
			}
		})
	}
}

func TestResolveConn(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	flagFile := write("flag.tok", "cfs_fromflagfile\n")
	envFile := write("env.tok", "  cfs_fromenvfile  \n")
	prodFile := write("prod.tok", "cfs_fromprod\n")
	devFile := write("dev.tok", "cfs_fromdev")
	emptyFile := write("empty.tok", "\n")
	spaceFile := write("space.tok", "cfs_a cfs_b")

	cfgPath := filepath.Join(dir, "coffer", "config.toml")
	if err := saveConfig(cfgPath, config{Current: "prod", Profiles: map[string]profile{
		"prod":    {Socket: "/prod.sock", TokenFile: prodFile},
		"dev":     {Socket: "/dev.sock", TokenFile: devFile},
		"notoken": {Socket: "/notoken.sock"},
		"gone":    {Socket: "/gone.sock", TokenFile: filepath.Join(dir, "missing.tok")},
	}}); err != nil {
		t.Fatal(err)
	}
	noCurrent := filepath.Join(dir, "nocurrent", "config.toml")
	if err := saveConfig(noCurrent, config{Profiles: map[string]profile{"dev": {Socket: "/dev.sock"}}}); err != nil {
		t.Fatal(err)
	}
	badCurrent := filepath.Join(dir, "badcurrent", "config.toml")
	if err := saveConfig(badCurrent, config{Current: "old"}); err != nil {
		t.Fatal(err)
	}
	broken := write("broken.toml", "[profiles\n")

	tests := []struct {
		name    string
		g       globals
		cfg     string
		want    conn
		wantErr string
		usage   bool
	}{
		{name: "current profile", cfg: cfgPath,
			want: conn{socket: "/prod.sock", token: "cfs_fromprod", profile: "prod"}},
		{name: "selected profile beats current", g: globals{profile: "dev"}, cfg: cfgPath,
			want: conn{socket: "/dev.sock", token: "cfs_fromdev", profile: "dev"}},
		{name: "socket flag or env beats profile", g: globals{socket: "/flag.sock", socketSet: true, profile: "dev"}, cfg: cfgPath,
			want: conn{socket: "/flag.sock", token: "cfs_fromdev", profile: "dev"}},
		{name: "explicit socket skips the current profile", g: globals{socket: "/other.sock", socketSet: true}, cfg: cfgPath,
			want: conn{socket: "/other.sock"}},
		{name: "token flag beats everything", g: globals{token: "cfs_fromflag", tokenEnv: "cfs_fromenv", tokenFileEnv: envFile, profile: "dev"}, cfg: cfgPath,
			want: conn{socket: "/dev.sock", token: "cfs_fromflag", profile: "dev"}},
		{name: "token-file flag beats env", g: globals{tokenFile: flagFile, tokenEnv: "cfs_fromenv"}, cfg: cfgPath,
			want: conn{socket: "/prod.sock", token: "cfs_fromflagfile", profile: "prod"}},
		{name: "token env beats token-file env", g: globals{tokenEnv: "cfs_fromenv", tokenFileEnv: envFile}, cfg: cfgPath,
			want: conn{socket: "/prod.sock", token: "cfs_fromenv", profile: "prod"}},
		{name: "token-file env beats profile", g: globals{tokenFileEnv: envFile, profile: "dev"}, cfg: cfgPath,
			want: conn{socket: "/dev.sock", token: "cfs_fromenvfile", profile: "dev"}},
		{name: "profile without a token", g: globals{profile: "notoken"}, cfg: cfgPath,
			want: conn{socket: "/notoken.sock", profile: "notoken"}},
		{name: "no current profile: defaults", cfg: noCurrent,
			want: conn{socket: defaultSocket}},
		{name: "no config file: defaults", cfg: filepath.Join(dir, "none", "config.toml"),
			want: conn{socket: defaultSocket}},
		{name: "no config path: defaults", cfg: "",
			want: conn{socket: defaultSocket}},
		{name: "all explicit: config not read", g: globals{socket: "/s", socketSet: true, token: "cfs_t"}, cfg: broken,
			want: conn{socket: "/s", token: "cfs_t"}},
		{name: "noToken ignores every token", g: globals{token: "cfs_t", tokenFile: flagFile, profile: "dev", noToken: true}, cfg: cfgPath,
			want: conn{socket: "/dev.sock", profile: "dev"}},

		{name: "token and token-file", g: globals{token: "cfs_t", tokenFile: flagFile}, cfg: cfgPath,
			wantErr: "--token and --token-file do not go together", usage: true},
		{name: "unknown selected profile", g: globals{profile: "nope"}, cfg: cfgPath,
			wantErr: `no profile "nope" in ` + cfgPath, usage: true},
		{name: "current profile gone", cfg: badCurrent,
			wantErr: `the current profile "old" in ` + badCurrent + ` does not exist: run 'coffer profile use NAME'`},
		{name: "broken config", cfg: broken, wantErr: "config " + broken + ": toml: "},
		{name: "profile token file missing", g: globals{profile: "gone"}, cfg: cfgPath,
			wantErr: "profile gone: token file " + filepath.Join(dir, "missing.tok") + " does not exist"},
		{name: "empty token file", g: globals{tokenFile: emptyFile}, cfg: cfgPath,
			wantErr: "token file " + emptyFile + " is empty", usage: true},
		{name: "two tokens in a file", g: globals{tokenFile: spaceFile}, cfg: cfgPath,
			wantErr: "token file " + spaceFile + " does not hold a token: it has spaces, control or non-ASCII characters", usage: true},
		{name: "token with a newline inside", g: globals{token: "cfs_a\r\nX-Evil: 1"}, cfg: cfgPath,
			wantErr: "--token does not hold a token: it has spaces, control or non-ASCII characters", usage: true},
		{name: "empty token env", g: globals{tokenEnv: " "}, cfg: cfgPath,
			wantErr: "$COFFER_TOKEN is empty", usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := resolveConn(tt.g, tt.cfg, strings.NewReader(""))
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				var ue *usageError
				if errors.As(err, &ue) != tt.usage {
					t.Fatalf("usage error = %v, want %v", !tt.usage, tt.usage)
				}
				if strings.Contains(err.Error(), "cfs_") {
					t.Fatalf("the error quotes a token: %v", err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestReadTokenFileStdin(t *testing.T) {
	got, err := readTokenFile("-", "token file", strings.NewReader("cfs_abc\n"))
	if err != nil || got != "cfs_abc" {
		t.Fatalf("got %q, %v", got, err)
	}
	_, err = readTokenFile("-", "token file", strings.NewReader(strings.Repeat("a", maxTokenRead+1)))
	if err == nil || err.Error() != "token file - is larger than 65536 bytes: it does not hold a token" {
		t.Fatalf("err = %v", err)
	}
}

func TestValidName(t *testing.T) {
	for s, want := range map[string]bool{
		"dev": true, "a": true, "prod-1.eu_west": true, "0": true,
		"": false, "Dev": false, "-a": false, "a-": false, ".a": false, "a b": false, "a/b": false,
		strings.Repeat("a", 64): true, strings.Repeat("a", 65): false,
	} {
		if got := validName(s); got != want {
			t.Errorf("validName(%q) = %v, want %v", s, got, want)
		}
	}
}
