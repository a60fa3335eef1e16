package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestMain lets the test binary stand in for coffer in the shells the
// completion tests run (the scripts call 'coffer').
func TestMain(m *testing.M) {
	if os.Getenv("COFFER_TEST_AS_CLI") == "1" {
		os.Exit(run(context.Background(), append([]string{"coffer"}, os.Args[1:]...), os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// completionEnv returns the environment of a shell whose 'coffer' is this
// test binary, talking to a fake daemon that lists two secrets and two
// projects.
func completionEnv(t *testing.T) []string {
	t.Helper()
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	script := "#!/bin/sh\nCOFFER_TEST_AS_CLI=1 exec '" + self + "' \"$@\"\n"
	if err := os.WriteFile(filepath.Join(bin, "coffer"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "coffer.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		switch {
		case strings.Contains(r.URL.Path, "secrets"):
			_, _ = w.Write([]byte(`{"items":[{"id":"sec_alpha1"},{"id":"sec_beta2"}]}`))
		case strings.Contains(r.URL.Path, "projects"):
			_, _ = w.Write([]byte(`{"items":[{"id":"prj_1","name":"default"},{"id":"prj_2","name":"billing"}]}`))
		default:
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"error":"not_found","message":"not found"}`))
		}
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return append(os.Environ(),
		"PATH="+bin+":"+os.Getenv("PATH"),
		"COFFER_SOCKET="+sock,
		"COFFER_TOKEN=", "COFFER_TOKEN_FILE=", "COFFER_PROFILE=",
		"XDG_CONFIG_HOME="+dir,
	)
}

// completionCases: a command line being completed (the last word is the
// one under the cursor) and the candidates the shell must offer.
var completionCases = []struct {
	line string
	want []string
}{
	{"coffer se", []string{"seal", "secret", "session"}},                                        // a subcommand
	{"coffer secret list --pro", []string{"--project"}},                                         // a flag
	{"coffer secret bind x --on-rotate ", []string{"none", "reload", "restart", "try-restart"}}, // an enumerated flag's values
	{"coffer secret get ", []string{"sec_alpha1", "sec_beta2"}},                                 // IDs, from the daemon
	{"coffer secret list --project b", []string{"billing"}},                                     // names, from the daemon
	{"coffer completion ", []string{"bash", "fish", "zsh"}},                                     // an argument's values
}

func checkCandidates(t *testing.T, shell, line, out string, want []string) {
	t.Helper()
	got := strings.Fields(out)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("%s: %q completes to %q, want %q", shell, line, got, want)
	}
}

// TestCompletionBash sources 'coffer completion bash' in bash and runs its
// function on each line, as bash does on TAB: COMPREPLY holds the candidates.
func TestCompletionBash(t *testing.T) {
	bash := lookShell(t, "bash")
	env := completionEnv(t)
	for _, tc := range completionCases {
		script := `source <(coffer completion bash) || exit 1
read -ra COMP_WORDS <<<"$LINE"
[[ $LINE == *" " ]] && COMP_WORDS+=("")
COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
_coffer_complete
printf '%s\n' "${COMPREPLY[@]}"`
		cmd := exec.Command(bash, "--norc", "--noprofile", "-c", script)
		cmd.Env = append(env, "LINE="+tc.line)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("bash: %v: %s", err, out)
		}
		checkCandidates(t, "bash", tc.line, string(out), tc.want)
	}
}

// TestCompletionZsh sources 'coffer completion zsh' in zsh and runs _coffer
// with words and CURRENT set as the completion system sets them; compadd
// and compdef, builtins of the completion system's widgets, are stood in
// for (compadd prints what it is given).
func TestCompletionZsh(t *testing.T) {
	zsh := lookShell(t, "zsh")
	env := completionEnv(t)
	for _, tc := range completionCases {
		script := `compdef() { :; }
compadd() { [[ $1 == -a ]] && print -rl -- "${(@P)2}" || print -rl -- "$@"; }
_files() { :; }
source <(coffer completion zsh) || exit 1
words=(${=LINE})
[[ $LINE == *" " ]] && words+=("")
CURRENT=${#words}
_coffer`
		cmd := exec.Command(zsh, "-f", "-c", script)
		cmd.Env = append(env, "LINE="+tc.line)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("zsh: %v: %s", err, out)
		}
		// compadd gets every candidate; zsh filters them by the word typed.
		var got []string
		cur := tc.line[strings.LastIndex(tc.line, " ")+1:]
		for _, c := range strings.Fields(string(out)) {
			if strings.HasPrefix(c, cur) {
				got = append(got, c)
			}
		}
		checkCandidates(t, "zsh", tc.line, strings.Join(got, " "), tc.want)
	}
}

// TestCompletionFish loads 'coffer completion fish' in fish and asks fish
// itself for the candidates (complete -C), as on TAB.
func TestCompletionFish(t *testing.T) {
	fish := lookShell(t, "fish")
	env := completionEnv(t)
	for _, tc := range completionCases {
		cmd := exec.Command(fish, "--no-config", "-c", `coffer completion fish | source; and complete -C"$LINE"`)
		cmd.Env = append(env, "LINE="+tc.line)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("fish: %v: %s", err, out)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			if f, _, _ := strings.Cut(l, "\t"); f != "" {
				got = append(got, f)
			}
		}
		checkCandidates(t, "fish", tc.line, strings.Join(got, " "), tc.want)
	}
}

// lookShell finds a shell; without it the test skips, except in CI, where
// make test-deps installs bash, zsh and fish.
func lookShell(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s is not installed (make test-deps installs it)", name)
		}
		t.Skipf("%s is not installed (make test-deps installs it)", name)
	}
	return p
}
