package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/urfave/cli/v2"
)

// The man pages are written from the command tree: coffer(8), the
// overview, and one page per command, coffer-secret-create(1) for 'coffer
// secret create' (the daemon's is coffer-daemon(8)). 'coffer man' prints
// one; 'coffer man --dir DIR' writes them all (make package ships them).
// This small roff writer replaces urfave/cli's markdown and md2man, which
// the shipped binary leaves out (urfave_cli_no_docs).
var manCommand = &cli.Command{
	Name:      "man",
	Usage:     "print the man page of coffer or of a COMMAND (roff); e.g. coffer man secret create | man -l -",
	ArgsUsage: "[COMMAND...]",
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "dir", Usage: "write every page into `DIR`/man1 and DIR/man8 instead"},
	},
	Action: func(c *cli.Context) error {
		pages := manPages(c.App)
		if dir := c.String("dir"); dir != "" {
			if c.Args().Present() {
				return usagef("--dir writes every page: it takes no COMMAND")
			}
			return writeManPages(dir, pages)
		}
		name := strings.Join(append([]string{"coffer"}, c.Args().Slice()...), "-")
		for _, p := range pages {
			if p.name == name {
				_, err := c.App.Writer.Write([]byte(p.text))
				return err
			}
		}
		return usagef("no man page for %q: 'coffer --help' lists the commands", strings.Join(c.Args().Slice(), " "))
	},
}

// manPage is one rendered page.
type manPage struct {
	name    string // coffer-secret-create
	section string // 1 or 8
	path    []string
	cmd     *cli.Command // nil for coffer(8)
	text    string
}

func (p manPage) ref() string { return p.name + "(" + p.section + ")" }

// manCommands lists the commands that have a page, in tree order: every
// visible command but help.
func manCommands(app *cli.App) (paths [][]string, cmds []*cli.Command) {
	var walk func(parent []string, list []*cli.Command)
	walk = func(parent []string, list []*cli.Command) {
		for _, c := range list {
			if c.Hidden || c.Name == "help" {
				continue
			}
			p := append(append([]string{}, parent...), c.Name)
			paths, cmds = append(paths, p), append(cmds, c)
			walk(p, c.Subcommands)
		}
	}
	walk(nil, app.Commands)
	return paths, cmds
}

func manSection(path []string) string {
	if len(path) == 0 || path[0] == "daemon" {
		return "8" // the overview and the daemon: system administration
	}
	return "1"
}

func manName(path []string) string { return strings.Join(append([]string{"coffer"}, path...), "-") }

// manPages renders every page: coffer(8) first, then the commands.
func manPages(app *cli.App) []manPage {
	paths, cmds := manCommands(app)
	pages := []manPage{{name: "coffer", section: "8"}}
	for i, p := range paths {
		pages = append(pages, manPage{name: manName(p), section: manSection(p), path: p, cmd: cmds[i]})
	}
	refs := map[string]string{}
	for _, p := range pages {
		refs[p.name] = p.ref()
	}
	for i := range pages {
		pages[i].text = renderManPage(app, pages[i], refs)
	}
	return pages
}

