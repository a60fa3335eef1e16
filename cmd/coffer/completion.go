package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
)

// The bash and zsh scripts ask coffer itself for the candidates: urfave/cli
// answers when the last argument is --generate-bash-completion.
const bashCompletion = `# bash completion for coffer; load with: source <(coffer completion bash)
_coffer_complete() {
  local cur words
  cur="${COMP_WORDS[COMP_CWORD]}"
  words=("${COMP_WORDS[@]:0:$COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    words+=("$cur")
  fi
  local opts
  opts=$("${words[@]}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${opts}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _coffer_complete coffer
`

const zshCompletion = `#compdef coffer
# zsh completion for coffer; load with: source <(coffer completion zsh)
# or save it as _coffer in a directory of your $fpath.
_coffer() {
  local -a opts
  local cur=${words[CURRENT]}
  local -a args=(${words[1,CURRENT-1]})
  if [[ "$cur" == -* ]]; then
    args+=("$cur")
  fi
  opts=("${(@f)$(${args[@]} --generate-bash-completion 2>/dev/null)}")
  if [[ -n "${opts[1]}" ]]; then
    compadd -a opts
  else
    _files
  fi
}
if [[ "${funcstack[1]}" == "_coffer" ]]; then
  _coffer "$@"
else
  compdef _coffer coffer
fi
`

// fish, like bash and zsh, asks coffer for the candidates; with none (an
// argument that is a file), it completes paths.
const fishCompletion = `# fish completion for coffer; load with: coffer completion fish | source
# or save it as ~/.config/fish/completions/coffer.fish.
function __coffer_complete
    set -l args (commandline -opc)
    set -l cur (commandline -ct)
    if string match -q -- '-*' $cur
        set -a args $cur
    end
    set -l out (command $args[1] $args[2..-1] --generate-bash-completion 2>/dev/null)
    if test (count $out) -gt 0
        printf '%s\n' $out
    else
        __fish_complete_path $cur
    end
end
complete -c coffer -f -a '(__coffer_complete)'
`

var completionCommand = &cli.Command{
	Name:      "completion",
	Usage:     "print a shell completion script: bash, zsh or fish",
	ArgsUsage: "bash|zsh|fish",
	Description: `Prints a completion script for the shell. It completes commands, flags,
the values of flags that take one of a few, and the IDs and names of
secrets, credentials, users, projects, policies, access rules, sessions and
profiles (asked of the daemon, as the command line's socket and token
allow). For example:
   source <(coffer completion bash)        # in ~/.bashrc
   source <(coffer completion zsh)         # in ~/.zshrc
   coffer completion fish > ~/.config/fish/completions/coffer.fish`,
	Action: func(c *cli.Context) error {
		shell, err := oneArg(c, "a shell: bash, zsh or fish")
		if err != nil {
			return err
		}
		w := c.App.Writer
		switch shell {
		case "bash":
			_, err = io.WriteString(w, bashCompletion)
		case "zsh":
			_, err = io.WriteString(w, zshCompletion)
		case "fish":
			_, err = io.WriteString(w, fishCompletion)
		default:
			return usagef("unknown shell %q: use bash, zsh or fish", shell)
		}
		return err
	},
}

// argsKey holds, in App.Metadata, the command line coffer was run with: a
// completion request needs the words as typed (run sets it).
const argsKey = "args"

// completionKinds: what the names and IDs of a command's arguments are,
// by the group the command is in (its ArgsUsage says ID, NAME or NAME|ID),
// and the list command that prints them.
var completionKinds = map[string]struct {
	list  []string
	field string // the JSON field printed: id or name
}{
	"project":     {[]string{"project", "list"}, "name"},
	"secret":      {[]string{"secret", "list"}, "id"},
	"user":        {[]string{"user", "list"}, "name"},
	"cred":        {[]string{"cred", "list"}, "id"},
	"access-rule": {[]string{"access-rule", "list"}, "id"},
	"policy":      {[]string{"policy", "list"}, "name"},
	"session":     {[]string{"session", "list"}, "id"},
	"profile":     {[]string{"profile", "list"}, "name"},
}

