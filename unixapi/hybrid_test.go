package unixapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

const hybridPort = 5005

// hybridDir returns a short fresh directory: socket paths are limited to
// 107 bytes and t.TempDir() paths grow with the test name.
func hybridDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "hv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// lockedBuffer collects log output written from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveHybrid serves b on a hybrid vsock listener for vms and returns it.
func serveHybrid(t *testing.T, b Backend, vms []HybridVM, log *slog.Logger) *HybridListener {
	t.Helper()
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	l, err := ListenHybridVsock(vms, hybridPort, SocketOptions{GID: -1, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, b, l)
	return l
}

// vmmClient plays the VMM: it connects to the host-side socket of vm the way
// Firecracker does when its guest connects to CID 2 on hybridPort.
func vmmClient(vm HybridVM) *client.Client {
	return client.NewClient(HybridSocketPath(vm, hybridPort))
}

func TestHybridVsockNamesTheVM(t *testing.T) {
	dir := hybridDir(t)
	web := HybridVM{Name: "vm-web", UDSPath: filepath.Join(dir, "web", "v.sock")}
	db := HybridVM{Name: "db.1", UDSPath: filepath.Join(dir, "db.vsock")}
	f := &fakeBackend{}
	serveHybrid(t, f, []HybridVM{web, db}, nil)

	for _, vm := range []HybridVM{web, db, web} {
		if _, err := vmmClient(vm).Status(context.Background()); err != nil {
			t.Fatalf("status through %s: %v", vm.Name, err)
		}
		got := f.lastPrincipal()
		want := daemon.Principal{Channel: daemon.ChannelHybridVsock, VM: vm.Name}
		if got.Channel != want.Channel || got.VM != want.VM || got.HasCred || got.UID != 0 || got.GID != 0 || got.PID != 0 || got.CID != 0 || got.Token != nil {
			t.Fatalf("principal = %+v, want exactly %+v (the VMM's own uid must not leak into it)", got, want)
		}
		if s := got.String(); s != "hybrid-vsock vm="+vm.Name {
			t.Fatalf("String() = %q", s)
		}
	}
	// The socket files have the default mode.
	fi, err := os.Stat(HybridSocketPath(web, hybridPort))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o660 {
		t.Fatalf("mode = %v, want 0660", fi.Mode().Perm())
	}
}

func TestHybridVsockSocketPath(t *testing.T) {
	if got := HybridSocketPath(HybridVM{Name: "a", UDSPath: "/run/fc/a/v.sock"}, 52); got != "/run/fc/a/v.sock_52" {
		t.Fatalf("path = %q", got)
	}
}

func TestHybridVsockConcurrentVMs(t *testing.T) {
	dir := hybridDir(t)
	var vms []HybridVM
	for _, n := range []string{"a", "b", "c", "d"} {
		vms = append(vms, HybridVM{Name: "vm-" + n, UDSPath: filepath.Join(dir, n)})
	}
	f := &fakeBackend{}
	serveHybrid(t, f, vms, nil)
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(vm HybridVM) {
			defer wg.Done()
			if _, err := vmmClient(vm).Status(context.Background()); err != nil {
				errs <- err
			}
		}(vms[i%len(vms)])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	counts := map[string]int{}
	f.mu.Lock()
	for _, p := range f.principals {
		if p.Channel != daemon.ChannelHybridVsock {
			t.Errorf("channel %q", p.Channel)
		}
		counts[p.VM]++
	}
	f.mu.Unlock()
	for _, vm := range vms {
		if counts[vm.Name] != 10 {
			t.Fatalf("requests per VM = %v, want 10 each", counts)
		}
	}
}

func TestHybridVsockStaleAndLiveSockets(t *testing.T) {
	dir := hybridDir(t)
	vm := HybridVM{Name: "vm1", UDSPath: filepath.Join(dir, "v.sock")}
	path := HybridSocketPath(vm, hybridPort)

	// A dead daemon's socket file: removed, then listened on.
	dead, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	dead.SetUnlinkOnClose(false)
	dead.Close()
	var logs lockedBuffer
	f := &fakeBackend{}
	serveHybrid(t, f, []HybridVM{vm}, slog.New(slog.NewTextHandler(&logs, nil)))
	if !strings.Contains(logs.String(), "removed stale socket file") {
		t.Fatalf("log %q does not mention the stale socket", logs.String())
	}
	if _, err := vmmClient(vm).Status(context.Background()); err != nil {
		t.Fatal(err)
	}

	// A live one: refused, and the live daemon keeps its socket.
	_, err = ListenHybridVsock([]HybridVM{vm}, hybridPort, SocketOptions{GID: -1})
	if err == nil || !strings.Contains(err.Error(), `hybrid vsock for VM "vm1"`) || !strings.Contains(err.Error(), "another coffer daemon is already serving there") {
		t.Fatalf("err = %v, want a refusal naming the VM", err)
	}
	if _, err := vmmClient(vm).Status(context.Background()); err != nil {
		t.Fatalf("the first daemon lost its socket: %v", err)
	}

	// A path that is not a socket is never replaced.
	file := HybridVM{Name: "vm2", UDSPath: filepath.Join(dir, "f")}
	if err := os.WriteFile(HybridSocketPath(file, hybridPort), []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = ListenHybridVsock([]HybridVM{file}, hybridPort, SocketOptions{GID: -1})
	if err == nil || !strings.Contains(err.Error(), "is not a socket; refusing to replace it") {
		t.Fatalf("err = %v", err)
	}
	// A failure on a later VM leaves no socket of an earlier one behind.
	other := HybridVM{Name: "vm3", UDSPath: filepath.Join(dir, "o")}
	if _, err = ListenHybridVsock([]HybridVM{other, file}, hybridPort, SocketOptions{GID: -1}); err == nil {
		t.Fatal("listen succeeded")
	}
	if _, err := os.Lstat(HybridSocketPath(other, hybridPort)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket of vm3 left behind: %v", err)
	}
}

func TestHybridVsockInvalidConfig(t *testing.T) {
	dir := hybridDir(t)
	p := func(s string) string { return filepath.Join(dir, s) }
	tests := []struct {
		name string
		vms  []HybridVM
		port uint32
		want string
	}{
		{"port 0", []HybridVM{{"a", p("a"), 0}}, 0, "hybrid vsock: port 0 is not a port to serve on"},
		{"port any", []HybridVM{{"a", p("a"), 0}}, 0xFFFFFFFF, "hybrid vsock: port 4294967295 is not a port to serve on"},
		{"upper case", []HybridVM{{"Web", p("a"), 0}}, 5, `hybrid vsock: invalid VM name "Web": use 1-64 of a-z 0-9 . _ - starting and ending with a letter or digit`},
		{"empty name", []HybridVM{{"", p("a"), 0}}, 5, `hybrid vsock: invalid VM name "": use 1-64 of a-z 0-9 . _ - starting and ending with a letter or digit`},
		{"slash", []HybridVM{{"a/b", p("a"), 0}}, 5, `hybrid vsock: invalid VM name "a/b": use 1-64 of a-z 0-9 . _ - starting and ending with a letter or digit`},
		{"too long", []HybridVM{{strings.Repeat("a", 65), p("a"), 0}}, 5, `hybrid vsock: invalid VM name "` + strings.Repeat("a", 65) + `": use 1-64 of a-z 0-9 . _ - starting and ending with a letter or digit`},
		{"twice", []HybridVM{{"a", p("a"), 0}, {"a", p("b"), 0}}, 5, `hybrid vsock: VM "a" is configured twice`},
		{"same path", []HybridVM{{"a", p("a"), 0}, {"b", p("a"), 0}}, 5, `hybrid vsock: VMs "a" and "b" have the same uds_path ` + p("a")},
		{"no path", []HybridVM{{"a", "", 0}}, 5, `hybrid vsock: VM "a" has no uds_path`},
		{"NUL", []HybridVM{{"a", p("a\x00b"), 0}}, 5, `hybrid vsock: VM "a": uds_path contains a NUL byte`},
		// 1+105+2 = 108 bytes: one more than sun_path takes.
		{"long path", []HybridVM{{"a", "/" + strings.Repeat("x", 105), 0}}, 5, `hybrid vsock: VM "a": socket path /` + strings.Repeat("x", 105) + `_5 is 108 bytes, longer than the 107 a Unix socket path may have`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			l, err := ListenHybridVsock(tc.vms, tc.port, SocketOptions{GID: -1})
			if err == nil {
				l.Close()
				t.Fatal("no error")
			}
			if err.Error() != tc.want {
				t.Fatalf("err = %q\nwant  %q", err, tc.want)
			}
		})
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Fatalf("invalid configs left files behind: %v", entries)
	}
}

func TestHybridVsockReconfigure(t *testing.T) {
	dir := hybridDir(t)
	a := HybridVM{Name: "a", UDSPath: filepath.Join(dir, "a")}
	b := HybridVM{Name: "b", UDSPath: filepath.Join(dir, "b")}
	c := HybridVM{Name: "c", UDSPath: filepath.Join(dir, "c")}
	a2 := HybridVM{Name: "a", UDSPath: filepath.Join(dir, "a2")}
	f := &fakeBackend{}
	l := serveHybrid(t, f, nil, nil)
	if got := l.VMs(); len(got) != 0 {
		t.Fatalf("VMs = %v", got)
	}
	if err := l.Reconfigure([]HybridVM{a, b}); err != nil {
		t.Fatal(err)
	}
	// b dropped, c added, a moved.
	if err := l.Reconfigure([]HybridVM{c, a2}); err != nil {
		t.Fatal(err)
	}
	if got := l.VMs(); len(got) != 2 || got[0] != a2 || got[1] != c {
		t.Fatalf("VMs = %v, want [a2 c]", got)
	}
	for _, gone := range []HybridVM{a, b} {
		if _, err := os.Lstat(HybridSocketPath(gone, hybridPort)); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("socket of %s still there: %v", gone.UDSPath, err)
		}
		var ue *client.UnreachableError
		if _, err := vmmClient(gone).Status(context.Background()); !errors.As(err, &ue) {
			t.Fatalf("status through a dropped socket: %v, want unreachable", err)
		}
	}
	for _, vm := range []HybridVM{a2, c} {
		if _, err := vmmClient(vm).Status(context.Background()); err != nil {
			t.Fatal(err)
		}
		if p := f.lastPrincipal(); p.VM != vm.Name {
			t.Fatalf("principal %+v, want VM %s", p, vm.Name)
		}
	}
	// An invalid list changes nothing.
	if err := l.Reconfigure([]HybridVM{{Name: "BAD", UDSPath: filepath.Join(dir, "x")}}); err == nil {
		t.Fatal("invalid list accepted")
	}
	if got := l.VMs(); len(got) != 2 {
		t.Fatalf("VMs = %v after a rejected reconfigure", got)
	}
}

