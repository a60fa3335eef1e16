package systemd

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The activation tests re-execute the test binary the way systemd starts a
// service: descriptors from 3 on, $LISTEN_FDS, $LISTEN_FDNAMES, and
// $LISTEN_PID set to the pid of the process itself (a shell exports its own
// pid with $$ and execs the binary, which keeps the pid).
const childEnv = "COFFER_SYSTEMD_ACTIVATION_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		activationChild()
		return
	}
	os.Exit(m.Run())
}

// activationChild calls Activated and reports what it got on stdout: one
// line per listener with its network and address, after a round trip through
// it for Unix sockets, then the activation variables left in the environment.
func activationChild() {
	ls, err := Activated()
	if err != nil {
		fmt.Println("error:", err)
	} else if ls.Empty() {
		fmt.Println("none")
	}
	for _, x := range []struct {
		name string
		ln   net.Listener
	}{{"api", ls.API}, {"creds", ls.Creds}, {"vsock", ls.Vsock}} {
		if x.ln == nil {
			continue
		}
		a := x.ln.Addr()
		fmt.Printf("%s %s %s %T %s\n", x.name, a.Network(), a, x.ln, roundTrip(x.ln))
	}
	for _, v := range []string{"LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"} {
		if s, ok := os.LookupEnv(v); ok {
			fmt.Printf("env %s=%s\n", v, s)
		}
	}
	ls.Close()
}

func roundTrip(ln net.Listener) string {
	if ln.Addr().Network() != "unix" {
		return "-"
	}
	// The connection completes in the backlog, before Accept.
	c, err := net.DialTimeout("unix", ln.Addr().String(), 5*time.Second)
	if err != nil {
		return "dial: " + err.Error()
	}
	c.Write([]byte("ping"))
	c.Close()
	ln.(*net.UnixListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		return "accept: " + err.Error()
	}
	defer s.Close()
	b, err := io.ReadAll(s)
	if err != nil {
		return "read: " + err.Error()
	}
	return string(b)
}

// passed is one socket handed to the child.
type passed struct {
	name string
	file *os.File
}

func runChild(t *testing.T, fds []passed, env ...string) string {
	t.Helper()
	script := `exec "$0" -test.run='^$'`
	if len(fds) > 0 && !slices.ContainsFunc(env, func(e string) bool { return strings.HasPrefix(e, "LISTEN_PID=") }) {
		script = `LISTEN_PID=$$ ` + script
	}
	cmd := exec.Command("/bin/sh", "-c", script, os.Args[0])
	// The race detector waits a second at exit by default.
	cmd.Env = append(os.Environ(), childEnv+"=1", "GORACE="+os.Getenv("GORACE")+" atexit_sleep_ms=0")
	var names []string
	for _, p := range fds {
		cmd.ExtraFiles = append(cmd.ExtraFiles, p.file)
		names = append(names, p.name)
	}
	if len(fds) > 0 {
		cmd.Env = append(cmd.Env, fmt.Sprintf("LISTEN_FDS=%d", len(fds)), "LISTEN_FDNAMES="+strings.Join(names, ":"))
	}
	cmd.Env = append(cmd.Env, env...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	cmd.WaitDelay = time.Second
	timer := time.AfterFunc(time.Minute, func() { cmd.Process.Kill() })
	defer timer.Stop()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s%s", err, out, stderr.String())
	}
	return string(out)
}

