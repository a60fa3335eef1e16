package e2e

// Issue 15 part 5: the token, its module and its PIN file named by an
// RFC 7512 pkcs11: URI (--hsm, hsm = "..." in the config file), for the
// daemon and the offline commands that open the HSM.

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPKCS11URI(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	store := newSoftHSMStore(t, dir)
	store.initToken(t, prodToken)
	pin := writeFile(t, dir, "hsm-pin", prodPIN+"\n")
	state := filepath.Join(dir, "state")
	var outputs []string // everything coffer printed, searched for the PIN at the end
	query := "?module-path=" + softHSMModule + "&pin-source=file:" + pin
	uriArgs := func(state, uri string, extra ...string) []string {
		return append([]string{"daemon", "--state-dir", state,
			"--socket", filepath.Join(dir, "api.sock"), "--creds-socket", filepath.Join(dir, "creds.sock"),
			"--hsm", uri}, extra...)
	}
	started := func(d *daemonProc) status {
		t.Helper()
		var st status
		d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
		if st.Dev || !st.HSM.Healthy || st.HSM.TokenLabel != prodToken || st.HSM.Token == nil || st.HSM.Token.Serial == "" {
			t.Fatalf("status %+v, want production, healthy on %s with its serial", st, prodToken)
		}
		return st
	}

	// By label: the URI alone names module, token and PIN file.
	d := startProd(t, dir, store.env(), uriArgs(state, "pkcs11:token="+prodToken+query))
	serial := started(d).HSM.Token.Serial
	sec := d.createSecret(t, "default", "made through a URI", []byte("payload"), nil)
	backup := filepath.Join(dir, "uri.backup")
	outputs = append(outputs, d.mustCLI(t, "", "backup", backup).String())
	d.Stop(t)
	outputs = append(outputs, d.stdout.String(), d.stderr.String())

	// coffer restore opens the HSM by the URI too.
	rs := launchDaemonEnv(t, dir, store.env(), "restore", backup, "--state-dir", filepath.Join(dir, "restored"),
		"--hsm", "pkcs11:token="+prodToken+query)
	if code := rs.waitExit(t); code != 0 {
		t.Fatalf("restore --hsm: exit %d\n%s\n%s", code, rs.stdout, rs.stderr)
	}
	outputs = append(outputs, rs.stdout.String(), rs.stderr.String())

	// By serial, from the config file, on the same store.
	conf := filepath.Join(dir, "coffer.toml")
	if err := os.WriteFile(conf, []byte("hsm = \"pkcs11:serial="+serial+query+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d = startProd(t, dir, store.env(), []string{"daemon", "--config", conf, "--state-dir", state,
		"--socket", filepath.Join(dir, "api.sock"), "--creds-socket", filepath.Join(dir, "creds.sock")})
	started(d)
	d.mustAPI(t, "GET", "/v1/secrets/"+sec.ID, nil, http.StatusOK, nil)
	d.Stop(t)
	outputs = append(outputs, d.stdout.String(), d.stderr.String())

	// An offline command that opens the HSM takes the URI too.
	chk := launchDaemonEnv(t, dir, store.env(), "store", "check", "--state-dir", state, "--hsm", "pkcs11:serial="+serial+query)
	if code := chk.waitExit(t); code != 0 {
		t.Fatalf("store check --hsm: exit %d\n%s\n%s", code, chk.stdout, chk.stderr)
	}
	outputs = append(outputs, chk.stdout.String(), chk.stderr.String())

	// An empty path selects the module's one token.
	chk = launchDaemonEnv(t, dir, store.env(), "store", "check", "--state-dir", state, "--hsm", "pkcs11:"+query)
	if code := chk.waitExit(t); code != 0 {
		t.Fatalf("store check --hsm pkcs11:?...: exit %d\n%s\n%s", code, chk.stdout, chk.stderr)
	}
	outputs = append(outputs, chk.stdout.String(), chk.stderr.String())

	// Two tokens with one label.
	store.initToken(t, "coffer-dup")
	store.initToken(t, "coffer-dup")
	fails := []struct {
		name string
		args []string
		code int
		want []string // all on the one line
	}{
		{"no match", uriArgs(state, "pkcs11:token=coffer-nowhere"+query), 1,
			[]string{"coffer: HSM token coffer-nowhere not found in module " + softHSMModule + ": CKR_TOKEN_NOT_PRESENT (no initialised token matches; the module has slot ",
				`(token "` + prodToken + `", serial "` + serial + `", SoftHSM project SoftHSM v2)`, `(token "coffer-dup", serial "`}},
		{"no match by serial", uriArgs(state, "pkcs11:token="+prodToken+";serial=0000"+query), 1,
			[]string{"coffer: HSM token token=" + prodToken + ";serial=0000 not found in module"}},
		{"several", uriArgs(filepath.Join(dir, "dup-state"), "pkcs11:token=coffer-dup"+query), 1,
			[]string{"coffer: HSM token coffer-dup is ambiguous in module " + softHSMModule + ": 2 tokens match: slot ",
				"select one by serial or slot-id (--hsm 'pkcs11:serial=...')"}},
		{"any token of three", uriArgs(filepath.Join(dir, "any-state"), "pkcs11:"+query), 1,
			[]string{"coffer: HSM token (any) is ambiguous in module " + softHSMModule + ": 3 tokens match: slot "}},
		{"pin-value", uriArgs(state, "pkcs11:token="+prodToken+"?module-path="+softHSMModule+"&pin-value="+prodPIN), 2,
			[]string{"coffer: --hsm: coffer refuses pin-value"}},
		{"malformed pin-value", uriArgs(state, "pkcs11:token="+prodToken+"?pin-value="+prodPIN+"&"+prodPIN), 2,
			[]string{"coffer: --hsm: PKCS#11 URI: malformed; the details are withheld because it holds a pin-value"}},
		{"token twice", uriArgs(state, "pkcs11:token="+prodToken+query, "--hsm-token", prodToken), 2,
			[]string{"coffer: --hsm (token=) and --hsm-token both give the token label"}},
	}
	for _, tt := range fails {
		t.Run(tt.name, func(t *testing.T) {
			d := launchDaemonEnv(t, dir, store.env(), tt.args...)
			code := d.waitExit(t)
			stderr := d.stderr.String()
			outputs = append(outputs, d.stdout.String(), stderr)
			if code != tt.code {
				t.Errorf("exit %d, want %d", code, tt.code)
			}
			lines := strings.Split(strings.TrimRight(stderr, "\n"), "\n")
			if len(lines) != 1 {
				t.Fatalf("stderr has %d lines, want one:\n%s", len(lines), stderr)
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
		})
	}

	// A PIN file every user may read is refused, by URI as by flag.
	open := writeFile(t, dir, "open-pin", prodPIN+"\n")
	if err := os.Chmod(open, 0o644); err != nil {
		t.Fatal(err)
	}
	d = launchDaemonEnv(t, dir, store.env(), uriArgs(state, "pkcs11:token="+prodToken+"?module-path="+softHSMModule+"&pin-source=file:"+open)...)
	if code := d.waitExit(t); code != 1 || !strings.Contains(d.stderr.String(), "HSM PIN file "+open+" is readable by every user (mode 0644): chmod o-rwx "+open) {
		t.Errorf("world-readable PIN file: exit %d\n%s", code, d.stderr)
	}
	outputs = append(outputs, d.stdout.String(), d.stderr.String())

	for _, out := range outputs {
		if strings.Contains(out, prodPIN) {
			t.Fatalf("coffer printed the PIN:\n%s", out)
		}
	}
}
