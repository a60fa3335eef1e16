package e2e

// End-to-end tests of bindings and delivery (issue 4): the LoadCredential=
// socket driven exactly as systemd drives it, `coffer deliver` by token and
// by unix uid, the 404 that hides whether a name exists, the bindings API
// and CLI, and the audit trail — with every payload kept out of the log,
// the state directory and every refusal.

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// credsClientEnv makes the test binary act as a LoadCredential= client
// (socket|peer address) and exit: TestLoadCredentialPeerMustBeRoot runs it
// as another uid.
const credsClientEnv = "COFFER_E2E_CREDS_CLIENT"

func init() {
	spec := os.Getenv(credsClientEnv)
	if spec == "" {
		return
	}
	sock, addr, _ := strings.Cut(spec, "|")
	b, err := dialCredential(sock, addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "creds client:", err)
		os.Exit(1)
	}
	fmt.Print(hex.EncodeToString(b))
	os.Exit(0)
}

// dialCredential does what systemd's LoadCredential= does with a socket:
// bind the client to addr (an abstract "@..." name; none when empty),
// connect, shut down the write side and read to EOF.
func dialCredential(sock, addr string) ([]byte, error) {
	var laddr *net.UnixAddr
	if addr != "" {
		laddr = &net.UnixAddr{Name: addr, Net: "unix"}
	}
	c, err := net.DialUnix("unix", laddr, &net.UnixAddr{Name: sock, Net: "unix"})
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if err := c.SetDeadline(time.Now().Add(15 * time.Second)); err != nil {
		return nil, err
	}
	if err := c.CloseWrite(); err != nil {
		return nil, err
	}
	return io.ReadAll(io.LimitReader(c, 2<<20))
}

// systemdAddr is the abstract address systemd binds its client to:
// "\0<random hex>/unit/<unit>/<credential>" (a random 64-bit number
// printed with %x, so 1-16 digits).
func systemdAddr(unit, cred string) string {
	return "@" + strconv.FormatUint(mrand.Uint64(), 16) + "/unit/" + unit + "/" + cred
}

// loadCred reads one credential from the LoadCredential= socket.
func loadCred(t *testing.T, sock, addr string) []byte {
	t.Helper()
	b, err := dialCredential(sock, addr)
	if err != nil {
		t.Fatalf("LoadCredential from %s as %q: %v", sock, addr, err)
	}
	return b
}

// binaryPayload is a distinctive canary followed by bytes that text
// handling would mangle: NULs, a newline, 0xff.
func binaryPayload(prefix string) (payload []byte, marker string) {
	marker = canary(prefix)
	return append([]byte(marker), 0, 1, 0, '\n', 0xff, 0xfe, 0, '\r', 0), marker
}

// payloadNeedles are the forms in which a binary payload could leak.
func payloadNeedles(what string, payload []byte, marker string) []needle {
	return []needle{{what, marker}, {what + " (base64)", b64(payload)}, {what + " (hex)", hex.EncodeToString([]byte(marker))}}
}

// bind creates a binding over HTTP and checks the 201 answer.
func (d *daemonProc) bind(t *testing.T, secretID string, body map[string]string) api.Binding {
	t.Helper()
	var b api.Binding
	res := d.mustAPI(t, "POST", "/v1/secrets/"+secretID+"/bindings", body, http.StatusCreated, &b)
	if b.ID == "" || b.SecretID != secretID {
		t.Errorf("binding %+v: want an id and secret_id %s", b, secretID)
	}
	if loc := res.header.Get("Location"); loc != "/v1/secrets/"+secretID+"/bindings/"+b.ID {
		t.Errorf("Location = %q, want /v1/secrets/%s/bindings/%s", loc, secretID, b.ID)
	}
	return b
}

// logLines returns the lines of log that contain every one of parts.
func logLines(log string, parts ...string) []string {
	var out []string
	for _, line := range strings.Split(log, "\n") {
		ok := true
		for _, p := range parts {
			ok = ok && strings.Contains(line, p)
		}
		if ok {
			out = append(out, line)
		}
	}
	return out
}

