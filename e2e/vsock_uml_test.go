package e2e

// The real AF_VSOCK path, end to end, inside a User-Mode Linux kernel.
//
// The host kernel of a CI runner (often itself a VM) seldom has the
// vsock_loopback transport, and loading modules into it is not a test's
// business. Debian's user-mode-linux package ships a UML kernel
// (/usr/bin/linux.uml) and a module tree with vsock.ko and
// vsock_loopback.ko. TestVsockUML boots that kernel with the host's root
// as its root file system (hostfs) and this very test binary, rebuilt
// without the race detector, as its init: the package init below notices
// it is PID 1 under UML, loads the vsock modules, serves the API on
// AF_VSOCK, dials CID 1 (VMADDR_CID_LOCAL), writes what it saw to a file
// on hostfs and powers the UML kernel off. When the coffer binary has a
// --vsock-port flag, the real daemon (with SoftHSM, dlopen'ed through
// hostfs) is started inside UML as well and answered over vsock by the
// static coffer-client (make client), as a guest would.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/internal/buildtags"
	"github.com/coffer-hsm/coffer/unixapi"
)

const (
	umlKernel     = "/usr/bin/linux.uml"
	umlModuleGlob = "/usr/lib/uml/modules/*/kernel/net/vmw_vsock/vsock_loopback.ko"
	umlAptLine    = "apt-get install -y user-mode-linux"
	// umlBootTimeout bounds one UML run (boot, test, power off): 20 s here
	// under a load of 10 on 2 cores, 2.9 s of it coffer-client's three runs;
	// room for the daemon's slowest start seen (8 s) besides.
	umlBootTimeout = 45 * time.Second
	umlVsockPort   = 7531
)

// umlResult is what the init inside UML reports.
type umlResult struct {
	Kernel  string   `json:"kernel"`
	Modules []string `json:"modules"`
	// The in-process server: the principal the server saw for a client
	// that dialled CID 1.
	Channel string `json:"channel"`
	CID     uint32 `json:"cid"`
	// The real daemon, when it was started.
	Daemon        bool   `json:"daemon"`
	DaemonVersion string `json:"daemon_version,omitempty"`
	DaemonHSM     bool   `json:"daemon_hsm_healthy,omitempty"`
	DaemonVsock   bool   `json:"daemon_vsock,omitempty"` // answered on AF_VSOCK
	// Delivered is the payload a user bound to CID 1 fetched over vsock
	// with coffer-client deliver; Refused says an unbound name was refused
	// as not found (exit 1).
	Delivered string `json:"delivered,omitempty"`
	Refused   bool   `json:"refused,omitempty"`
	// ClientTook is how long coffer-client's three runs took in all.
	ClientTook string `json:"client_took,omitempty"`
	DaemonLog  string `json:"daemon_log,omitempty"`
	Error      string `json:"error,omitempty"`
	Took       string `json:"took"`
}

func init() {
	if os.Getpid() != 1 || os.Getenv("COFFER_UML_INIT") != "1" {
		return
	}
	umlInit() // does not return
}

// umlInit runs as PID 1 inside UML.
func umlInit() {
	start := time.Now()
	res := umlResult{}
	if err := umlGuest(&res); err != nil {
		res.Error = err.Error()
	}
	res.Took = time.Since(start).Round(time.Millisecond).String()
	b, _ := json.MarshalIndent(res, "", "  ")
	if path := os.Getenv("COFFER_UML_RESULT"); path != "" {
		if err := os.WriteFile(path+".tmp", b, 0o644); err == nil {
			os.Rename(path+".tmp", path)
		}
	}
	fmt.Printf("coffer-uml-init: %s\n", b)
	unix.Sync()
	unix.Reboot(unix.LINUX_REBOOT_CMD_POWER_OFF)
	select {}
}