// kindOfPlaceholder: an argument or flag placeholder that names a kind
// whatever the command's group.
var kindOfPlaceholder = map[string]string{
	"PROJECT": "project", "USER": "user", "POLICY": "policy", "CRED": "cred",
}

var roleNames = []string{"reader", "member", "admin"}

// enumUsage matches a flag usage that is a list of its values: "table, json
// or yaml", "ACTION try-restart (default), restart, reload or none".
var enumUsage = regexp.MustCompile(`^(?:[A-Z]+ )?([a-z][a-z0-9-]*)(?: \([^)]*\))?((?:, [a-z][a-z0-9-]*(?: \([^)]*\))?)*) or ([a-z][a-z0-9-]*)(?: \([^)]*\))?$`)

var (
	enumWord      = regexp.MustCompile(`[a-z][a-z0-9-]*`)
	parenthetical = regexp.MustCompile(`\([^)]*\)`)
)

// installCompletion makes coffer complete, for the scripts above: command
// names, flags, the values of enumerated flags and the IDs and names of
// what a flag or argument refers to (asked of the daemon).
func installCompletion(app *cli.App) {
	app.BashComplete = func(c *cli.Context) { complete(c, nil, "") }
	var walk func(cmds []*cli.Command, group string)
	walk = func(cmds []*cli.Command, group string) {
		for _, cmd := range cmds {
			cmd := cmd
			if cmd.BashComplete == nil {
				cmd.BashComplete = func(c *cli.Context) { complete(c, cmd, group) }
			}
			walk(cmd.Subcommands, cmd.Name)
		}
	}
	walk(app.Commands, "")
}

// complete prints the candidates for the word being completed, given the
// words typed before --generate-bash-completion (the scripts add the word
// under the cursor only when it starts with -). cmd is nil for coffer
// itself; group is the name of cmd's parent.
func complete(c *cli.Context, cmd *cli.Command, group string) {
	args, _ := c.App.Metadata[argsKey].([]string)
	if len(args) > 0 && args[len(args)-1] == completionFlag {
		args = args[:len(args)-1]
	}
	own, subs, tail := c.App.Flags, c.App.Commands, []string(nil)
	if len(args) > 1 {
		tail = args[1:]
	}
	if cmd != nil {
		own, subs, tail = cmd.Flags, cmd.Subcommands, wordsAfter(c.App, args, cmd)
	}
	flags := append(append([]cli.Flag{}, own...), c.App.Flags...)
	if n := len(tail); n > 0 && strings.HasPrefix(tail[n-1], "-") {
		last := tail[n-1]
		// A flag that takes a value, typed whole: its values. Otherwise
		// the word is a flag being typed: the flags.
		if f := exactFlag(flags, last); f != nil && takesValue(flags, last) {
			printCandidates(c, flagValues(c, f))
			return
		}
		var names []string
		for _, f := range own {
			if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
				continue
			}
			for _, name := range f.Names() {
				opt := "--" + name
				if len(name) == 1 {
					opt = "-" + name
				}
				if strings.HasPrefix(opt, last) {
					names = append(names, opt)
				}
			}
		}
		printCandidates(c, names)
		return
	}
	// urfave/cli gives every command a help subcommand: not a group.
	var names []string
	for _, s := range subs {
		if !s.Hidden && s.Name != "help" {
			names = append(names, s.Name)
		}
	}
	if len(names) > 0 {
		printCandidates(c, names)
		return
	}
	// The position of the argument being completed.
	pos := 0
	for i := 0; i < len(tail); i++ {
		if isFlag(tail[i]) {
			if takesValue(flags, tail[i]) {
				i++
			}
			continue
		}
		pos++
	}
	printCandidates(c, argValues(c, cmd, group, pos))
}

// exactFlag is the flag arg names in full: --name for a long name, -n for
// a one-letter one (not --p, which is a long name being typed).
func exactFlag(flags []cli.Flag, arg string) cli.Flag {
	f := lookupFlag(flags, arg)
	name := strings.TrimLeft(arg, "-")
	if f == nil || strings.HasPrefix(arg, "--") != (len(name) > 1) {
		return nil
	}
	return f
}

