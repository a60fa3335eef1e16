package e2e

// One flow over every kind of token coffer is tested on (issue 7): a
// SoftHSM token (the dev token) and a TPM 2.0 through tpm2-pkcs11 (a
// software TPM from internal/tpmtest, the daemon in production mode on
// it). The same test code runs on both; only the expected schemes differ.

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/internal/tpmtest"
)

// flowToken is a token the daemon runs on, with what coffer should choose
// for it.
type flowToken struct {
	kek          string // expected KEK scheme
	signing      string // expected signing scheme (JWT alg)
	manufacturer string // CK_TOKEN_INFO manufacturerID
	library      string // start of the module's description (CK_INFO)
	// start starts the daemon on the token and its state; called again
	// after a stop, it restarts it on the same token and state.
	start func(t *testing.T) *daemonProc
	// creds is the LoadCredential= socket of a started daemon.
	creds func(d *daemonProc) string
}

// softHSMFlowToken is the dev mode's own SoftHSM token.
func softHSMFlowToken(t *testing.T) flowToken {
	dir := workDir(t)
	return flowToken{
		kek: "aes-256-gcm", signing: "ES256", manufacturer: "SoftHSM project", library: "SoftHSM Implementation of PKCS11 ",
		start: func(t *testing.T) *daemonProc { return startDaemon(t, dir) },
		creds: func(d *daemonProc) string { return filepath.Join(d.stateDir, "creds.sock") },
	}
}

// tpmFlowToken is a tpm2-pkcs11 token on a software TPM, used the way a
// real host uses one: production mode, module, token label and PIN file
// on the command line, the module's environment (TCTI, store) in the
// daemon's.
func tpmFlowToken(t *testing.T) flowToken {
	requireHSM(t) // the binary is only built with SoftHSM around
	tok := tpmtest.Start(t, "coffer")
	dir := workDir(t)
	pin := filepath.Join(dir, "hsm-pin")
	if err := os.WriteFile(pin, []byte(tok.PIN+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	sock, creds := filepath.Join(dir, "coffer.sock"), filepath.Join(dir, "creds.sock")
	args := []string{"daemon", "--state-dir", filepath.Join(dir, "state"), "--socket", sock, "--creds-socket", creds,
		"--hsm-module", tok.Module, "--hsm-token", tok.Label, "--hsm-pin-file", pin}
	return flowToken{
		kek: "rsa-3072-oaep-sha256", signing: "ES256", manufacturer: "IBM", library: "tpm2-software.github.io TPM2.0 Cryptoki ",
		start: func(t *testing.T) *daemonProc { return startProdDaemon(t, dir, sock, tok.Env, args...) },
		creds: func(*daemonProc) string { return creds },
	}
}

// startProdDaemon launches a production-mode daemon and waits until it
// answers on socket; it is stopped (exit 0 asserted) when the test ends.
func startProdDaemon(t *testing.T, dir, socket string, env []string, args ...string) *daemonProc {
	t.Helper()
	d := launchDaemonEnv(t, dir, env, args...)
	d.socket = socket
	deadline := time.Now().Add(startTimeout)
	for {
		if _, err := os.Stat(socket); err == nil {
			if res, err := d.do("GET", "/v1/status", nil, nil); err == nil && res.status == http.StatusOK {
				break
			}
		}
		select {
		case <-d.done:
			t.Fatalf("coffer daemon exited before serving: %v\nstderr:\n%s", d.waitErr, d.stderr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("coffer daemon did not serve on %s within %s\nstderr:\n%s", socket, startTimeout, d.stderr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Cleanup(func() {
		if !d.ended {
			d.Stop(t)
		}
	})
	return d
}

func TestTokenFlow(t *testing.T) {
	for _, tc := range []struct {
		name  string
		token func(*testing.T) flowToken
	}{{"softhsm", softHSMFlowToken}, {"tpm2", tpmFlowToken}} {
		t.Run(tc.name, func(t *testing.T) { runTokenFlow(t, tc.token(t)) })
	}
}

// runTokenFlow: the schemes shown, a secret created, rotated and delivered
// exactly, a secret sealed offline to the token's import key imported and
// delivered, an OAuth2 JWT verified against the JWKS, the KEK rotated and
// the old one removed, and after a restart the same secret delivered and
// the same JWT verified again.
func runTokenFlow(t *testing.T, tok flowToken) {
	d := tok.start(t)
	checkHSMInfo(t, d, tok)

	p1, m1 := binaryPayload("TOKENFLOW1-")
	p2, m2 := binaryPayload("TOKENFLOW2-")
	s := d.createSecret(t, "default", "flow", p1, map[string]string{"k": "v"})
	d.bind(t, s.ID, map[string]string{"unit": "app.service", "credential": "flow"})
	deliver := func(d *daemonProc, want []byte, what string) {
		t.Helper()
		if got := loadCred(t, tok.creds(d), systemdAddr("app.service", "flow")); !bytes.Equal(got, want) {
			t.Fatalf("%s: delivered %q, want %q", what, got, want)
		}
	}
	deliver(d, p1, "after create")
	d.rotateSecret(t, s.ID, p2, 1)
	deliver(d, p2, "after rotate")

	// Sealed import: a file sealed offline to the token's import key
	// opens only in this daemon, with this token.
	work := workDir(t)
	hostPub := writeFile(t, work, "host.pub", d.mustCLI(t, "", "hsm", "import-key").stdout)
	p3, m3 := binaryPayload("TOKENFLOW3-")
	payloadFile := writeFile(t, work, "payload", string(p3))
	sealedFile := filepath.Join(work, "sealed.json")
	if r := runCLI(t, "", "", "seal", "--to", hostPub, "--project", "default", "--display-name", "imported",
		"--payload-file", payloadFile, "--out", sealedFile); r.code != 0 {
		t.Fatalf("seal: %s", r)
	}
	var imported secret
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "secret", "import", sealedFile).stdout, &imported)
	d.bind(t, imported.ID, map[string]string{"unit": "app.service", "credential": "imported"})
	if got := loadCred(t, tok.creds(d), systemdAddr("app.service", "imported")); !bytes.Equal(got, p3) {
		t.Fatalf("imported secret: delivered %q, want %q", got, p3)
	}

	d.newUser(t, "flow")
	d.setRole(t, "default", "flow", "reader")
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "flow"})
	jwt := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
	checkJWT(t, d, tok, jwt)

	// KEK rotation: a new KEK of the token's scheme, every sealed record
	// (and the store key) re-wrapped, the old KEK destroyed.
	var rot api.KEKRotation
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "hsm", "rotate-kek").stdout, &rot)
	if rot.State != "done" || rot.Target != "coffer-kek-2" || rot.Failed != 0 || rot.Remaining != 0 || rot.Rewrapped < 1 {
		t.Fatalf("rotate-kek: %+v", rot)
	}
	keys := d.hsmKeys(t)
	if len(keys.KEKs) != 2 || keys.KEKs[0].Scheme != tok.kek || keys.KEKs[1].Scheme != tok.kek || keys.KEKs[0].Records != 0 || !keys.KEKs[1].Current {
		t.Fatalf("KEKs after the rotation: %+v, want two %s KEKs, the old one unused", keys.KEKs, tok.kek)
	}
	if len(keys.SigningKeys) != 1 || keys.SigningKeys[0].Alg != tok.signing {
		t.Fatalf("signing keys %+v, want one %s key", keys.SigningKeys, tok.signing)
	}
	d.mustCLI(t, "", "hsm", "remove-kek", "coffer-kek-1")
	deliver(d, p2, "after KEK rotation")

	d.Stop(t)
	d = tok.start(t)
	deliver(d, p2, "after a restart")
	if got := loadCred(t, tok.creds(d), systemdAddr("app.service", "imported")); !bytes.Equal(got, p3) {
		t.Fatalf("imported secret after a restart: delivered %q, want %q", got, p3)
	}
	checkJWT(t, d, tok, jwt)
	checkHSMInfo(t, d, tok)

	for _, f := range []string{d.stdout.String(), d.stderr.String()} {
		for _, m := range []string{m1, m2, m3, oc.ClientSecret} {
			if strings.Contains(f, m) {
				t.Errorf("daemon output contains secret material %q", m)
			}
		}
	}
}

