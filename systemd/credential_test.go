package systemd

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"testing"
)

// randomHex returns a fresh random prefix, so that parallel test runs do not
// collide in the (per network namespace) abstract socket namespace.
func randomHex(t *testing.T, n int) string {
	t.Helper()
	b := make([]byte, (n+1)/2)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)[:n]
}

// peerOf connects a client bound to laddr (nil: unbound) to a fresh
// listener, the way systemd's LoadCredential= client does, and returns the
// server side of the connection.
func peerOf(t *testing.T, laddr *net.UnixAddr) *net.UnixConn {
	t.Helper()
	path := filepath.Join(t.TempDir(), "creds.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	client, err := net.DialUnix("unix", laddr, &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatalf("dial from %v: %v", laddr, err)
	}
	t.Cleanup(func() { client.Close() })
	server, err := ln.AcceptUnix()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { server.Close() })
	return server
}

func TestCredentialPeer(t *testing.T) {
	// Unit names carry u so that concurrent runs never bind the same
	// abstract address, even with a one-digit random prefix.
	u := randomHex(t, 8)
	for _, tc := range []struct {
		name             string
		random           string // "" = 16 random hex digits
		tail             string // after "/unit/"
		wantUnit, wantCr string
	}{
		{name: "service", tail: "x" + u + ".service/dbpass", wantUnit: "x" + u + ".service", wantCr: "dbpass"},
		{name: "instance", tail: "getty@" + u + ".service/tls.key", wantUnit: "getty@" + u + ".service", wantCr: "tls.key"},
		{name: "escaped", tail: `foo\x2dbar-` + u + `:1_2.socket/A-b_c.D e`, wantUnit: `foo\x2dbar-` + u + `:1_2.socket`, wantCr: "A-b_c.D e"},
		{name: "one hex digit", random: "f", tail: "n" + u + ".service/dbpass", wantUnit: "n" + u + ".service", wantCr: "dbpass"},
		{name: "credential named unit", tail: "a" + u + ".service/unit", wantUnit: "a" + u + ".service", wantCr: "unit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			random := tc.random
			if random == "" {
				random = randomHex(t, 16)
			}
			c := peerOf(t, &net.UnixAddr{Name: "@" + random + "/unit/" + tc.tail, Net: "unix"})
			unit, cred, err := CredentialPeer(c)
			if err != nil {
				t.Fatalf("CredentialPeer: %v", err)
			}
			if unit != tc.wantUnit || cred != tc.wantCr {
				t.Fatalf("got (%q, %q), want (%q, %q)", unit, cred, tc.wantUnit, tc.wantCr)
			}
		})
	}
}

func TestCredentialPeerRejectsSockets(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name  string
		laddr func(random string) *net.UnixAddr
		want  string
	}{
		{"unbound client", func(string) *net.UnixAddr { return nil }, "the peer socket is unbound"},
		{"path address", func(string) *net.UnixAddr {
			return &net.UnixAddr{Name: filepath.Join(dir, "client.sock"), Net: "unix"}
		}, "not an abstract address"},
		{"no unit part", func(r string) *net.UnixAddr { return &net.UnixAddr{Name: "@" + r + "/x.service/dbpass", Net: "unix"} }, "no /unit/ part"},
		{"random too long", func(r string) *net.UnixAddr {
			return &net.UnixAddr{Name: "@" + r + "0/unit/x.service/dbpass", Net: "unix"}
		}, "the random prefix is not 1-16 hex digits"},
		{"random not hex", func(r string) *net.UnixAddr {
			return &net.UnixAddr{Name: "@" + r[:8] + "xyz/unit/x.service/dbpass", Net: "unix"}
		}, "the random prefix is not 1-16 hex digits"},
		{"no credential", func(r string) *net.UnixAddr { return &net.UnixAddr{Name: "@" + r + "/unit/x.service", Net: "unix"} }, "no credential name after the unit"},
		{"unknown unit type", func(r string) *net.UnixAddr {
			return &net.UnixAddr{Name: "@" + r + "/unit/x.exe/dbpass", Net: "unix"}
		}, `unit: unknown unit type ".exe"`},
		{"slash in credential", func(r string) *net.UnixAddr {
			return &net.UnixAddr{Name: "@" + r + "/unit/x.service/a/b", Net: "unix"}
		}, "credential: invalid byte 0x2f"},
		{"empty credential", func(r string) *net.UnixAddr {
			return &net.UnixAddr{Name: "@" + r + "/unit/x.service/", Net: "unix"}
		}, "credential: empty"},
		{"control character", func(r string) *net.UnixAddr {
			return &net.UnixAddr{Name: "@" + r + "/unit/x.service/a\x00b", Net: "unix"}
		}, "credential: invalid byte 0x00"},
		{"NUL after a valid name", func(r string) *net.UnixAddr {
			return &net.UnixAddr{Name: "@" + r + "/unit/x.service/dbpass\x00.service", Net: "unix"}
		}, "credential: invalid byte 0x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := peerOf(t, tc.laddr(randomHex(t, 16)))
			_, _, err := CredentialPeer(c)
			if !errors.Is(err, ErrNotCredentialPeer) {
				t.Fatalf("err = %v, want ErrNotCredentialPeer", err)
			}
			if !strings.HasSuffix(err.Error(), tc.want) {
				t.Fatalf("err = %q, want it to end in %q", err, tc.want)
			}
		})
	}
}