// wordsAfter returns the words typed after cmd's name.
func wordsAfter(app *cli.App, args []string, cmd *cli.Command) []string {
	flags, cmds := app.Flags, app.Commands
	for i := 1; i < len(args); i++ {
		a := args[i]
		if isFlag(a) {
			if takesValue(flags, a) {
				i++
			}
			continue
		}
		next := findCommand(cmds, a)
		if next == nil {
			return nil
		}
		if next == cmd {
			return args[i+1:]
		}
		flags, cmds = append(append([]cli.Flag{}, next.Flags...), flags...), next.Subcommands
	}
	return nil
}

func printCandidates(c *cli.Context, values []string) {
	for _, v := range values {
		fmt.Fprintln(c.App.Writer, v)
	}
}

// flagValues: the values of an enumerated flag (from its usage), or the
// names of what its placeholder or name says it takes.
func flagValues(c *cli.Context, f cli.Flag) []string {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return nil
	}
	name, usage := placeholder(df.GetUsage())
	if i := strings.LastIndex(usage, ": "); i >= 0 {
		usage = usage[i+2:]
	}
	if m := enumUsage.FindStringSubmatch(usage); m != nil {
		values := []string{m[1]}
		values = append(values, enumWord.FindAllString(parenthetical.ReplaceAllString(m[2], ""), -1)...)
		return append(values, m[3])
	}
	if name == "ROLE" {
		return roleNames
	}
	kind := kindOfPlaceholder[name]
	switch n := f.Names()[0]; {
	case kind != "":
	case n == "access-rule-id":
		kind = "access-rule"
	default:
		kind = n // --project, --user, --policy
	}
	return listNames(c, kind)
}

// argValues: the candidates for argument pos of cmd, from its ArgsUsage
// ("ID", "PROJECT USER ROLE", "PROJECT [POLICY...]", "bash|zsh|fish").
func argValues(c *cli.Context, cmd *cli.Command, group string, pos int) []string {
	words := strings.Fields(cmd.ArgsUsage)
	if len(words) == 0 {
		return nil
	}
	if pos >= len(words) {
		if !strings.HasSuffix(words[len(words)-1], "...]") && !strings.HasSuffix(words[len(words)-1], "...") {
			return nil
		}
		pos = len(words) - 1
	}
	w := strings.Trim(words[pos], "[].")
	switch {
	case w == "ROLE":
		return roleNames
	case kindOfPlaceholder[w] != "":
		return listNames(c, kindOfPlaceholder[w])
	case strings.Contains(w, "|") && strings.ToLower(w) == w:
		return strings.Split(w, "|")
	case w == "ID" || w == "NAME" || w == "NAME|ID":
		if cmd.Name == "create" || cmd.Name == "add" {
			return nil // a new name
		}
		return listNames(c, group)
	}
	return nil
}

// listNames runs the kind's list command (-o json), with the global flags
// and --project of the command line, and returns the IDs or names it
// lists. Nothing when the daemon does not answer within two seconds.
func listNames(c *cli.Context, kind string) []string {
	k, ok := completionKinds[kind]
	if !ok {
		return nil
	}
	root := c.Lineage()[len(c.Lineage())-1]
	args := []string{"coffer"}
	for _, name := range []string{"socket", "vsock", "token", "token-file", "profile"} {
		if root.IsSet(name) {
			if name == "token-file" && root.String(name) == "-" {
				return nil // standard input is the terminal
			}
			args = append(args, "--"+name, root.String(name))
		}
	}
	args = append(append(args, "-o", "json"), k.list...)
	if p := c.String("project"); p != "" && kind != "project" && kind != "profile" && kind != "access-rule" && kind != "session" {
		args = append(args, "--project", p)
	}
	ctx, cancel := context.WithTimeout(c.Context, 2*time.Second)
	defer cancel()
	var out bytes.Buffer
	if run(ctx, args, strings.NewReader(""), &out, io.Discard) != exitOK {
		return nil
	}
	var doc any
	if json.Unmarshal(out.Bytes(), &doc) != nil {
		return nil
	}
	items, _ := doc.([]any)
	if m, ok := doc.(map[string]any); ok {
		items, _ = m["items"].([]any)
	}
	var names []string
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			if s, ok := m[k.field].(string); ok && s != "" {
				names = append(names, s)
			}
		}
	}
	return names
}
