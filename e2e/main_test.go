// Package e2e tests coffer end to end: the real binary, a real Unix socket,
// a real SoftHSM token and a real Badger store. Nothing is faked.
//
// TestMain builds ./cmd/coffer once. Set COFFER_E2E_RACE=1 to build it with
// the race detector. Without SoftHSM the tests skip, except when CI=true,
// where a missing SoftHSM fails the run.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/coffer-hsm/coffer/internal/buildtags"
)

// softHSMModule is where the SoftHSM2 PKCS#11 module is installed.
const softHSMModule = "/usr/lib/softhsm/libsofthsm2.so"

var (
	// cofferBin is the binary built by TestMain.
	cofferBin string
	// skipReason, when set, makes every test skip (local runs only).
	skipReason string
)

func TestMain(m *testing.M) {
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	if _, err := os.Stat(softHSMModule); err != nil {
		msg := fmt.Sprintf("SoftHSM2 is not installed (%s: %v); install softhsm2", softHSMModule, err)
		if os.Getenv("CI") == "true" {
			fmt.Fprintln(os.Stderr, "e2e: FAIL: "+msg+" (CI=true makes this a failure, not a skip)")
			return 1
		}
		skipReason = msg
		return m.Run()
	}
	tmp, err := os.MkdirTemp("", "coffer-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(tmp)
	cofferBin = filepath.Join(tmp, "coffer")
	args := []string{"build", "-tags", buildtags.Release, "-o", cofferBin}
	if os.Getenv("COFFER_E2E_RACE") == "1" {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/coffer")
	build := exec.Command("go", args...)
	build.Dir = ".." // the module root; go test runs in the package directory
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "e2e: building coffer:", err)
		return 1
	}
	return m.Run()
}

// requireHSM skips t when SoftHSM is missing (never in CI: TestMain fails
// first).
func requireHSM(t *testing.T) {
	t.Helper()
	if skipReason != "" {
		t.Skip(skipReason)
	}
}