func umlGuest(res *umlResult) error {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return fmt.Errorf("uname: %w", err)
	}
	res.Kernel = unix.ByteSliceToString(uts.Release[:])
	// Some of what coffer and SoftHSM look at lives in /proc.
	if err := unix.Mount("proc", "/proc", "proc", 0, ""); err != nil {
		return fmt.Errorf("mount /proc: %w", err)
	}
	dir := filepath.Join("/usr/lib/uml/modules", res.Kernel, "kernel/net/vmw_vsock")
	for _, m := range []string{"vsock.ko", "vmw_vsock_virtio_transport_common.ko", "vsock_loopback.ko"} {
		if err := finitModule(filepath.Join(dir, m)); err != nil {
			return err
		}
		res.Modules = append(res.Modules, m)
	}
	port, err := strconv.ParseUint(os.Getenv("COFFER_UML_PORT"), 10, 32)
	if err != nil {
		return fmt.Errorf("COFFER_UML_PORT: %w", err)
	}
	if err := umlInProcess(res, uint32(port)); err != nil {
		return err
	}
	if bin := os.Getenv("COFFER_UML_COFFER"); bin != "" {
		var vsockPort uint32
		if os.Getenv("COFFER_UML_DAEMON_VSOCK") == "1" {
			vsockPort = uint32(port) + 1
		}
		return umlRealDaemon(res, bin, os.Getenv("COFFER_UML_CLIENT"), os.Getenv("COFFER_UML_DIR"), vsockPort)
	}
	return nil
}

func finitModule(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("load module: %w", err)
	}
	defer f.Close()
	if err := unix.FinitModule(int(f.Fd()), "", 0); err != nil && !errors.Is(err, unix.EEXIST) {
		return fmt.Errorf("load module %s: %w", path, err)
	}
	return nil
}

// umlBackend records the principal of each request; it answers status only.
type umlBackend struct {
	unixapi.Backend
	mu         sync.Mutex
	principals []daemon.Principal
}

func (b *umlBackend) Authorize(_ context.Context, p daemon.Principal, _ daemon.Action, _ daemon.Resource) (daemon.Grant, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.principals = append(b.principals, p)
	return daemon.Grant{}, nil
}

func (b *umlBackend) Status(context.Context, daemon.Grant) (daemon.Status, error) {
	return daemon.Status{Version: "uml"}, nil
}

// umlInProcess serves the API on AF_VSOCK with unixapi's listener and a
// recording backend, and calls it through unixapi's vsock client on CID 1.
func umlInProcess(res *umlResult, port uint32) error {
	l, err := unixapi.ListenVsock(port, slog.New(slog.NewTextHandler(os.Stdout, nil)), true) // CID 1: loopback
	if err != nil {
		return err
	}
	b := &umlBackend{}
	srv := unixapi.NewServer(b, slog.New(slog.NewTextHandler(io.Discard, nil)))
	go srv.Serve(l)
	defer srv.Shutdown(context.Background())
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.NewVsockClient(unix.VMADDR_CID_LOCAL, port).Status(ctx)
	if err != nil {
		return fmt.Errorf("status over vsock: %w", err)
	}
	if st.Version != "uml" {
		return fmt.Errorf("status over vsock: version %q, want uml", st.Version)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.principals) != 1 {
		return fmt.Errorf("the backend saw %d requests, want 1", len(b.principals))
	}
	res.Channel, res.CID = string(b.principals[0].Channel), b.principals[0].CID
	return nil
}