// waitLog waits until the daemon's log has a line with every part (the
// log reaches us through a pipe, a little after the event) and returns it.
func (d *daemonProc) waitLog(t *testing.T, what string, parts ...string) string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if l := logLines(d.stderr.String(), parts...); len(l) > 0 {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Errorf("no log line for %s (want one containing %q)\ndaemon log (end):\n%s", what, parts, logTail(d.stderr.String(), 30))
			return ""
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// logTail is the last n lines of log.
func logTail(log string, n int) string {
	lines := strings.Split(strings.TrimRight(log, "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{"..."}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// TestLoadCredentialDelivery drives the LoadCredential= socket exactly as
// systemd does: bound (unit, credential) pairs get their payload byte for
// byte; anything else gets zero bytes; rotation, unbinding and revocation
// take effect at once; every delivery and refusal is audited; no payload
// reaches the log or the state directory.
func TestLoadCredentialDelivery(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t), "--log-level", "debug")
	sock := filepath.Join(d.stateDir, "creds.sock")
	fi, err := os.Lstat(sock)
	if err != nil {
		t.Fatalf("dev creds socket: %v", err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
		t.Errorf("creds socket %s mode %v, want srw-------", sock, fi.Mode())
	}

	p1, m1 := binaryPayload("LCPAYLOAD1-")
	p2, m2 := binaryPayload("LCPAYLOAD2-")
	p3, m3 := binaryPayload("LCPAYLOAD3-")
	var needles []needle
	needles = append(needles, payloadNeedles("payload 1", p1, m1)...)
	needles = append(needles, payloadNeedles("payload 2", p2, m2)...)
	needles = append(needles, payloadNeedles("payload 3", p3, m3)...)

	tls := d.createSecret(t, "default", "tls", p1, nil)
	db := d.createSecret(t, "default", "db", p3, nil)
	d.bind(t, tls.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"})
	dbBinding := d.bind(t, db.ID, map[string]string{"unit": "web@blue.service", "credential": "db.pass"})

	if got := loadCred(t, sock, systemdAddr("nginx.service", "tls-key")); !bytes.Equal(got, p1) {
		t.Errorf("bound nginx.service/tls-key: got %q, want %q", got, p1)
	}
	if got := loadCred(t, sock, systemdAddr("web@blue.service", "db.pass")); !bytes.Equal(got, p3) {
		t.Errorf("bound template instance web@blue.service/db.pass: got %q, want %q", got, p3)
	}
	// The largest payload the API takes (the 8 KiB body limit leaves about
	// 6 KiB of raw bytes, so systemd's 1 MiB limit cannot be reached end to
	// end) arrives whole, every byte value included.
	big := make([]byte, 6000)
	for i := range big {
		big[i] = byte(i * 7)
	}
	bigS := d.createSecret(t, "default", "big", big, nil)
	d.bind(t, bigS.ID, map[string]string{"unit": "big.service", "credential": "blob"})
	if got := loadCred(t, sock, systemdAddr("big.service", "blob")); !bytes.Equal(got, big) {
		t.Errorf("6000-byte payload: got %d bytes, want %d (equal: %v)", len(got), len(big), bytes.Equal(got, big))
	}
	// the shortest and longest random prefixes systemd can produce
	for _, random := range []string{"0", "ffffffffffffffff"} {
		if got := loadCred(t, sock, "@"+random+"/unit/nginx.service/tls-key"); !bytes.Equal(got, p1) {
			t.Errorf("random prefix %q: got %q, want the payload", random, got)
		}
	}

	// A directory tree so that a filesystem (non-abstract) client address
	// can spell /unit/nginx.service/tls-key too.
	fsAddrDir := filepath.Join(workDir(t), "abc", "unit", "nginx.service")
	if err := os.MkdirAll(fsAddrDir, 0o700); err != nil {
		t.Fatal(err)
	}
	malformed := []struct{ what, addr string }{
		{"unbound credential of a bound unit", systemdAddr("nginx.service", "other")},
		{"unknown unit", systemdAddr("apache.service", "tls-key")},
		{"credential bound to another unit", systemdAddr("nginx.service", "db.pass")},
		{"template without the instance", systemdAddr("web@.service", "db.pass")},
		{"malformed: no /unit/", "@" + strconv.FormatUint(mrand.Uint64(), 16) + "/nginx.service/tls-key"},
		{"malformed: no credential", "@abc/unit/nginx.service"},
		{"malformed: random part not hex", "@xyz/unit/nginx.service/tls-key"},
		{"malformed: random part over 16 digits", "@12345678901234567/unit/nginx.service/tls-key"},
		{"malformed: no random part", "@/unit/nginx.service/tls-key"},
		{"filesystem, not abstract, address", filepath.Join(fsAddrDir, "tls-key")},
		{"plain unnamed client socket", ""},
	}
	for _, c := range malformed {
		if got := loadCred(t, sock, c.addr); len(got) != 0 {
			t.Errorf("%s (%q): got %d bytes %q, want zero bytes", c.what, c.addr, len(got), got)
		}
	}

	// many units at once (systemd starts units in parallel)
	var wg sync.WaitGroup
	errs := make(chan error, 32)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, err := dialCredential(sock, systemdAddr("nginx.service", "tls-key"))
			if err == nil && !bytes.Equal(got, p1) {
				err = fmt.Errorf("got %q", got)
			}
			if err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent LoadCredential: %v", err)
	}

	// audit: delivered with secret id, version and channel; refusals say why
	d.waitAudit(t, "the delivery to nginx.service", "loadcredential", "ok", map[string]string{"unit": "nginx.service", "credential": "tls-key", "secret": tls.ID, "version": "1"}, "")
	d.waitAudit(t, "the delivery to web@blue.service", "loadcredential", "ok", map[string]string{"unit": "web@blue.service", "credential": "db.pass", "secret": db.ID}, "")
	d.waitAudit(t, "the unbound credential", "loadcredential", "denied", map[string]string{"unit": "nginx.service", "credential": "other"}, "not bound")
	d.waitAudit(t, "the unknown unit", "loadcredential", "denied", map[string]string{"unit": "apache.service", "credential": "tls-key"}, "not bound")
	// rotation: the next read is the new payload, audited as version 2
	d.rotateSecret(t, tls.ID, p2, 1)
	if got := loadCred(t, sock, systemdAddr("nginx.service", "tls-key")); !bytes.Equal(got, p2) {
		t.Errorf("after rotation: got %q, want %q", got, p2)
	}
	d.waitAudit(t, "the delivery of version 2", "loadcredential", "ok", map[string]string{"unit": "nginx.service", "secret": tls.ID, "version": "2"}, "")

	// unbinding: zero bytes at once
	d.mustAPI(t, "DELETE", "/v1/secrets/"+db.ID+"/bindings/"+dbBinding.ID, nil, http.StatusNoContent, nil)
	if got := loadCred(t, sock, systemdAddr("web@blue.service", "db.pass")); len(got) != 0 {
		t.Errorf("after unbind: got %q, want zero bytes", got)
	}

	// revocation: zero bytes at once, and the refusal says why
	d.mustAPI(t, "POST", "/v1/secrets/"+tls.ID+"/revoke", nil, http.StatusOK, nil)
	if got := loadCred(t, sock, systemdAddr("nginx.service", "tls-key")); len(got) != 0 {
		t.Errorf("after revoke: got %q, want zero bytes", got)
	}
	d.waitAudit(t, "the refusal of a revoked secret", "loadcredential", "denied", map[string]string{"unit": "nginx.service", "credential": "tls-key"}, "revoked")

	// Issue 4: "Every delivery and every refused attempt is an audit event".
	// A client that is not systemd (a malformed or non-abstract address) is
	// a refused attempt too: it must be findable among the audit lines, not
	// only as an ordinary warning. (The log is flushed past these by now.)
	var missing []string
	for _, c := range malformed[3:] {
		if c.addr != "" && len(logLines(d.stderr.String(), "audit:", "refused", c.addr)) == 0 {
			missing = append(missing, c.what)
		}
	}
	if len(missing) > 0 {
		t.Errorf("no audit line for these refused LoadCredential= clients: %s\nwhat was logged:\n%s",
			strings.Join(missing, "; "), strings.Join(logLines(d.stderr.String(), "credential socket"), "\n"))
	}

	d.Stop(t)
	if _, err := os.Lstat(sock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("creds socket left behind after shutdown: %v", err)
	}
	scanText(t, "daemon log", []byte(d.stderr.String()), needles)
	scanText(t, "daemon stdout", []byte(d.stdout.String()), needles)
	if files, _ := scanTree(t, d.stateDir, needles); files == 0 {
		t.Errorf("no state files scanned under %s", d.stateDir)
	}
}

// TestLoadCredentialPeerMustBeRoot: only root (systemd) may read from the
// LoadCredential= socket (in --dev also the daemon's own uid); another uid
// that reaches the socket, with a well-formed address, gets zero bytes.
func TestLoadCredentialPeerMustBeRoot(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to connect as another uid")
	}
	t.Parallel()
	pub := publicDir(t)
	client := filepath.Join(pub, "e2e.test")
	copyFile(t, os.Args[0], client, 0o755)
	sock := filepath.Join(pub, "creds.sock")
	d := startDaemon(t, workDir(t), "--creds-socket", sock)
	fi, err := os.Lstat(sock)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("--creds-socket %s: %v %v, want mode 0600", sock, fi.Mode(), err)
	}
	payload, marker := binaryPayload("PEERPAYLOAD-")
	s := d.createSecret(t, "default", "peer", payload, nil)
	d.bind(t, s.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"})
	if got := loadCred(t, sock, systemdAddr("nginx.service", "tls-key")); !bytes.Equal(got, payload) {
		t.Fatalf("root: got %q, want the payload", got)
	}
	// Open the socket file up so that only the peer check stands in the way.
	if err := os.Chmod(sock, 0o666); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(client, "-test.run=^$")
	cmd.Env = cleanEnv(credsClientEnv + "=" + sock + "|" + systemdAddr("nginx.service", "tls-key"))
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4242, Gid: 4242}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("client as uid 4242: %v\n%s", err, errb.String())
	}
	if out.Len() != 0 {
		t.Errorf("uid 4242 read %q (hex) from the creds socket, want zero bytes", out.String())
	}
	d.waitLog(t, "the refused uid", "refused", "uid=4242")
	d.Stop(t)
	scanText(t, "daemon log", []byte(d.stderr.String()), payloadNeedles("payload", payload, marker))
}

