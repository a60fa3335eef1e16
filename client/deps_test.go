package client_test

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestNoDaemonDependencies holds what package client promises: it and
// package api build without cgo and link nothing of the daemon, its store
// or its HSM, so that any program, and the static coffer-client, can use
// them.
func TestNoDaemonDependencies(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	for _, pkg := range []string{"github.com/coffer-hsm/coffer/client", "github.com/coffer-hsm/coffer/api"} {
		cmd := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}} {{if .CgoFiles}}cgo{{end}}", pkg)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", pkg, err, out)
		}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			path, cgo, _ := strings.Cut(line, " ")
			if cgo != "" || path == "C" || forbidden(path) {
				t.Errorf("%s depends on %s %s", pkg, path, cgo)
			}
		}
	}
	// And it builds so (CGO_ENABLED=0 go build ./client/... ./api/...).
	cmd := exec.Command("go", "build", "-o", os.DevNull, "github.com/coffer-hsm/coffer/client/...", "github.com/coffer-hsm/coffer/api/...")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("CGO_ENABLED=0 go build: %v\n%s", err, out)
	}
}

// forbidden: the daemon's packages and heavy dependencies: of ours, only
// api and client themselves; nothing of Badger, crypto11, PKCS#11, CEL,
// gRPC or protobuf.
func forbidden(path string) bool {
	if rest, ok := strings.CutPrefix(path, "github.com/coffer-hsm/coffer/"); ok {
		return rest != "api" && rest != "client"
	}
	for _, bad := range []string{"badger", "crypto11", "pkcs11", "cel.dev", "google.golang.org/grpc",
		"google.golang.org/protobuf", "prometheus", "go-systemd", "k8s.io"} {
		if strings.Contains(path, bad) {
			return true
		}
	}
	return false
}
