package client_test

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/internal/buildtags"
)

// TestNoDaemonDependencies holds what package client promises: it and
// package api build without cgo and link nothing of the daemon, its store
// or its HSM, so that any program can use them; and so does coffer-client
// (cmd/coffer with the tag nodaemon; cmd/coffer's TestClientBuild runs it).
func TestNoDaemonDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	const mod = "github.com/coffer-hsm/coffer/"
	for _, tt := range []struct {
		pkg, tags string
		ours      []string // what of ours it may link
	}{
		// internal/span: the spans' parser, standard library only.
		{mod + "client", "", []string{"api", "client", "internal/span"}},
		{mod + "api", "", []string{"api", "internal/span"}},
		{mod + "cmd/coffer", buildtags.Release + ",nodaemon",
			[]string{"api", "client", "audit", "hostseal", "internal/atomicfile", "internal/durable", "internal/span", "cmd/coffer"}},
	} {
		goCmd := func(args ...string) []byte {
			t.Helper()
			cmd := exec.Command("go", args...)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("CGO_ENABLED=0 go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return out
		}
		out := goCmd("list", "-deps", "-tags", tt.tags, "-f", "{{.ImportPath}} {{if .CgoFiles}}cgo{{end}}", tt.pkg)
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			path, cgo, _ := strings.Cut(line, " ")
			rest, isOurs := strings.CutPrefix(path, mod)
			if cgo != "" || path == "C" || isOurs && !slices.Contains(tt.ours, rest) || heavy(path) {
				t.Errorf("%s (tags %q) depends on %s %s", tt.pkg, tt.tags, path, cgo)
			}
		}
		goCmd("build", "-tags", tt.tags, "-o", os.DevNull, tt.pkg)
	}
}

// heavy: Badger, crypto11 and PKCS#11, CEL, gRPC and protobuf, Prometheus,
// go-systemd, Kubernetes: the daemon's dependencies.
func heavy(path string) bool {
	for _, bad := range []string{"badger", "crypto11", "pkcs11", "cel.dev", "google.golang.org/grpc",
		"google.golang.org/protobuf", "prometheus", "go-systemd", "k8s.io"} {
		if strings.Contains(path, bad) {
			return true
		}
	}
	return false
}
