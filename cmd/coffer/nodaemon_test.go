package main

import (
	"bytes"
	"debug/elf"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/internal/buildtags"
)

// TestClientBuild: coffer-client (make client: tag nodaemon,
// CGO_ENABLED=0) is static, and its daemon commands say that they are not
// in it. What it links: client's TestNoDaemonDependencies.
func TestClientBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a binary")
	}
	tags := buildtags.Release + ",nodaemon"
	bin := filepath.Join(t.TempDir(), "coffer-client")
	build := exec.Command("go", "build", "-tags", tags, "-o", bin, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build -tags %s: %v\n%s", tags, err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("coffer-client is dynamically linked (it names an interpreter)")
		}
	}

	for _, args := range [][]string{{"daemon", "--dev"}, {"restore", "x"}, {"backup", "x"}, {"store", "check"}} {
		cmd := exec.Command(bin, args...)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		err := cmd.Run()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != exitUsage || !strings.Contains(stderr.String(), "not in this build") {
			t.Errorf("coffer-client %s: %v, %q; want exit %d, not in this build", strings.Join(args, " "), err, stderr.String(), exitUsage)
		}
	}
	// --help lists no daemon command.
	if out, err := exec.Command(bin, "--help").Output(); err != nil || strings.Contains(string(out), "run the coffer daemon") {
		t.Errorf("coffer-client --help: %v\n%s", err, out)
	}
}