func writeManPages(dir string, pages []manPage) error {
	for _, p := range pages {
		sub := filepath.Join(dir, "man"+p.section)
		if err := os.MkdirAll(sub, 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(sub, p.name+"."+p.section), []byte(p.text), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// roff escapes text for a roff line: backslashes, minus signs (so that
// options copy as ASCII '-'), and a leading control character.
func roff(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	s = strings.ReplaceAll(s, "-", `\-`)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	// A word too long for a line (a URI) may break after / ; ? & (\:, an
	// invisible break point); otherwise troff warns it can't break the line.
	words := strings.Split(s, " ")
	for i, w := range words {
		if len(w) > 40 {
			for _, sep := range []string{"/", ";", "?", "&"} {
				w = strings.ReplaceAll(w, sep, sep+`\:`)
			}
			words[i] = w
		}
	}
	return strings.Join(words, " ")
}

// placeholder splits a flag's usage into its `NAME` and the usage without
// the backquotes, as urfave/cli's help does.
func placeholder(usage string) (name, text string) {
	i := strings.IndexByte(usage, '`')
	if i < 0 {
		return "", usage
	}
	j := strings.IndexByte(usage[i+1:], '`')
	if j < 0 {
		return "", usage
	}
	name = usage[i+1 : i+1+j]
	return name, usage[:i] + name + usage[i+2+j:]
}

// flagEntry writes one option as a tagged paragraph.
func flagEntry(b *strings.Builder, f cli.Flag) {
	df, ok := f.(cli.DocGenerationFlag)
	if !ok {
		return
	}
	if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
		return
	}
	name, usage := placeholder(df.GetUsage())
	if name == "" && df.TakesValue() {
		name = "VALUE"
	}
	var names []string
	for _, n := range f.Names() {
		dash := "\\-\\-"
		if len(n) == 1 {
			dash = "\\-"
		}
		names = append(names, `\fB`+dash+roff(n)+`\fR`)
	}
	b.WriteString(".TP\n" + strings.Join(names, ", "))
	if df.TakesValue() {
		b.WriteString(` \fI` + roff(name) + `\fR`)
	}
	b.WriteString("\n" + roff(usage))
	if _, isBool := f.(*cli.BoolFlag); !isBool && df.TakesValue() {
		switch d := strings.Trim(df.GetDefaultText(), `"`); d {
		case "", "0", "0s", "[]", "false":
		default:
			b.WriteString(" (default: " + roff(d) + ")")
		}
	}
	if mv, ok := f.(cli.DocGenerationSliceFlag); ok && mv.IsSliceFlag() {
		b.WriteString("; may be given more than once")
	}
	for _, e := range df.GetEnvVars() {
		b.WriteString("; also \\fB$" + roff(e) + `\fR`)
	}
	b.WriteString("\n")
}

var exampleLine = regexp.MustCompile(`^(coffer |source <\(coffer )`)

// splitExamples takes the command lines out of a description (a line that
// starts with 'coffer ' or 'source <(coffer ', with the more deeply
// indented lines under it): they are the page's EXAMPLES.
func splitExamples(desc string) (rest string, examples [][]string) {
	lines := strings.Split(desc, "\n")
	var kept []string
	for i := 0; i < len(lines); i++ {
		trimmed := strings.TrimLeft(lines[i], " \t")
		if !exampleLine.MatchString(trimmed) {
			kept = append(kept, lines[i])
			continue
		}
		indent := len(lines[i]) - len(trimmed)
		ex := []string{strings.TrimSpace(trimmed)}
		for i+1 < len(lines) {
			next := lines[i+1]
			t := strings.TrimLeft(next, " \t")
			if t == "" || len(next)-len(t) <= indent {
				break
			}
			ex = append(ex, strings.TrimSpace(t))
			i++
		}
		examples = append(examples, ex)
	}
	rest = strings.Join(kept, "\n")
	rest = strings.TrimSuffix(strings.TrimSpace(rest), " For example:")
	return rest, examples
}

// paragraphs writes text, one .PP per blank-line-separated paragraph; a
// paragraph with indented lines keeps its layout.
func paragraphs(b *strings.Builder, text string) {
	for _, para := range strings.Split(strings.TrimSpace(text), "\n\n") {
		para = strings.Trim(para, "\n")
		if para == "" {
			continue
		}
		b.WriteString(".PP\n")
		lines := strings.Split(para, "\n")
		indented := false
		for _, l := range lines[1:] {
			if strings.HasPrefix(l, " ") {
				indented = true
			}
		}
		if indented {
			b.WriteString(".nf\n")
		}
		for _, l := range lines {
			if !indented {
				l = strings.TrimSpace(l)
			}
			b.WriteString(roff(l) + "\n")
		}
		if indented {
			b.WriteString(".fi\n")
		}
	}
}

func renderManPage(app *cli.App, p manPage, refs map[string]string) string {
	var b strings.Builder
	title := strings.ToUpper(p.name)
	fmt.Fprintf(&b, ".TH %s %s \"\" \"coffer %s\" \"coffer manual\"\n", title, p.section, roff(app.Version))
	b.WriteString(".nh\n.ad l\n")
	c := p.cmd
	usage, desc := app.Usage, ""
	var flags []cli.Flag
	var subs []*cli.Command
	if c == nil {
		flags, subs = app.Flags, app.Commands
	} else {
		usage, desc, flags, subs = c.Usage, c.Description, c.Flags, c.Subcommands
	}
	b.WriteString(".SH NAME\n" + p.name + ` \- ` + roff(usage) + "\n")

	// SYNOPSIS
	b.WriteString(".SH SYNOPSIS\n")
	var visibleSubs []*cli.Command
	for _, s := range subs {
		if !s.Hidden && s.Name != "help" {
			visibleSubs = append(visibleSubs, s)
		}
	}
	switch {
	case c == nil:
		b.WriteString(`\fBcoffer\fR [\fIGLOBAL OPTIONS\fR] \fICOMMAND\fR [\fIOPTIONS\fR] [\fIARGUMENTS\fR]` + "\n")
	case c.UsageText != "":
		b.WriteString(".nf\n" + roff(c.UsageText) + "\n.fi\n")
	default:
		line := `\fBcoffer\fR [\fIGLOBAL OPTIONS\fR] \fB` + roff(strings.Join(p.path, " ")) + `\fR`
		if len(visibleSubs) > 0 {
			line += ` \fICOMMAND\fR`
		}
		if len(flags) > 0 {
			line += ` [\fIOPTIONS\fR]`
		}
		if c.ArgsUsage != "" {
			line += ` \fI` + roff(c.ArgsUsage) + `\fR`
		}
		b.WriteString(line + "\n")
	}

	// DESCRIPTION
	rest, examples := splitExamples(desc)
	b.WriteString(".SH DESCRIPTION\n")
	if c == nil {
		paragraphs(&b, "coffer is a local credential daemon ('coffer daemon', see coffer-daemon(8)) and its command-line client, which talks to the daemon over its Unix socket or vsock.\n\n"+
			"Each command has its page: coffer-COMMAND(1), e.g. coffer-secret-create(1) for 'coffer secret create'. 'coffer COMMAND --help' prints the same options.")
	} else {
		first := strings.TrimSuffix(usage, ".") + "."
		paragraphs(&b, strings.ToUpper(first[:1])+first[1:])
		if rest != "" {
			paragraphs(&b, rest)
		}
	}

	// OPTIONS
	if len(flags) > 0 {
		if c == nil {
			b.WriteString(".SH \"GLOBAL OPTIONS\"\n")
		} else {
			b.WriteString(".SH OPTIONS\n")
		}
		for _, f := range flags {
			flagEntry(&b, f)
		}
	}
	if c != nil {
		b.WriteString(".PP\nThe global options, which go before the command, are in \\fBcoffer\\fR(8).\n")
	}

	// COMMANDS
	if len(visibleSubs) > 0 {
		b.WriteString(".SH COMMANDS\n")
		for _, s := range visibleSubs {
			names := append([]string{s.Name}, s.Aliases...)
			ref := refs[manName(append(append([]string{}, p.path...), s.Name))]
			name, sec, _ := strings.Cut(ref, "(")
			b.WriteString(".TP\n\\fB" + roff(strings.Join(names, ", ")) + "\\fR\n" + roff(s.Usage) + "; see \\fB" + roff(name) + "\\fR(" + sec + ".\n")
		}
	}

	// EXIT STATUS
	b.WriteString(".SH \"EXIT STATUS\"\n")
	status := []string{
		"0", "success",
		"1", "an error: the daemon refused or failed the request, or the command failed",
		"2", "a usage error: an unknown command or flag, a missing or bad argument",
		"3", "the daemon could not be reached (no socket, refused, timed out)",
	}
	if c == nil || (len(p.path) == 1 && p.path[0] == "status") {
		status = append(status, "4", "coffer status: the daemon answered, but a part of it (HSM, store) is unhealthy")
	}
	for i := 0; i < len(status); i += 2 {
		b.WriteString(".TP\n.B " + status[i] + "\n" + roff(status[i+1]) + "\n")
	}

	// ENVIRONMENT: the global variables, then this command's flags'.
	b.WriteString(".SH ENVIRONMENT\n")
	env := []string{
		"COFFER_SOCKET", "the daemon's Unix socket, as \\-\\-socket",
		"COFFER_VSOCK", "the daemon's vsock address, as \\-\\-vsock",
		"COFFER_TOKEN", "the bearer token, as \\-\\-token",
		"COFFER_TOKEN_FILE", "the file holding the bearer token, as \\-\\-token\\-file",
		"COFFER_PROFILE", "the saved settings to use, as \\-\\-profile",
		"XDG_CONFIG_HOME", "the profiles are in $XDG_CONFIG_HOME/coffer/config.toml (default ~/.config/coffer/config.toml)",
	}
	seen := map[string]bool{}
	for i := 0; i < len(env); i += 2 {
		seen[env[i]] = true
	}
	if c != nil {
		var own []string
		for _, f := range c.Flags {
			df, ok := f.(cli.DocGenerationFlag)
			if !ok {
				continue
			}
			for _, e := range df.GetEnvVars() {
				if !seen[e] {
					seen[e] = true
					own = append(own, e, "as \\-\\-"+roff(f.Names()[0]))
				}
			}
			switch f.Names()[0] {
			case "hsm-pin-file":
				if !seen["CREDENTIALS_DIRECTORY"] {
					seen["CREDENTIALS_DIRECTORY"] = true
					own = append(own, "CREDENTIALS_DIRECTORY", "set by systemd (LoadCredential=): the PIN is read from its hsm\\-pin unless \\-\\-hsm\\-pin\\-file says otherwise")
				}
			case "memory-limit": // the daemon's flag (memlimit.go, not in coffer-client)
				seen["GOMEMLIMIT"] = true
				own = append(own, "GOMEMLIMIT", "the Go runtime's memory limit, used when \\-\\-memory\\-limit is not set")
			}
		}
		env = append(env, own...)
	}
	for i := 0; i < len(env); i += 2 {
		b.WriteString(".TP\n.B " + env[i] + "\n" + env[i+1] + "\n")
	}

	// FILES (the overview)
	if c == nil {
		b.WriteString(".SH FILES\n")
		for _, f := range [][2]string{
			{defaultConfigFile, "the daemon's configuration (TOML)"},
			{defaultSocket, "the daemon's socket, where the client connects by default"},
			{"/var/lib/coffer", "the daemon's state: the store, sealed by the HSM"},
		} {
			b.WriteString(".TP\n.I " + roff(f[0]) + "\n" + roff(f[1]) + "\n")
		}
	}

	// EXAMPLES
	if len(examples) > 0 {
		b.WriteString(".SH EXAMPLES\n")
		for _, ex := range examples {
			b.WriteString(".PP\n.nf\n.RS 4\n" + roff(ex[0]) + "\n.RE\n.fi\n")
			if len(ex) > 1 {
				b.WriteString(roff(strings.Join(ex[1:], " ")) + "\n")
			}
		}
	}

	// SEE ALSO: the parent, the subcommands, the overview.
	var also []string
	if c != nil {
		if len(p.path) > 1 {
			also = append(also, refs[manName(p.path[:len(p.path)-1])])
		}
		also = append(also, "coffer(8)")
	}
	for _, s := range visibleSubs {
		also = append(also, refs[manName(append(append([]string{}, p.path...), s.Name))])
	}
	if len(also) > 0 {
		b.WriteString(".SH \"SEE ALSO\"\n")
		for i, a := range also {
			name, sec, _ := strings.Cut(a, "(")
			sep := ","
			if i == len(also)-1 {
				sep = ""
			}
			b.WriteString(".BR " + roff(name) + " (" + sec + sep + "\n")
		}
	}
	return b.String()
}
