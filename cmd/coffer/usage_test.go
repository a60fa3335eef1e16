package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestUsageErrors runs commands whose mistakes are caught before any
// request: each exits 2 with one line on stderr, and nothing on stdout.
func TestUsageErrors(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	for _, k := range []string{"COFFER_SOCKET", "COFFER_TOKEN", "COFFER_TOKEN_FILE", "COFFER_PROFILE"} {
		t.Setenv(k, "")
	}
	sock := filepath.Join(dir, "none.sock") // a request would exit 3, not 2
	badPolicy := filepath.Join(dir, "bad.yaml")
	for name, doc := range map[string]string{
		badPolicy: "rules:\n- effect: permit\n  condition: \"true\"\n",
	} {
		if err := os.WriteFile(name, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct{ args, want string }{
		{"user create", "'coffer user create' needs NAME"},
		{"user create a --kind robot", `--kind must be human or workload, not "robot"`},
		{"user create a --unix-uid -1", `--unix-uid takes a number from 0 to 4294967295, not "-1"`},
		{"user create a --vsock-cid 4294967296", `--vsock-cid takes a number from 0 to 4294967295, not "4294967296"`},
		{"user update a", "'coffer user update' needs something to change: --disable, --enable, --unix-uid, --clear-unix-uids, --vsock-cid, --clear-vsock-cids, --vm-name, --clear-vm-names, --access-token-ttl, --policy or --clear-policies"},
		{"user update a --disable --enable", "--disable and --enable do not go together"},
		{"user update a --policy x --clear-policies", "--policy and --clear-policies do not go together"},
		{"policy create a", "'coffer policy create' needs the policy document: --file PATH (- for standard input)"},
		{"policy create a --file " + badPolicy, badPolicy + `: rule 1: effect must be "allow" or "deny"`},
		{"cred create --type access-token --inline-policy " + badPolicy, badPolicy + `: rule 1: effect must be "allow" or "deny"`},
		{"project set-policies", "'coffer project set-policies' needs the PROJECT"},
		{"user update a --unix-uid 1 --clear-unix-uids", "--unix-uid and --clear-unix-uids do not go together"},
		{"role set default a", "'coffer role set' needs PROJECT USER ROLE, got 2 arguments"},
		{"role add default a owner", `unknown role "owner": use reader, member or admin`},
		{"cred create --type", "flag needs an argument: -type"},
		{"cred create a b", "'coffer cred create' takes at most one NAME, got 2 arguments"},
		{"cred create a --name b", `the name is given twice, "a" as the argument and "b" with --name: give it once`},
		{"cred create --rotate", "--rotate needs the credential to rotate, by ID or NAME: 'coffer cred create --rotate CRED'"},
		{"cred create --rotate a b", "--rotate takes one credential ID or NAME, got 2 arguments"},
		{"cred create --rotate a --type oauth2", "--rotate rotates an existing credential: --type does not apply (see 'coffer cred rotate --help')"},
		{"cred create --rotate a --max-authn 2", "--rotate rotates an existing credential: --max-authn does not apply (see 'coffer cred rotate --help')"},
		{"cred create --type token", `--type must be auth-token, oauth2 or access-token, not "token"`},
		{"cred create --type auth-token --access-rule coffer:/v1/status", `--access-rule "coffer:/v1/status": want SERVICE:METHOD:PATH, e.g. coffer:GET:/v1/status`},
		{"cred create --type auth-token --one-time --max-authn 3", "--one-time means --max-authn 1; it does not go with --max-authn 3"},
		{"cred create --type auth-token --max-authn -2", "--max-authn must be 0 (no limit) or more, not -2"},
		{"cred create --type access-token --one-time", "an access-token is its own session: --one-time and --max-authn do not apply"},
		{"cred create --type oauth2 --no-access --access-rule-id r", "--no-access does not go with --access-rule or --access-rule-id"},
		{"cred create --type oauth2 --session-type server", `--session-type must be client or clientless, not "server"`},
		{"cred create --type oauth2 --role owner", `unknown --role "owner": use reader, member or admin`},
		{"cred create --type oauth2 --expire-in 3years", `--expire-in "3years" is more than 2 years away`},
		{"cred rotate ID --grace soon", `--grace "soon" is not a valid duration: `},
		{"cred list --expiring-within -1d", `--expiring-within "-1d" `},
		{"cred get", "'coffer cred get' needs a credential ID or NAME"},
		{"cred revoke a b", "'coffer cred revoke' takes one a credential ID or NAME, got 2 arguments"},
		{"access-rule create --service s --method GET", "'coffer access-rule create' needs --service, --method and --path (--path is missing)"},
		{"access-rule create --service s --method TRACE --path /", `access rule: method "TRACE" is not one of GET, HEAD, POST, PUT, PATCH, DELETE`},
		{"login", "login needs an auth token: --token-file FILE or --token TOKEN"},
		{"login --token a --token-file f", "--token and --token-file do not go together"},
		{"token --client-id x", "'coffer token' needs --client-id ID and --client-secret-file FILE"},
		{"introspect", "'coffer introspect' needs TOKEN (or - for standard input)"},
		{"authorize --service s --method GET --path /", "'coffer authorize' needs the token to check: --token-file FILE or --token TOKEN"},
		{"authorize --token cft_x --service s --method GET --path x", `--path "x" must start with /`},
		{"--token cft_x --token-file f status", "--token and --token-file do not go together"},
		{"--profile nope status", `no profile "nope" in ` + filepath.Join(dir, "coffer", "config.toml")},
		{"profile add p", "'coffer profile add' needs --socket PATH"},
		{"profile add P --socket /s", `profile name "P": use lower-case letters, digits, '.', '_' and '-'`},
		{"profile use p", `no profile "p" in ` + filepath.Join(dir, "coffer", "config.toml")},
		{"secret import", "'coffer secret import' needs FILE (or - for standard input)"},
		{"secret import a b", "'coffer secret import' takes one FILE (or - for standard input), got 2 arguments"},
		{"hsm import-key x", "hsm import-key takes no arguments"},
		{"completion tcsh", `unknown shell "tcsh": use bash, zsh or fish`},
		{"hsm keys x", "hsm keys takes no arguments"},
		{"hsm rotate-kek now", "hsm rotate-kek takes no arguments"},
		{"hsm remove-kek", "'coffer hsm remove-kek' needs LABEL"},
		{"hsm rotate-signing-key x", "hsm rotate-signing-key takes no arguments"},
		{"hsm rotate", `unknown command "rotate" for 'coffer hsm'`},
		{"cred create --type oauth2 --bogus", "flag provided but not defined: -bogus"},
	}
	for _, tt := range tests {
		t.Run(tt.args, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			args := append([]string{"coffer", "--socket", sock}, strings.Fields(tt.args)...)
			code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d; stderr: %s", code, exitUsage, stderr.String())
			}
			want := "coffer: " + tt.want
			if got := stderr.String(); !strings.HasPrefix(got, want) || strings.Count(got, "\n") != 1 {
				t.Fatalf("stderr = %q, want one line starting with %q", got, want)
			}
			if stdout.Len() > 0 && !strings.Contains(tt.args, "--bogus") {
				t.Fatalf("stdout = %q, want nothing", stdout.String())
			}
		})
	}
	// The line points to the help of the command that was run.
	for args, help := range map[string]string{
		"cred create --type oauth2 --bogus": "coffer cred create",
		"cred get":                          "coffer cred get",
		"user create a --kind robot":        "coffer user create",
		"--profile nope status":             "coffer status",
		"--bogus status":                    "coffer",
	} {
		var stdout, stderr bytes.Buffer
		run(context.Background(), append([]string{"coffer", "--socket", sock}, strings.Fields(args)...), strings.NewReader(""), &stdout, &stderr)
		if want := "(see '" + help + " --help')\n"; !strings.HasSuffix(stderr.String(), want) {
			t.Errorf("coffer %s: stderr %q, want it to end %q", args, stderr.String(), want)
		}
	}
}