// checkHSMInfo checks `coffer hsm info` (table and JSON) and the status
// API show the token and the schemes chosen for it, with reasons.
func checkHSMInfo(t *testing.T, d *daemonProc, tok flowToken) {
	t.Helper()
	var h api.HSMStatus
	decodeOutput(t, "json", d.mustCLI(t, "", "hsm", "info", "-o", "json").stdout, &h)
	if h.Schemes.KEK != tok.kek || h.Schemes.Signing != tok.signing || h.Schemes.KEKReason == "" || h.Schemes.SigningReason == "" {
		t.Errorf("hsm info schemes = %+v, want %s and %s with reasons", h.Schemes, tok.kek, tok.signing)
	}
	if h.Token == nil || h.Token.Manufacturer != tok.manufacturer || h.Token.Label != h.TokenLabel || !strings.HasPrefix(h.Token.Library, tok.library) || !h.Healthy {
		t.Errorf("hsm info token = %+v (healthy %v), want manufacturer %q, label %s", h.Token, h.Healthy, tok.manufacturer, h.TokenLabel)
	}
	var st status
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	if st.HSM.Schemes.KEK != tok.kek || st.HSM.Schemes.Signing != tok.signing {
		t.Errorf("status schemes = %+v", st.HSM.Schemes)
	}
	out := d.mustCLI(t, "", "hsm", "info").stdout
	f := tableFields(t, out)
	if f["KEK SCHEME"] != tok.kek || f["SIGNING SCHEME"] != tok.signing || f["KEK REASON"] != h.Schemes.KEKReason || f["MANUFACTURER"] != tok.manufacturer {
		t.Errorf("hsm info table = %v", f)
	}
}

// checkJWT verifies jwt with the daemon's JWKS, as a relying service
// would, and checks its algorithm.
func checkJWT(t *testing.T, d *daemonProc, tok flowToken, jwt string) {
	t.Helper()
	set := d.fetchJWKS(t)
	c, h, err := verifyJWT(t, set, jwt)
	if err != nil {
		t.Fatalf("JWT does not verify with the JWKS: %v", err)
	}
	if h.Algorithm != tok.signing || c.ClientID == "" {
		t.Errorf("JWT alg %q client_id %q, want %s", h.Algorithm, c.ClientID, tok.signing)
	}
	b, _ := json.Marshal(set)
	if !strings.Contains(string(b), `"alg":"`+tok.signing+`"`) {
		t.Errorf("JWKS %s does not advertise %s", b, tok.signing)
	}
}