// unixListenerFile returns a listening Unix socket's descriptor.
func unixListenerFile(t *testing.T, network, path string) *os.File {
	t.Helper()
	var (
		f   *os.File
		err error
	)
	switch network {
	case "unix":
		var ln *net.UnixListener
		ln, err = net.ListenUnix(network, &net.UnixAddr{Name: path, Net: network})
		if err == nil {
			ln.SetUnlinkOnClose(false) // the child listens on the path
			f, err = ln.File()
			ln.Close()
		}
	case "unixgram":
		var c *net.UnixConn
		c, err = net.ListenUnixgram(network, &net.UnixAddr{Name: path, Net: network})
		if err == nil {
			f, err = c.File()
			c.Close()
		}
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func TestActivated(t *testing.T) {
	dir := t.TempDir()
	api := filepath.Join(dir, "api.sock")
	creds := filepath.Join(dir, "creds.sock")
	apiF := unixListenerFile(t, "unix", api)
	credsF := unixListenerFile(t, "unix", creds)
	gramF := unixListenerFile(t, "unixgram", filepath.Join(dir, "gram.sock"))

	for _, tc := range []struct {
		name string
		fds  []passed
		env  []string
		want string
	}{
		{"not activated", nil, nil, "none\n"},
		{"api and creds", []passed{{"creds", credsF}, {"api", apiF}}, nil,
			"api unix " + api + " *net.UnixListener ping\n" +
				"creds unix " + creds + " *net.UnixListener ping\n"},
		{"api only", []passed{{"api", apiF}}, nil, "api unix " + api + " *net.UnixListener ping\n"},
		{"for another process", []passed{{"api", apiF}}, []string{"LISTEN_PID=1"}, "none\n"},
		{"unknown names", []passed{{"api", apiF}, {"metrics", credsF}, {"", gramF}}, nil,
			"error: socket activation: unknown socket name(s) LISTEN_FD_5, metrics passed by systemd: set FileDescriptorName= to api, creds or vsock\n"},
		{"no names", []passed{{"", apiF}}, []string{"LISTEN_FDNAMES="},
			"error: socket activation: unknown socket name(s) LISTEN_FD_3 passed by systemd: set FileDescriptorName= to api, creds or vsock\n"},
		{"twice", []passed{{"api", apiF}, {"api", credsF}}, nil,
			`error: socket activation: socket "api" passed more than once` + "\n"},
		{"datagram", []passed{{"creds", gramF}}, nil,
			`error: socket activation: socket "creds": not a stream socket (use ListenStream=)` + "\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := runChild(t, tc.fds, tc.env...)
			if got != tc.want {
				t.Fatalf("child printed\n%s\nwant\n%s", got, tc.want)
			}
		})
	}

	t.Run("not listening", func(t *testing.T) {
		fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "unbound")
		defer f.Close()
		got := runChild(t, []passed{{"api", f}})
		if want := `error: socket activation: socket "api": not a listening socket (Accept=yes is not supported)` + "\n"; got != want {
			t.Fatalf("got %q, want %q", got, want)
		}
	})

	t.Run("vsock", func(t *testing.T) {
		if _, err := os.Stat("/dev/vsock"); err != nil {
			t.Skip("no AF_VSOCK here (/dev/vsock is missing): the vsock wrap path is untested")
		}
		fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Skipf("no AF_VSOCK here (socket: %v): the vsock wrap path is untested", err)
		}
		f := os.NewFile(uintptr(fd), "vsock")
		defer f.Close()
		if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: unix.VMADDR_PORT_ANY}); err != nil {
			t.Skipf("no AF_VSOCK transport here (bind: %v): the vsock wrap path is untested", err)
		}
		if err := unix.Listen(fd, 8); err != nil {
			t.Skipf("no AF_VSOCK transport here (listen: %v): the vsock wrap path is untested", err)
		}
		sa, err := unix.Getsockname(fd)
		if err != nil {
			t.Fatal(err)
		}
		port := sa.(*unix.SockaddrVM).Port
		got := runChild(t, []passed{{"api", apiF}, {"vsock", f}})
		want := "api unix " + api + " *net.UnixListener ping\n" +
			fmt.Sprintf("vsock vsock vm(%d):%d *vsock.Listener -\n", unix.VMADDR_CID_ANY, port)
		if got != want {
			t.Fatalf("child printed\n%s\nwant\n%s", got, want)
		}
	})
}