// TestTokenNotPrinted checks that a token given to the CLI does not show in
// its errors or its help.
func TestTokenNotPrinted(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	t.Setenv("COFFER_TOKEN", "cfs_SECRETFROMENV")
	t.Setenv("COFFER_PROFILE", "")
	t.Setenv("COFFER_TOKEN_FILE", "")
	sock := filepath.Join(dir, "none.sock")
	for _, args := range [][]string{
		{"coffer", "--socket", sock, "status"},
		{"coffer", "--socket", sock, "--token", "cfs_SECRET FLAG", "status"},
		{"coffer", "--socket", sock, "login", "--token", "cfa_SECRETLOGIN"},
		{"coffer", "--socket", sock, "authorize", "--token", "cft_SECRET\nX", "--service", "s", "--method", "GET", "--path", "/"},
		{"coffer", "--socket", sock, "introspect", "cft_SECRETARG"},
		{"coffer", "--help"},
		{"coffer", "--token", "cfs_SECRETHELP", "cred", "create", "--help"},
	} {
		var stdout, stderr bytes.Buffer
		run(context.Background(), args, strings.NewReader(""), &stdout, &stderr)
		if out := stdout.String() + stderr.String(); strings.Contains(out, "SECRET") {
			t.Errorf("%q printed a token:\n%s", args, out)
		}
	}
}

// TestCompletionAndMan checks the scripts and the man page. The scripts
// are run in their shells by completion_test.go.
func TestCompletionAndMan(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"coffer", "completion", "bash"}, "complete -o bashdefault -o default -F _coffer_complete coffer\n"},
		{[]string{"coffer", "completion", "zsh"}, "compdef _coffer coffer\n"},
		{[]string{"coffer", "completion", "fish"}, "complete -c coffer -f -a '(__coffer_complete)'\n"},
		{[]string{"coffer", "man"}, ".SH NAME\ncoffer \\- a local credential daemon"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args[1:], " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			if code := run(context.Background(), tt.args, strings.NewReader(""), &stdout, &stderr); code != exitOK {
				t.Fatalf("exit %d: %s", code, stderr.String())
			}
			if !strings.Contains(stdout.String(), tt.want) {
				t.Fatalf("stdout does not contain %q:\n%s", tt.want, stdout.String())
			}
		})
	}
}