func TestHybridVsockClose(t *testing.T) {
	dir := hybridDir(t)
	vm := HybridVM{Name: "a", UDSPath: filepath.Join(dir, "a")}
	l, err := ListenHybridVsock([]HybridVM{vm}, hybridPort, SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := l.Accept()
		accepted <- err
	}()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-accepted:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept did not return after Close")
	}
	if _, err := os.Lstat(HybridSocketPath(vm, hybridPort)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket file left after Close: %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if err := l.Reconfigure([]HybridVM{vm}); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Reconfigure after Close: %v", err)
	}
	if got := l.Addr().Network(); got != "hybrid-vsock" {
		t.Fatalf("network %q", got)
	}
}

// TestHybridVsockOnlyTheVMM: the socket names the VM, so a peer that is not
// the VM's VMM (by uid) is refused before anything is read.
func TestHybridVsockOnlyTheVMM(t *testing.T) {
	dir := t.TempDir()
	f := &fakeBackend{}
	vm := HybridVM{Name: "vm1", UDSPath: filepath.Join(dir, "v.sock"), VMMUID: uint32(os.Getuid()) + 1}
	var logs bytes.Buffer
	serveHybrid(t, f, []HybridVM{vm}, slog.New(slog.NewTextHandler(&logs, nil)))
	_, err := client.NewClient(HybridSocketPath(vm, hybridPort)).Status(context.Background())
	if err == nil {
		t.Fatal("a connection from another uid than the VMM's was served")
	}
	if len(f.principals) != 0 {
		t.Fatalf("the backend saw %v", f.principals)
	}
}