// publicDir is a fresh 0755 directory other uids can enter.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "cofpub-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// cliAs runs the CLI binary bin with env, as uid (when uid >= 0), and
// returns raw stdout (payloads are bytes, not text).
func cliAs(t *testing.T, bin string, uid int, env []string, args ...string) (code int, stdout []byte, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = os.TempDir()
	if uid >= 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(uid)}}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run coffer %v as uid %d: %v", args, uid, err)
	}
	return code, out.Bytes(), errb.String()
}

// TestDeliverToBoundUser: `coffer deliver` and GET /v1/deliver/{name} hand
// the raw payload to the user it is bound to — by its token, or (as root
// can test) by its unix uid — and a 404 of one shape to everyone else,
// admin included, whether or not the name exists.
func TestDeliverToBoundUser(t *testing.T) {
	t.Parallel()
	root := os.Geteuid() == 0
	pub := publicDir(t)
	bin := filepath.Join(pub, "coffer")
	copyFile(t, cofferBin, bin, 0o755)
	sock := filepath.Join(pub, "c.sock")
	d := startDaemon(t, workDir(t), "--socket", sock, "--socket-mode", "0666", "--log-level", "debug")

	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "vm-web", "kind": "workload", "unix_uids": []int{4242}}, http.StatusCreated, nil)
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "vm-db", "kind": "workload", "unix_uids": []int{4343}}, http.StatusCreated, nil)
	d.setRole(t, "default", "vm-web", "reader")
	d.setRole(t, "default", "vm-db", "reader")
	tokWeb := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "vm-web"}).Token
	tokDB := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "vm-db"}).Token
	// a token whose access rules do not cover /v1/deliver
	tokRuled := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "vm-web",
		"access_rules": []map[string]any{{"service": "coffer", "method": "GET", "path": "/v1/projects/**"}}}).Token

	pWeb, mWeb := binaryPayload("WEBPAYLOAD-")
	pWeb2, mWeb2 := binaryPayload("WEBPAYLOAD2-")
	pDB, mDB := binaryPayload("DBPAYLOAD-")
	pOnly, mOnly := binaryPayload("ONLYPAYLOAD-")
	var needles []needle
	for _, n := range []struct {
		what string
		p    []byte
		m    string
	}{{"vm-web payload", pWeb, mWeb}, {"rotated vm-web payload", pWeb2, mWeb2}, {"vm-db payload", pDB, mDB}, {"web-only payload", pOnly, mOnly}} {
		needles = append(needles, payloadNeedles(n.what, n.p, n.m)...)
	}
	sWeb := d.createSecret(t, "default", "web-db-password", pWeb, nil)
	sDB := d.createSecret(t, "default", "db-db-password", pDB, nil)
	sOnly := d.createSecret(t, "default", "web-only", pOnly, nil)
	d.bind(t, sWeb.ID, map[string]string{"user": "vm-web", "name": "dbpass"})
	d.bind(t, sDB.ID, map[string]string{"user": "vm-db", "name": "dbpass"}) // same name, other user
	onlyB := d.bind(t, sOnly.ID, map[string]string{"user": "vm-web", "name": "web-only"})

	var refusals [][]byte // every 404 body, scanned for payloads at the end
	deliverHTTP := func(tok, name string, want []byte) {
		t.Helper()
		res := d.bearer(t, tok, "GET", "/v1/deliver/"+name, nil)
		if res.status != http.StatusOK {
			t.Fatalf("deliver %s (bearer %s): status %d: %s", name, tokenKind(tok), res.status, res.body)
		}
		if ct := res.header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("deliver %s: Content-Type %q, want application/octet-stream", name, ct)
		}
		if !bytes.Equal(res.body, want) {
			t.Errorf("deliver %s (bearer %s): got %q, want %q", name, tokenKind(tok), res.body, want)
		}
	}
	notFound := func(who, tok, name string) []byte {
		t.Helper()
		res := d.bearer(t, tok, "GET", "/v1/deliver/"+name, nil)
		wantError(t, res, http.StatusNotFound, "not_found")
		refusals = append(refusals, res.body)
		if t.Failed() {
			t.Logf("(that was %s asking for %q)", who, name)
		}
		return res.body
	}

	// by token, over HTTP: each user gets its own "dbpass"
	deliverHTTP(tokWeb, "dbpass", pWeb)
	deliverHTTP(tokDB, "dbpass", pDB)
	deliverHTTP(tokWeb, "web-only", pOnly)

	// 404 of one shape for everyone else, admin included, existing or not
	adminOnly := notFound("the system admin", "", "web-only")
	otherOnly := notFound("another user's token", tokDB, "web-only")
	ruledOnly := notFound("a token whose rules do not allow it", tokRuled, "web-only")
	adminMissing := notFound("the system admin", "", "no-such-name")
	webMissing := notFound("the user itself, for an unknown name", tokWeb, "no-such-name")
	for _, c := range []struct {
		what      string
		got, want []byte
	}{
		{"other user's token vs admin", otherOnly, adminOnly},
		{"restricted token vs admin", ruledOnly, adminOnly},
		{"unknown name: user vs admin", webMissing, adminMissing},
		{"unknown name vs existing name", bytes.ReplaceAll(adminMissing, []byte("no-such-name"), []byte("web-only")), adminOnly},
	} {
		if !bytes.Equal(c.got, c.want) {
			t.Errorf("404 bodies differ (%s): %s vs %s", c.what, c.got, c.want)
		}
	}

	// the CLI with COFFER_TOKEN: raw bytes on stdout, or -o FILE
	tokEnv := func(tok string) []string { return []string{"COFFER_SOCKET=" + sock, "COFFER_TOKEN=" + tok} }
	if code, out, errs := cliAs(t, bin, -1, tokEnv(tokWeb), "deliver", "dbpass"); code != 0 || !bytes.Equal(out, pWeb) {
		t.Errorf("coffer deliver dbpass (COFFER_TOKEN): exit %d, stdout %q, want %q; stderr %s", code, out, pWeb, errs)
	}
	outDir := workDir(t)
	outFile := filepath.Join(outDir, "dbpass")
	if err := os.WriteFile(outFile, []byte("old content, world-readable"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := cliAs(t, bin, -1, tokEnv(tokDB), "deliver", "dbpass", "--out", outFile); code != 0 || len(out) != 0 {
		t.Errorf("coffer deliver --out: exit %d, stdout %q, stderr %s", code, out, errs)
	}
	checkFile0600(t, outFile, pDB)
	// -o is the output format everywhere: deliver's old -o FILE points
	// to --out and writes nothing.
	if code, out, errs := cliAs(t, bin, -1, tokEnv(tokDB), "deliver", "dbpass", "-o", outFile+".old"); code != 2 || len(out) != 0 || !strings.Contains(errs, "--out FILE") {
		t.Errorf("coffer deliver -o FILE: exit %d, stdout %q, stderr %s; want exit 2 pointing to --out", code, out, errs)
	}
	if code, out, errs := cliAs(t, bin, -1, tokEnv(tokDB), "deliver", "web-only"); code != 1 || len(out) != 0 || !strings.Contains(errs, "(not_found)") {
		t.Errorf("coffer deliver of another user's name: exit %d, stdout %q, stderr %s; want exit 1 (not_found)", code, out, errs)
	}
	if entries, _ := os.ReadDir(outDir); len(entries) != 1 {
		t.Errorf("coffer deliver --out left files behind: %v", entries)
	}

	if root {
		// by unix uid (SO_PEERCRED), no token at all
		as := func(uid int, args ...string) (int, []byte, string) {
			t.Helper()
			return cliAs(t, bin, uid, []string{"HOME=" + pub}, append([]string{"--socket", sock}, args...)...)
		}
		if code, out, errs := as(4242, "deliver", "dbpass"); code != 0 || !bytes.Equal(out, pWeb) {
			t.Errorf("uid 4242 (vm-web): exit %d, stdout %q, want %q; %s", code, out, pWeb, errs)
		}
		if code, out, errs := as(4343, "deliver", "dbpass"); code != 0 || !bytes.Equal(out, pDB) {
			t.Errorf("uid 4343 (vm-db): exit %d, stdout %q, want %q; %s", code, out, pDB, errs)
		}
		uidDir := filepath.Join(pub, "home4242")
		if err := os.Mkdir(uidDir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(uidDir, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		f := filepath.Join(uidDir, "web-only")
		if code, _, errs := as(4242, "deliver", "web-only", "--out", f); code != 0 {
			t.Errorf("uid 4242 deliver --out: exit %d %s", code, errs)
		}
		checkFile0600(t, f, pOnly)
		if fi, err := os.Stat(f); err == nil && fi.Sys().(*syscall.Stat_t).Uid != 4242 {
			t.Errorf("%s owned by uid %d, want 4242 (the caller)", f, fi.Sys().(*syscall.Stat_t).Uid)
		}
		// not bound to this user, not bound to any user, unknown name:
		// the same exit code and message
		code1, out1, err1 := as(4343, "deliver", "web-only")
		code2, out2, err2 := as(4444, "deliver", "web-only")
		code3, out3, err3 := as(4242, "deliver", "nothing-here")
		for _, r := range []struct {
			who  string
			code int
			out  []byte
			err  string
		}{{"uid 4343 (another user)", code1, out1, err1}, {"uid 4444 (unbound)", code2, out2, err2}, {"uid 4242, unknown name", code3, out3, err3}} {
			if r.code != 1 || len(r.out) != 0 || !strings.Contains(r.err, "(not_found)") {
				t.Errorf("%s: exit %d, stdout %q, stderr %q; want exit 1 (not_found)", r.who, r.code, r.out, r.err)
			}
		}
		if err1 != err2 || strings.ReplaceAll(err3, "nothing-here", "web-only") != err1 {
			t.Errorf("refusals differ:\n%q\n%q\n%q", err1, err2, err3)
		}
		d.waitAudit(t, "the delivery by uid", "deliver", "ok", map[string]string{"binding": onlyB.ID, "secret": sOnly.ID}, "")
		d.waitAuditBy(t, "the refused unbound uid", "deliver", "denied", nil, "not a user", map[string]any{"uid": float64(4444)})
	}

	// audit lines: who, what secret and version, which channel
	if e := d.waitAudit(t, "the delivery by token", "deliver", "ok", map[string]string{"secret": sWeb.ID, "version": "1"}, ""); e.Principal["channel"] != "unix" || e.Principal["session"] == nil {
		t.Errorf("the delivery's principal %v: want the channel and the token's session", e.Principal)
	}
	d.waitAudit(t, "the refusal of vm-db", "deliver", "denied", nil, "no binding")

	// rotation: the new payload at once
	d.rotateSecret(t, sWeb.ID, pWeb2, 1)
	deliverHTTP(tokWeb, "dbpass", pWeb2)
	d.waitAudit(t, "the delivery of version 2", "deliver", "ok", map[string]string{"secret": sWeb.ID, "version": "2"}, "")

	// unbinding and revocation: the same 404 as a name that never existed
	d.mustAPI(t, "DELETE", "/v1/secrets/"+sOnly.ID+"/bindings/"+onlyB.ID, nil, http.StatusNoContent, nil)
	if b := notFound("vm-web after unbind", tokWeb, "web-only"); !bytes.Equal(b, adminOnly) {
		t.Errorf("after unbind: %s, want %s", b, adminOnly)
	}
	d.mustAPI(t, "POST", "/v1/secrets/"+sWeb.ID+"/revoke", nil, http.StatusOK, nil)
	if b := notFound("vm-web after revoke", tokWeb, "dbpass"); !bytes.Equal(b, bytes.ReplaceAll(adminOnly, []byte("web-only"), []byte("dbpass"))) {
		t.Errorf("after revoke: %s", b)
	}
	deliverHTTP(tokDB, "dbpass", pDB) // the other user's binding is untouched

	d.Stop(t)
	for i, b := range refusals {
		scanText(t, "404 body #"+itoa(i), b, needles)
	}
	scanText(t, "daemon log", []byte(d.stderr.String()), needles)
	scanText(t, "daemon stdout", []byte(d.stdout.String()), needles)
	scanTree(t, d.stateDir, needles)
}

// checkFile0600 asserts path holds exactly want and is private.
func checkFile0600(t *testing.T, path string, want []byte) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Errorf("delivered file: %v", err)
		return
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("%s mode %v, want -rw-------", path, fi.Mode())
	}
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s holds %q, want %q", path, got, want)
	}
}