// umlRealDaemon starts `coffer daemon --dev` in dir (with --vsock-port
// when vsockPort is not 0), waits for its socket and asks for its status
// over the Unix socket and, when it serves vsock, runs clientBin
// (coffer-client) over AF_VSOCK on CID 1 as a guest would.
func umlRealDaemon(res *umlResult, bin, clientBin, dir string, vsockPort uint32) error {
	res.Daemon = true
	log := &syncBuffer{}
	args := []string{"daemon", "--dev"}
	if vsockPort != 0 {
		// CID 1 is the loopback transport's: binding it needs the test mode.
		args = append(args, "--vsock-port", strconv.FormatUint(uint64(vsockPort), 10), "--allow-reserved-cids")
	}
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	cmd.Env = cleanEnv("HOME=" + dir)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start coffer daemon: %w", err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	defer func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		res.DaemonLog = log.String()
	}()
	var socket string
	// Starting under UML on a busy host took up to 8 s (SoftHSM, the
	// store's first migrations and the signer's key, all over hostfs).
	for deadline := time.Now().Add(15 * time.Second); socket == ""; {
		for _, line := range strings.Split(log.String(), "\n") {
			if s, ok := strings.CutPrefix(line, exportPrefix); ok {
				socket = strings.TrimSpace(s)
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("coffer daemon exited before serving")
		default:
		}
		if socket == "" && time.Now().After(deadline) {
			return fmt.Errorf("coffer daemon printed no %q line", exportPrefix)
		}
		time.Sleep(20 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	st, err := client.NewClient(socket).Status(ctx)
	if err != nil {
		return fmt.Errorf("coffer daemon status over its Unix socket: %w", err)
	}
	res.DaemonVersion, res.DaemonHSM = st.Version, st.HSM.Healthy
	if vsockPort == 0 {
		return nil
	}
	// The guest's side is coffer-client, the static CLI built for guests.
	guest := cofferClient{bin: clientBin, vsock: fmt.Sprintf("%d:%d", unix.VMADDR_CID_LOCAL, vsockPort), env: cleanEnv("HOME=" + dir), took: new(time.Duration)}
	defer func() { res.ClientTook = guest.took.String() }()
	out, code, stderr := guest.run("-o", "json", "status")
	if code != 0 {
		return fmt.Errorf("coffer-client status over vsock: exit %d: %s", code, stderr)
	}
	var gst api.Status
	if err := json.Unmarshal(out, &gst); err != nil {
		return fmt.Errorf("coffer-client status over vsock: %w", err)
	}
	res.DaemonVsock = gst.HSM.Healthy
	// A user bound to CID 1 receives its payload over vsock.
	admin := client.NewClient(socket)
	if _, err := admin.CreateUser(ctx, api.UserCreateRequest{Name: "guest", Kind: "workload", VsockCIDs: []uint32{unix.VMADDR_CID_LOCAL}}); err != nil {
		return fmt.Errorf("create the guest user: %w", err)
	}
	if _, err := admin.SetRole(ctx, "default", "guest", "reader"); err != nil {
		return fmt.Errorf("role: %w", err)
	}
	sec, err := admin.CreateSecret(ctx, "default", client.SecretCreate{DisplayName: "uml", Payload: []byte("uml-payload-over-vsock")})
	if err != nil {
		return fmt.Errorf("create secret: %w", err)
	}
	if _, err := admin.CreateBinding(ctx, sec.ID, api.BindingCreateRequest{User: "guest", Name: "dbpass"}); err != nil {
		return fmt.Errorf("bind: %w", err)
	}
	got, code, stderr := guest.run("deliver", "dbpass")
	if code != 0 {
		return fmt.Errorf("coffer-client deliver over vsock: exit %d: %s", code, stderr)
	}
	res.Delivered = string(got)
	_, code, stderr = guest.run("deliver", "other")
	res.Refused = code == 1 && strings.Contains(stderr, "(not_found)")
	return nil
}

// cofferClient runs coffer-client inside UML against the host's vsock.
type cofferClient struct {
	bin, vsock string
	env        []string
	took       *time.Duration
}

// run returns the standard output, the exit code (-1: it did not run)
// and the standard error.
func (g cofferClient) run(args ...string) ([]byte, int, string) {
	defer func(start time.Time) { *g.took += time.Since(start) }(time.Now())
	cmd := exec.Command(g.bin, append([]string{"--vsock", g.vsock}, args...)...)
	cmd.Env = g.env
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var exit *exec.ExitError
	switch {
	case errors.As(err, &exit):
		return out, exit.ExitCode(), stderr.String()
	case err != nil:
		return out, -1, err.Error()
	}
	return out, 0, stderr.String()
}

// requireUML skips t when user-mode-linux is not installed (fails in CI).
func requireUML(t *testing.T) {
	t.Helper()
	_, kerr := os.Stat(umlKernel)
	mods, _ := filepath.Glob(umlModuleGlob)
	if kerr == nil && len(mods) > 0 {
		return
	}
	msg := fmt.Sprintf("user-mode-linux is not installed (%s, %s): %s", umlKernel, umlModuleGlob, umlAptLine)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg + " (CI=true makes this a failure, not a skip)")
	}
	t.Skip(msg)
}

