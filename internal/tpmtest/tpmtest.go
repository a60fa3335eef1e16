// Package tpmtest starts a software TPM 2.0 with a tpm2-pkcs11 token for
// tests: swtpm (the TPM), a private D-Bus session bus, tpm2-abrmd (the
// resource manager that tpm2-pkcs11 needs: without one, the transient
// objects of tpm2_ptool exhaust the TPM) and a token made by tpm2_ptool.
// Everything lives in a test's temporary directory and stops with it.
//
// The Debian packages it needs are installed by `make test-deps`: swtpm,
// swtpm-tools, tpm2-tools, tpm2-abrmd, libtss2-tcti-tabrmd0, dbus,
// libtpm2-pkcs11-1 and libtpm2-pkcs11-tools.
package tpmtest

import (
	"bytes"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ModulePath is Debian's tpm2-pkcs11 module.
const ModulePath = "/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so"

// Token is a tpm2-pkcs11 token backed by a running software TPM.
type Token struct {
	Module string
	Label  string
	PIN    string // user PIN
	SOPIN  string
	// Env is what a process loading Module needs (TCTI, store, bus),
	// as KEY=VALUE pairs.
	Env []string
}

// tools are the programs Start runs.
var tools = []string{"swtpm", "dbus-daemon", "tpm2-abrmd", "tpm2_ptool", "tpm2_getcap"}

// TB is what Start needs of its caller: a testing.TB has it, and so can a
// program that is not a test (cmd/coffer-bench's boot storm).
type TB interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Logf(format string, args ...any)
	Cleanup(func())
	TempDir() string
	Failed() bool
}

var _ TB = testing.TB(nil)

// Start brings up a software TPM with one initialised token labelled
// label, and stops it when t ends. It fails the test when the packages are
// missing: run `make test-deps`.
func Start(t TB, label string) *Token {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("tpmtest: %s is not installed (run make test-deps): %v", tool, err)
		}
	}
	if _, err := os.Stat(ModulePath); err != nil {
		t.Fatalf("tpmtest: tpm2-pkcs11 module missing (run make test-deps): %v", err)
	}
	dir := t.TempDir()
	for _, d := range []string{"tpm", "store"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	// The swtpm TCTI finds the control channel at the server port + 1.
	port := freePortPair(t)
	ctrl := port + 1

	start(t, dir, nil, "swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+filepath.Join(dir, "tpm"),
		"--server", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(port),
		"--ctrl", "type=tcp,bindaddr=127.0.0.1,port="+strconv.Itoa(ctrl),
		"--flags", "not-need-init,startup-clear")
	waitFor(t, "swtpm", func() error {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			c.Close()
		}
		return err
	})

	bus := "unix:path=" + filepath.Join(dir, "bus")
	start(t, dir, nil, "dbus-daemon", "--session", "--nofork", "--nopidfile", "--address="+bus)
	waitFor(t, "the D-Bus session bus", func() error {
		_, err := os.Stat(filepath.Join(dir, "bus"))
		return err
	})

	env := []string{
		"DBUS_SESSION_BUS_ADDRESS=" + bus,
		"TPM2TOOLS_TCTI=tabrmd:bus_type=session",
		"TPM2_PKCS11_TCTI=tabrmd:bus_type=session",
		"TPM2_PKCS11_STORE=" + filepath.Join(dir, "store"),
		"TSS2_LOG=all+none", // the ESYS warnings are noise here
	}
	start(t, dir, env, "tpm2-abrmd", "--session", "--allow-root", "--flush-all",
		"--tcti=swtpm:host=127.0.0.1,port="+strconv.Itoa(port))
	waitFor(t, "tpm2-abrmd", func() error {
		_, err := run(dir, env, "tpm2_getcap", "properties-fixed")
		return err
	})

	tok := &Token{Module: ModulePath, Label: label, PIN: "coffer-user-pin", SOPIN: "coffer-so-pin", Env: env}
	store := filepath.Join(dir, "store")
	if out, err := run(dir, env, "tpm2_ptool", "init", "--path", store); err != nil {
		t.Fatalf("tpmtest: tpm2_ptool init: %v\n%s", err, out)
	}
	if out, err := run(dir, env, "tpm2_ptool", "addtoken", "--pid=1", "--label="+label,
		"--sopin="+tok.SOPIN, "--userpin="+tok.PIN, "--path", store); err != nil {
		t.Fatalf("tpmtest: tpm2_ptool addtoken: %v\n%s", err, out)
	}
	return tok
}

// Setenv puts the token's environment into this process, for tests that
// load the module in-process (cgo's environment follows os.Setenv).
func (tok *Token) Setenv(t testing.TB) {
	t.Helper()
	for _, kv := range tok.Env {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
}

// freePortPair returns a port p such that p and p+1 are both free now.
func freePortPair(t TB) int {
	t.Helper()
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		p := l.Addr().(*net.TCPAddr).Port
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p+1))
		l.Close()
		if err == nil {
			l2.Close()
			return p
		}
	}
	t.Fatal("tpmtest: no free pair of TCP ports")
	return 0
}

// start runs a long-lived helper process until the test ends.
func start(t TB, dir string, env []string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("tpmtest: start %s: %v", name, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("tpmtest: %s output:\n%s", name, out.String())
		}
	})
}

func run(dir string, env []string, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	return cmd.CombinedOutput()
}

func waitFor(t TB, what string, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := ready()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("tpmtest: %s did not come up: %v", what, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