// TestBindingsAPI covers POST/GET/DELETE /v1/secrets/{id}/bindings: both
// kinds, uniqueness, validation, who may manage them, and what revoking or
// deleting the secret does to them.
func TestBindingsAPI(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "vm-web")
	d.newUser(t, "vm-db")
	d.setRole(t, "default", "vm-web", "reader")
	d.setRole(t, "default", "vm-db", "reader")
	s1 := d.createSecret(t, "default", "one", []byte("one"), nil)
	s2 := d.createSecret(t, "default", "two", []byte("two"), nil)
	post := func(id string, body any) apiResp {
		t.Helper()
		return d.api(t, "POST", "/v1/secrets/"+id+"/bindings", body)
	}

	unitB := d.bind(t, s1.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"})
	if unitB.Kind != "unit" || unitB.Unit != "nginx.service" || unitB.Credential != "tls-key" || unitB.User != "" || unitB.Name != "" {
		t.Errorf("unit binding: %+v", unitB)
	}
	userB := d.bind(t, s1.ID, map[string]string{"user": "vm-web", "name": "dbpass"})
	if userB.Kind != "user" || userB.User != "vm-web" || userB.UserID == "" || userB.Name != "dbpass" || userB.Unit != "" {
		t.Errorf("user binding: %+v", userB)
	}
	if unitB.CreatedAt.IsZero() || unitB.CreatedAt.Location() != time.UTC {
		t.Errorf("created_at %v, want RFC 3339 UTC", unitB.CreatedAt)
	}
	var l list[api.Binding]
	d.mustAPI(t, "GET", "/v1/secrets/"+s1.ID+"/bindings", nil, http.StatusOK, &l)
	ids := map[string]api.Binding{}
	for _, b := range l.Items {
		ids[b.ID] = b
	}
	if len(l.Items) != 2 || ids[unitB.ID] != unitB || ids[userB.ID] != userB {
		t.Errorf("bindings of s1: %+v, want %+v and %+v", l.Items, unitB, userB)
	}
	d.mustAPI(t, "GET", "/v1/secrets/"+s2.ID+"/bindings", nil, http.StatusOK, &l)
	if len(l.Items) != 0 {
		t.Errorf("bindings of s2: %+v, want none", l.Items)
	}

	// a unit credential and a user's name are taken once, across secrets
	wantError(t, post(s2.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"}), http.StatusConflict, "already_exists")
	wantError(t, post(s2.ID, map[string]string{"user": "vm-web", "name": "dbpass"}), http.StatusConflict, "already_exists")
	wantError(t, post(s1.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"}), http.StatusConflict, "already_exists")
	// but the same unit under another credential, or the same name for
	// another user, is fine
	d.bind(t, s2.ID, map[string]string{"unit": "nginx.service", "credential": "tls-cert"})
	d.bind(t, s2.ID, map[string]string{"user": "vm-db", "name": "dbpass"})
	d.bind(t, s2.ID, map[string]string{"unit": "web@blue.service", "credential": "tls-key"})

	for _, bad := range []struct {
		body any
		code string
	}{
		{map[string]string{}, "invalid_binding"},
		{map[string]string{"unit": "nginx.service"}, "invalid_binding"},
		{map[string]string{"credential": "tls-key"}, "invalid_binding"},
		{map[string]string{"unit": "nginx", "credential": "tls-key"}, "invalid_binding"},
		{map[string]string{"unit": "nginx.bogus", "credential": "tls-key"}, "invalid_binding"},
		{map[string]string{"unit": "ngi nx.service", "credential": "tls-key"}, "invalid_binding"},
		{map[string]string{"unit": "../x.service", "credential": "tls-key"}, "invalid_binding"},
		{map[string]string{"unit": "nginx.service", "credential": "a/b"}, "invalid_binding"},
		{map[string]string{"unit": "nginx.service", "credential": "sp ace"}, "invalid_binding"},
		{map[string]string{"unit": "nginx.service", "credential": strings.Repeat("k", 256)}, "invalid_binding"},
		{map[string]string{"unit": "nginx.service", "name": "tls-key"}, "invalid_binding"},
		{map[string]string{"unit": "nginx.service", "credential": "x", "user": "vm-web"}, "invalid_binding"},
		{map[string]string{"user": "vm-web", "name": "x", "credential": "y"}, "invalid_binding"},
		{map[string]string{"user": "vm-web"}, "invalid_binding"},
		{map[string]string{"user": "vm-web", "name": "../etc"}, "invalid_binding"},
		{map[string]string{"name": "dbpass"}, "invalid_binding"},
		{`{"unit":"nginx.service","credential":"x","extra":1}`, "invalid_json"},
		{`{"unit":"nginx.service",`, "invalid_json"},
		{`["nginx.service"]`, "invalid_json"},
	} {
		res := post(s2.ID, bad.body)
		wantError(t, res, http.StatusBadRequest, bad.code)
		if t.Failed() {
			t.Fatalf("body %v", bad.body)
		}
	}
	wantError(t, post(s2.ID, map[string]string{"user": "ghost", "name": "x"}), http.StatusNotFound, "not_found")
	wantError(t, post("0190a0a0-0000-7000-8000-000000000000", map[string]string{"unit": "a.service", "credential": "x"}), http.StatusNotFound, "not_found")
	wantError(t, d.api(t, "GET", "/v1/secrets/0190a0a0-0000-7000-8000-000000000000/bindings", nil), http.StatusNotFound, "not_found")

	// deleting: 204, then 404; a binding of another secret is not reachable
	// through this one
	d.mustAPI(t, "DELETE", "/v1/secrets/"+s1.ID+"/bindings/"+unitB.ID, nil, http.StatusNoContent, nil)
	wantError(t, d.api(t, "DELETE", "/v1/secrets/"+s1.ID+"/bindings/"+unitB.ID, nil), http.StatusNotFound, "not_found")
	wantError(t, d.api(t, "DELETE", "/v1/secrets/"+s2.ID+"/bindings/"+userB.ID, nil), http.StatusNotFound, "not_found")
	wantError(t, d.api(t, "DELETE", "/v1/secrets/"+s1.ID+"/bindings/not-an-id", nil), http.StatusNotFound, "not_found")
	d.mustAPI(t, "GET", "/v1/secrets/"+s1.ID+"/bindings", nil, http.StatusOK, &l)
	if len(l.Items) != 1 || l.Items[0].ID != userB.ID {
		t.Errorf("after delete: %+v, want only %s", l.Items, userB.ID)
	}
	// the freed unit credential can be bound again
	d.bind(t, s2.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"})

	// who may manage bindings: the manage relation (project admin)
	for _, role := range []string{"reader", "member"} {
		name := "as-" + role
		d.newUser(t, name)
		d.setRole(t, "default", name, role)
		tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": name}).Token
		wantError(t, d.bearer(t, tok, "POST", "/v1/secrets/"+s1.ID+"/bindings", map[string]string{"unit": "x.service", "credential": "y"}), http.StatusForbidden, "forbidden")
		wantError(t, d.bearer(t, tok, "DELETE", "/v1/secrets/"+s1.ID+"/bindings/"+userB.ID, nil), http.StatusForbidden, "forbidden")
	}
	d.newUser(t, "proj-admin")
	d.setRole(t, "default", "proj-admin", "admin")
	// A binding is a management write: an admin's token makes one only
	// when it was created unrestricted.
	restrictedTok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "proj-admin"}).Token
	wantError(t, d.bearer(t, restrictedTok, "POST", "/v1/secrets/"+s1.ID+"/bindings", map[string]string{"user": "proj-admin", "name": "mine"}), http.StatusForbidden, "forbidden")
	adminTok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "proj-admin", "unrestricted": true}).Token
	d.mustBearer(t, adminTok, "POST", "/v1/secrets/"+s1.ID+"/bindings", map[string]string{"user": "proj-admin", "name": "mine"}, http.StatusCreated, nil)
	// Units are the host's, not a project's: only a system admin binds them.
	wantError(t, d.bearer(t, adminTok, "POST", "/v1/secrets/"+s1.ID+"/bindings", map[string]string{"unit": "x.service", "credential": "y"}), http.StatusForbidden, "forbidden")

	// a revoked secret takes no new bindings
	d.mustAPI(t, "POST", "/v1/secrets/"+s1.ID+"/revoke", nil, http.StatusOK, nil)
	wantError(t, post(s1.ID, map[string]string{"unit": "z.service", "credential": "z"}), http.StatusConflict, "secret_revoked")

	// deleting a secret frees its bindings
	d.mustAPI(t, "DELETE", "/v1/secrets/"+s2.ID, nil, http.StatusNoContent, nil)
	s3 := d.createSecret(t, "default", "three", []byte("three"), nil)
	d.bind(t, s3.ID, map[string]string{"unit": "nginx.service", "credential": "tls-key"})
	d.bind(t, s3.ID, map[string]string{"user": "vm-db", "name": "dbpass"})
}

// TestBindCLI: coffer secret bind/unbind, and the bindings in the table
// output of coffer secret get.
func TestBindCLI(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t))
	d.newUser(t, "vm-web")
	d.setRole(t, "default", "vm-web", "reader")
	s := d.createSecret(t, "default", "cli", []byte("cli payload"), nil)

	r := d.mustCLI(t, "", "secret", "bind", s.ID, "--unit", "nginx.service", "--as", "tls-key")
	if !strings.Contains(r.stdout, "nginx.service") || !strings.Contains(r.stdout, "tls-key") {
		t.Errorf("bind output does not show the binding:\n%s", r)
	}
	var ub api.Binding
	r = d.mustCLI(t, "", "-o", "json", "secret", "bind", s.ID, "--user", "vm-web", "--as", "dbpass")
	if err := json.Unmarshal([]byte(r.stdout), &ub); err != nil || ub.Kind != "user" || ub.User != "vm-web" || ub.Name != "dbpass" {
		t.Errorf("bind -o json: %+v %v\n%s", ub, err, r)
	}
	var l list[api.Binding]
	d.mustAPI(t, "GET", "/v1/secrets/"+s.ID+"/bindings", nil, http.StatusOK, &l)
	if len(l.Items) != 2 {
		t.Fatalf("bindings after CLI bind: %+v", l.Items)
	}
	var unitID string
	for _, b := range l.Items {
		if b.Kind == "unit" {
			unitID = b.ID
			if b.Unit != "nginx.service" || b.Credential != "tls-key" {
				t.Errorf("unit binding from the CLI: %+v", b)
			}
		}
	}

	// the table output of secret get lists both, one row each
	r = d.mustCLI(t, "", "secret", "get", s.ID)
	rows := map[string]string{}
	for _, line := range strings.Split(r.stdout, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = line
		}
	}
	if _, ok := rows["BINDING"]; !ok {
		t.Errorf("secret get shows no BINDING header:\n%s", r.stdout)
	}
	if row := rows[unitID]; !strings.Contains(row, "nginx.service") || !strings.Contains(row, "tls-key") {
		t.Errorf("secret get: unit binding row %q\n%s", row, r.stdout)
	}
	if row := rows[ub.ID]; !strings.Contains(row, "vm-web") || !strings.Contains(row, "dbpass") {
		t.Errorf("secret get: user binding row %q\n%s", row, r.stdout)
	}
	if !strings.Contains(r.stdout, s.ID) || strings.Contains(r.stdout, "cli payload") {
		t.Errorf("secret get output:\n%s", r.stdout)
	}
	// json and yaml stay one document: the secret, decodable strictly
	for _, format := range []string{"json", "yaml"} {
		var got secret
		decodeOutput(t, format, d.mustCLI(t, "", "-o", format, "secret", "get", s.ID).stdout, &got)
		if got.ID != s.ID {
			t.Errorf("-o %s secret get: id %q", format, got.ID)
		}
	}

	// errors: taken → 1 (already_exists); wrong usage → 2
	if r := d.cli(t, "", "secret", "bind", s.ID, "--unit", "nginx.service", "--as", "tls-key"); r.code != 1 || !strings.Contains(r.stderr, "(already_exists)") {
		t.Errorf("duplicate bind: want exit 1 already_exists:\n%s", r)
	}
	if r := d.cli(t, "", "secret", "bind", s.ID, "--unit", "nginx", "--as", "x"); r.code != 1 || !strings.Contains(r.stderr, "(invalid_binding)") {
		t.Errorf("bad unit: want exit 1 invalid_binding:\n%s", r)
	}
	for _, args := range [][]string{
		{"secret", "bind", s.ID, "--unit", "a.service", "--user", "vm-web", "--as", "x"},
		{"secret", "bind", s.ID, "--unit", "a.service"},
		{"secret", "bind", s.ID, "--as", "x"},
		{"secret", "bind", "--unit", "a.service", "--as", "x"},
		{"secret", "unbind", s.ID},
	} {
		if r := d.cli(t, "", args...); r.code != 2 {
			t.Errorf("usage error: want exit 2:\n%s", r)
		}
	}

	if out := d.mustCLI(t, "", "-o", "json", "secret", "unbind", s.ID, unitID).stdout; !strings.Contains(out, `"result": "deleted"`) || !strings.Contains(out, unitID) {
		t.Errorf("secret unbind -o json printed %q, want the binding and its result", out)
	}
	if r := d.cli(t, "", "secret", "unbind", s.ID, unitID); r.code != 1 || !strings.Contains(r.stderr, "(not_found)") {
		t.Errorf("second unbind: want exit 1 not_found:\n%s", r)
	}
	r = d.mustCLI(t, "", "secret", "get", s.ID)
	if strings.Contains(r.stdout, unitID) || strings.Contains(r.stdout, "nginx.service") || !strings.Contains(r.stdout, ub.ID) {
		t.Errorf("after unbind, secret get:\n%s", r.stdout)
	}
}
