package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// readmeCommands returns the `coffer <group> ...` lines of the README's sh
// code blocks, continuation lines joined and comments cut.
func readmeCommands(t *testing.T, group string) [][]string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var out [][]string
	inSh := false
	var cur string
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case strings.HasPrefix(line, "```sh"):
			inSh = true
			continue
		case strings.HasPrefix(line, "```"):
			inSh = false
			continue
		case !inSh:
			continue
		}
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		line = strings.TrimSpace(line)
		if cont, ok := strings.CutSuffix(line, `\`); ok {
			cur += cont + " "
			continue
		}
		cur += line
		if strings.HasPrefix(cur, "coffer "+group+" ") {
			var args []string
			for _, f := range strings.Fields(cur) {
				args = append(args, strings.Trim(f, `'"`))
			}
			out = append(out, args)
		}
		cur = ""
	}
	return out
}

// TestReadmeCredExamples: every `coffer cred` example of the README is a
// command the CLI accepts (issue 14: the access-token example used
// --one-time, which access tokens refuse). Without a daemon each must get
// as far as trying to reach it (exit 3), never a usage error (exit 2).
func TestReadmeCredExamples(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	for _, k := range []string{"COFFER_SOCKET", "COFFER_TOKEN", "COFFER_TOKEN_FILE", "COFFER_PROFILE"} {
		t.Setenv(k, "")
	}
	sock := filepath.Join(t.TempDir(), "none.sock")
	cmds := readmeCommands(t, "cred")
	// The policy documents the examples name, in a directory of their own.
	t.Chdir(t.TempDir())
	for _, args := range cmds {
		for i, a := range args[:len(args)-1] {
			if a == "--inline-policy" {
				if err := os.WriteFile(args[i+1], []byte("rules:\n- effect: deny\n  condition: request.method == \"DELETE\"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if len(cmds) < 8 {
		t.Fatalf("found %d cred examples in the README, want the CLI by example's", len(cmds))
	}
	for _, args := range cmds {
		t.Run(strings.Join(args[1:], " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), append([]string{"coffer", "--socket", sock}, args[1:]...), strings.NewReader(""), &stdout, &stderr)
			if code != exitUnreachable {
				t.Fatalf("exit %d, want %d (the daemon is unreachable): %s", code, exitUnreachable, stderr.String())
			}
		})
	}
}

// TestReadmeContents: the README's table of contents lists every ## and
// ### heading outside code blocks, in order, with GitHub's anchors, so
// it stays true as sections come and go. On failure it prints the list
// to paste.
func TestReadmeContents(t *testing.T) {
	b, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	var want, got []string
	inCode, inContents := false, false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "```") {
			inCode = !inCode
			continue
		}
		switch {
		case inCode:
		case line == "## Contents":
			inContents = true
		case strings.HasPrefix(line, "## "), strings.HasPrefix(line, "### "):
			inContents = false
			level, title, _ := strings.Cut(line, " ")
			indent := strings.Repeat("  ", len(level)-2)
			want = append(want, indent+"- ["+title+"](#"+githubAnchor(title)+")")
		case inContents && strings.TrimSpace(line) != "":
			got = append(got, line)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("README's ## Contents is not its headings; it should read:\n\n%s", strings.Join(want, "\n"))
	}
}

// githubAnchor is the anchor GitHub gives a heading: lower case, spaces
// to hyphens, punctuation other than hyphens and underscores dropped.
func githubAnchor(title string) string {
	var sb strings.Builder
	for _, r := range strings.ToLower(title) {
		switch {
		case r == ' ':
			sb.WriteByte('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 127:
			sb.WriteRune(r)
		}
	}
	return sb.String()
}
