package hsm

import (
	"context"
	"fmt"
	"os"
	"testing"
)

// SoftHSM reads SOFTHSM2_CONF once per module load, so the whole test binary
// shares one dev token dir; tests use distinct token labels inside it.
var (
	testDir      string
	testCfg      Config // token "coffer-test"
	testSetupErr error
)

const testToken = "coffer-test"

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "coffer-hsm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	testDir = dir
	if _, err := os.Stat(DefaultModulePath); err != nil {
		testSetupErr = fmt.Errorf("SoftHSM module not available: %w", err)
	} else {
		testCfg, testSetupErr = PrepareDevToken(context.Background(), dir, DefaultModulePath, testToken)
	}
	return m.Run()
}

// needHSM skips without SoftHSM, except in CI where that is a failure.
func needHSM(tb testing.TB) {
	tb.Helper()
	if testSetupErr == nil {
		return
	}
	if os.Getenv("CI") == "true" {
		tb.Fatalf("SoftHSM required in CI: %v", testSetupErr)
	}
	tb.Skipf("skipping: %v", testSetupErr)
}

// tokenCfg returns a Config for a fresh or existing token in the test dir.
func tokenCfg(tb testing.TB, label string) Config {
	tb.Helper()
	needHSM(tb)
	if label == testToken {
		return testCfg
	}
	cfg, err := PrepareDevToken(context.Background(), testDir, DefaultModulePath, label)
	if err != nil {
		tb.Fatalf("PrepareDevToken(%s): %v", label, err)
	}
	return cfg
}

// openTest opens cfg and closes it when the test ends.
func openTest(tb testing.TB, cfg Config) *HSM {
	tb.Helper()
	h, err := Open(context.Background(), cfg)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return h
}