func TestCredentialPeerNil(t *testing.T) {
	if _, _, err := CredentialPeer(nil); !errors.Is(err, ErrNotCredentialPeer) {
		t.Fatalf("err = %v", err)
	}
}

// Addresses a socket cannot carry (too long for sun_path) or that are tedious
// to bind are checked on the parser directly.
func TestParseCredentialAddr(t *testing.T) {
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		addr string
		want string // "" = valid
	}{
		{"@0/unit/a.service/b", ""},
		{"@0123456789abcdef/unit/a.b.c.mount/" + strings.Repeat("x", 255), ""},
		{"@ABCDEF/unit/a.service/b", ""},
		{"@", "no /unit/ part"},
		{"@/unit/a.service/b", "the random prefix is not 1-16 hex digits"},
		{"\x00abc/unit/a.service/b", "not an abstract address"},
		{"@abc/unit//b", "unit: empty"},
		{"@abc/unit/" + long + ".service/b", "unit: longer than 255 bytes"},
		{"@abc/unit/.service/b", "unit: no unit type suffix"},
		{"@abc/unit/service/b", "unit: no unit type suffix"},
		{"@abc/unit/a b.service/b", "unit: invalid byte 0x20"},
		{"@abc/unit/a@.service/b", "unit: a template without an instance"},
		{"@abc/unit/@a.service/b", "unit: misplaced '@'"},
		{"@abc/unit/a@b@c.service/b", "unit: misplaced '@'"},
		{"@abc/unit/a.service/" + long, "credential: longer than 255 bytes"},
		{"@abc/unit/a.service/.", `credential: "." is not a file name`},
		{"@abc/unit/a.service/..", `credential: ".." is not a file name`},
		{"@abc/unit/a.service/a:b", "credential: invalid byte 0x3a"},
		{"@abc/unit/a.service/caf\xc3\xa9", "credential: invalid byte 0xc3"},
		{"@abc/unit/a.service/a\x7f", "credential: invalid byte 0x7f"},
	} {
		t.Run(tc.addr[:min(len(tc.addr), 40)], func(t *testing.T) {
			_, _, err := parseCredentialAddr(tc.addr)
			if tc.want == "" {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrNotCredentialPeer) || !strings.HasSuffix(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to end in %q", err, tc.want)
			}
		})
	}
}

func FuzzParseCredentialAddr(f *testing.F) {
	for _, a := range []string{
		"@0123/unit/x.service/dbpass", "@/unit//", "@abc/unit/getty@tty1.service/a b",
		"@abc/unit/foo@.service/x", "@abc/unit/a.service/x/y", "@abc/unit/a.service/x\x00y",
		"@0123456789abcdef/unit/a.socket/..", "@ABC/unit/a.b.c.timer/~", "0123/unit/x.service/p",
		"@xyz/unit/a.service/p", "@abc/unit/@a.service/p", "@abc/unit/a@b@c.service/p",
	} {
		f.Add(a)
	}
	f.Fuzz(func(t *testing.T, a string) {
		unit, name, err := parseCredentialAddr(a)
		if err != nil {
			if unit != "" || name != "" || !errors.Is(err, ErrNotCredentialPeer) {
				t.Fatalf("parseCredentialAddr(%q) = %q, %q, %v", a, unit, name, err)
			}
			// The address is quoted, never written raw into a log line.
			if strings.ContainsAny(err.Error(), "\x00\n\r") {
				t.Fatalf("error %q carries raw control bytes", err)
			}
			return
		}
		if validUnitName(unit) != nil || validCredentialName(name) != nil {
			t.Fatalf("accepted %q as (%q, %q)", a, unit, name)
		}
		// The address is exactly @<hex>/unit/<unit>/<name>: nothing is
		// dropped or added on the way.
		random, ok := strings.CutSuffix(a, "/unit/"+unit+"/"+name)
		if !ok || len(random) < 2 || random[0] != '@' || strings.Trim(random[1:], "0123456789abcdefABCDEF") != "" {
			t.Fatalf("accepted %q as (%q, %q)", a, unit, name)
		}
		if strings.Contains(unit, "/") || strings.ContainsAny(name, "/:\x00") {
			t.Fatalf("accepted %q as (%q, %q)", a, unit, name)
		}
	})
}