// TestVsockUML boots UML with this test binary as init and checks what it
// reports about the AF_VSOCK round trip.
func TestVsockUML(t *testing.T) {
	requireUML(t)
	dir := workDir(t)
	init := filepath.Join(dir, "uml-init")
	start := time.Now()
	// Rebuilt without -race: the race runtime wants address-space layouts
	// UML's processes do not offer. CGO stays on (unixapi links the
	// PKCS#11 glue); hostfs provides the host's dynamic loader.
	build := exec.Command("go", "test", "-c", "-o", init, ".")
	build.Env = os.Environ()
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the UML init: %v\n%s", err, out)
	}
	t.Logf("built the UML init in %s", time.Since(start).Round(time.Millisecond))
	// The guest's CLI: coffer-client as make client builds it, static.
	clientBin := filepath.Join(dir, "coffer-client")
	build = exec.Command("go", "build", "-tags", buildtags.Release+",nodaemon", "-o", clientBin, "./cmd/coffer")
	build.Dir = ".." // the module root
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build coffer-client: %v\n%s", err, out)
	}

	// The real daemon runs inside UML whenever it was built (SoftHSM is
	// there); it serves vsock once `coffer daemon` has --vsock-port.
	withDaemon := cofferBin != ""
	daemonVsock := withDaemon && cofferHasVsockPort(t)
	result := filepath.Join(dir, "result.json")
	args := []string{
		"mem=256M",
		"root=/dev/root", "rootfstype=hostfs", "rootflags=/", "rw",
		"uml_dir=" + dir, // UML's own run-time files; not ~/.uml
		"con=null", "con0=null,fd:1",
		"init=" + init,
		"COFFER_UML_INIT=1",
		"COFFER_UML_RESULT=" + result,
		"COFFER_UML_PORT=" + strconv.Itoa(umlVsockPort),
	}
	if withDaemon {
		args = append(args, "COFFER_UML_COFFER="+cofferBin, "COFFER_UML_CLIENT="+clientBin, "COFFER_UML_DIR="+dir)
	} else {
		t.Logf("SoftHSM is missing (%s): the real daemon is not started inside UML", skipReason)
	}
	if daemonVsock {
		args = append(args, "COFFER_UML_DAEMON_VSOCK=1")
	} else if withDaemon {
		t.Log("coffer has no `daemon --vsock-port` yet: the real daemon inside UML is checked over its Unix socket only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), umlBootTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, umlKernel, args...)
	console := &syncBuffer{}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, console, console
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "TMPDIR=" + dir}
	// UML runs as several host processes; on timeout kill them all.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 2 * time.Second
	boot := time.Now()
	runErr := cmd.Run()
	took := time.Since(boot).Round(time.Millisecond)
	t.Logf("UML ran %s: %s %s", took, umlKernel, strings.Join(args, " "))
	if ctx.Err() != nil {
		t.Fatalf("UML did not power off within %s\nconsole:\n%s", umlBootTimeout, tail(console.String(), 40))
	}
	b, err := os.ReadFile(result)
	if err != nil {
		t.Fatalf("UML init wrote no result (%v; UML: %v)\nconsole:\n%s", err, runErr, tail(console.String(), 40))
	}
	var res umlResult
	if err := json.Unmarshal(b, &res); err != nil {
		t.Fatalf("result: %v\n%s", err, b)
	}
	if res.Error != "" {
		t.Fatalf("inside UML (kernel %s): %s\nresult: %s\nconsole:\n%s", res.Kernel, res.Error, b, tail(console.String(), 40))
	}
	if res.Channel != string(daemon.ChannelVsock) || res.CID != unix.VMADDR_CID_LOCAL {
		t.Fatalf("principal inside UML: channel %q cid %d, want vsock cid 1\n%s", res.Channel, res.CID, b)
	}
	if withDaemon && (!res.Daemon || res.DaemonVersion == "" || !res.DaemonHSM) {
		t.Fatalf("the real daemon inside UML: %s", b)
	}
	if daemonVsock && !res.DaemonVsock {
		t.Fatalf("the real daemon inside UML did not answer over vsock: %s", b)
	}
	if daemonVsock && (res.Delivered != "uml-payload-over-vsock" || !res.Refused) {
		t.Fatalf("delivery over vsock to the user bound to CID 1: got %q, unbound name refused %v\n%s", res.Delivered, res.Refused, b)
	}
	t.Logf("inside UML %s: modules %v, principal %s cid %d, daemon=%v (vsock %v), guest took %s (coffer-client %s)", res.Kernel, res.Modules, res.Channel, res.CID, res.Daemon, res.DaemonVsock, res.Took, res.ClientTook)
}

// cofferHasVsockPort tells whether the built coffer serves AF_VSOCK.
func cofferHasVsockPort(t *testing.T) bool {
	out, _ := exec.Command(cofferBin, "daemon", "--help").CombinedOutput()
	return strings.Contains(string(out), "--vsock-port")
}

// tail returns the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
