package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// TestManPages: 'coffer man --dir' writes one page per command (and
// coffer(8)), each with its sections and every option of its command, and
// each renders without a warning (man --warnings, as lintian runs it; groff
// where man-db is missing; else only the structure is checked).
func TestManPages(t *testing.T) {
	dir := t.TempDir()
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"coffer", "man", "--dir", dir}, strings.NewReader(""), &stdout, &stderr); code != exitOK {
		t.Fatalf("coffer man --dir: exit %d: %s", code, stderr.String())
	}
	app := newApp(strings.NewReader(""), &stdout, &stderr)
	paths, cmds := manCommands(app)
	// A floor against a tree walk that stops early: about 80 commands,
	// fewer in coffer-client's build (the daemon's own are hidden there).
	if len(paths) < 70 {
		t.Fatalf("%d commands with a page, want every command (70 or more)", len(paths))
	}
	want := map[string]bool{filepath.Join(dir, "man8", "coffer.8"): true}
	type page struct {
		file, name, section string
		flags               []cli.Flag
	}
	pages := []page{{filepath.Join(dir, "man8", "coffer.8"), "coffer", "8", app.Flags}}
	for i, p := range paths {
		name, sec := "coffer-"+strings.Join(p, "-"), "1"
		if p[0] == "daemon" {
			sec = "8"
		}
		f := filepath.Join(dir, "man"+sec, name+"."+sec)
		want[f] = true
		pages = append(pages, page{f, name, sec, cmds[i].Flags})
	}
	got, _ := filepath.Glob(filepath.Join(dir, "*", "*"))
	for _, f := range got {
		if !want[f] {
			t.Errorf("unexpected page %s", f)
		}
	}
	if len(got) != len(want) {
		t.Errorf("%d pages written, want %d", len(got), len(want))
	}

	files := make([]string, 0, len(pages))
	for _, p := range pages {
		files = append(files, p.file)
		t.Run(p.name, func(t *testing.T) {
			b, err := os.ReadFile(p.file)
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			head := ".TH " + strings.ToUpper(p.name) + " " + p.section + " "
			if !strings.HasPrefix(text, head) {
				t.Errorf("does not start with %q: %.60q", head, text)
			}
			for _, s := range []string{
				".SH NAME\n" + p.name + ` \- `,
				".SH SYNOPSIS\n", ".SH DESCRIPTION\n", ".SH \"EXIT STATUS\"\n", ".SH ENVIRONMENT\n",
			} {
				if !strings.Contains(text, s) {
					t.Errorf("no %q", s)
				}
			}
			for _, f := range p.flags {
				if vf, ok := f.(cli.VisibleFlag); ok && !vf.IsVisible() {
					continue
				}
				n := f.Names()[0]
				opt := `\fB\-\-` + roff(n) + `\fR`
				if len(n) == 1 {
					opt = `\fB\-` + n + `\fR`
				}
				if !strings.Contains(text, opt) {
					t.Errorf("option %s is not on the page", opt)
				}
			}
		})
	}
	renderPages(t, files)

	// Examples come from the descriptions' command lines.
	for name, ex := range map[string]string{
		"man1/coffer-completion.1":  `source <(coffer completion bash)`,
		"man1/coffer-secret-bind.1": `coffer secret bind ID \-\-unit nginx.service \-\-as tls\-key`,
	} {
		b, _ := os.ReadFile(filepath.Join(dir, name))
		_, after, ok := strings.Cut(string(b), ".SH EXAMPLES\n")
		if !ok || !strings.Contains(after, ex) {
			t.Errorf("%s: no EXAMPLES section with %q", name, ex)
		}
	}
	b, _ := os.ReadFile(filepath.Join(dir, "man1", "coffer-status.1"))
	if !strings.Contains(string(b), ".B 4\n") {
		t.Errorf("coffer-status(1) does not give exit status 4")
	}
}

// renderPages renders the pages with groff, all warnings on (-ww; -k
// for UTF-8 input), in one run: any warning fails. Without groff only the
// structure is checked (make package-test runs lintian, which renders every
// page with man --warnings).
func renderPages(t *testing.T, files []string) {
	if _, err := exec.LookPath("groff"); err != nil {
		t.Log("groff is not installed: the pages' structure is checked, not their rendering")
		return
	}
	cmd := exec.Command("groff", append([]string{"-k", "-man", "-ww", "-Tutf8", "-rLL=80n"}, files...)...)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Run(); err != nil {
		t.Fatalf("groff: %v: %s", err, errOut.String())
	}
	if errOut.Len() > 0 {
		t.Errorf("groff warns:\n%s", errOut.String())
	}
	// UTF-8 output may draw \- as U+2212 MINUS SIGN, - as U+2010 HYPHEN.
	text := strings.NewReplacer("\u2212", "-", "\u2010", "-").Replace(out.String())
	for _, f := range files {
		name := strings.TrimSuffix(filepath.Base(f), filepath.Ext(f))
		if !strings.Contains(text, "\n       "+name+" - ") {
			t.Errorf("groff: %s renders without its NAME line", name)
		}
	}
}
