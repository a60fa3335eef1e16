package e2e

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/hostseal"
)

// TestSealedImport is the fleet-provisioning flow with the real binary:
// the host hands out its import key, a secret is sealed to it offline
// (coffer seal, no daemon), the host imports it once, and the bound
// consumer receives exactly what was sealed. Files for another host,
// edited files, files for another project and callers who may not import
// are refused; the payload is nowhere in the log or the state directory.
func TestSealedImport(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)
	other := startDaemon(t, workDir(t)) // another host: its own dev token

	// coffer hsm import-key > host.pub
	r := d.mustCLI(t, "", "hsm", "import-key")
	hostPub := writeFile(t, dir, "host.pub", r.stdout)
	var key struct {
		PublicKeyPEM string `json:"public_key_pem"`
		Fingerprint  string `json:"fingerprint"`
		Algorithm    string `json:"algorithm"`
	}
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "hsm", "import-key").stdout, &key)
	if want := key.PublicKeyPEM + "fingerprint: " + key.Fingerprint + "\n"; r.stdout != want || key.Algorithm != "RSA-OAEP-256" {
		t.Fatalf("coffer hsm import-key printed\n%s\nwant the PEM and the fingerprint line of %+v", r.stdout, key)
	}
	pub, err := hostseal.ParsePublicKey([]byte(r.stdout))
	if err != nil {
		t.Fatal(err)
	}
	if fp, _ := hostseal.Fingerprint(pub); fp != key.Fingerprint {
		t.Fatalf("fingerprint %s, the key's is %s", key.Fingerprint, fp)
	}
	outFile := filepath.Join(dir, "host-out.pub")
	if r := d.mustCLI(t, "", "hsm", "import-key", "--out", outFile); r.stdout != "fingerprint: "+key.Fingerprint+"\n" {
		t.Errorf("import-key --out printed %q", r.stdout)
	}
	if got := readFile(t, outFile); got != key.PublicKeyPEM+"fingerprint: "+key.Fingerprint+"\n" {
		t.Errorf("import-key --out wrote %q", got)
	}
	otherPub := writeFile(t, dir, "other.pub", other.mustCLI(t, "", "hsm", "import-key").stdout)

	payload, marker := binaryPayload("IMPORTCANARY-")
	kv := canary("IMPORTKVCANARY-")
	needles := append(payloadNeedles("payload", payload, marker), secretNeedles("key value", kv)...)
	payloadFile := filepath.Join(dir, "payload")
	if err := os.WriteFile(payloadFile, payload, 0o600); err != nil {
		t.Fatal(err)
	}
	var outputs []string
	// seal runs the real CLI without any daemon and returns the file.
	seal := func(to, project, name string) string {
		t.Helper()
		out := filepath.Join(dir, canary("sealed-")+".json")
		r := runCLI(t, "", "", "seal", "--to", to, "--project", project, "--display-name", name,
			"--payload-file", payloadFile, "--key-value", "token="+kv, "--out", out)
		if r.code != 0 {
			t.Fatalf("seal: %s", r)
		}
		outputs = append(outputs, r.stdout, r.stderr)
		return out
	}
	importFile := func(file string) apiResp { // the file as is, through the API
		t.Helper()
		body, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var head struct{ Project string }
		if err := json.Unmarshal(body, &head); err != nil {
			t.Fatal(err)
		}
		return d.api(t, "POST", "/v1/projects/"+head.Project+"/secrets:import", body)
	}

	// seal → import → deliver
	sealed := seal(hostPub, "default", "db password")
	r = d.mustCLI(t, "", "-o", "json", "secret", "import", sealed)
	outputs = append(outputs, r.stdout, r.stderr)
	var sec secret
	decodeOutput(t, "json", r.stdout, &sec)
	if sec.DisplayName != "db password" || sec.Project != "default" || sec.Version != 1 || sec.Status != "active" {
		t.Fatalf("imported secret: %+v", sec)
	}
	d.newUser(t, "consumer")
	d.setRole(t, "default", "consumer", "reader")
	d.bind(t, sec.ID, map[string]string{"user": "consumer", "name": "db"})
	tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "consumer"}).Token
	env := []string{"COFFER_SOCKET=" + d.socket, "COFFER_TOKEN=" + tok}
	if code, out, errs := cliAs(t, cofferBin, -1, env, "deliver", "db"); code != 0 || !bytes.Equal(out, payload) {
		t.Fatalf("deliver: exit %d, %d bytes, equal %v (%s)", code, len(out), bytes.Equal(out, payload), errs)
	}
	if code, out, errs := cliAs(t, cofferBin, -1, env, "deliver", "db", "--key", "token"); code != 0 || string(out) != kv {
		t.Fatalf("deliver --key token: exit %d, equal %v (%s)", code, string(out) == kv, errs)
	}
	d.waitAudit(t, "the import", "secret.create", "ok", map[string]string{"secret": sec.ID, "sealed": sealedFileID(t, sealed)}, "")

	// The same file again: refused by the CLI and the API.
	r = d.cli(t, "", "secret", "import", sealed)
	if r.code != 1 || !strings.Contains(r.stderr, "(sealed_secret_replayed)") {
		t.Errorf("second import: want exit 1 and sealed_secret_replayed:\n%s", r)
	}
	outputs = append(outputs, r.stdout, r.stderr)
	wantError(t, importFile(sealed), http.StatusBadRequest, "sealed_secret_replayed")

	// Sealed to another host's key.
	wantError(t, importFile(seal(otherPub, "default", "x")), http.StatusBadRequest, "sealed_for_other_host")
	// Edited: the display name, one ciphertext byte, the wrapped key.
	for name, edit := range map[string]func(f map[string]any){
		"display name":    func(f map[string]any) { f["display_name"] = "renamed" },
		"ciphertext byte": func(f map[string]any) { f["ciphertext"] = flipB64(t, f["ciphertext"].(string), 5) },
		"wrapped key":     func(f map[string]any) { f["wrapped_dek"] = flipB64(t, f["wrapped_dek"].(string), 17) },
	} {
		t.Run("edited "+name, func(t *testing.T) {
			wantError(t, importFile(editJSON(t, seal(hostPub, "default", "x"), edit)), http.StatusBadRequest, "invalid_sealed_secret")
		})
	}
	wantError(t, d.api(t, "POST", "/v1/projects/default/secrets:import", `{"format":"coffer-sealed/v1",`), http.StatusBadRequest, "invalid_json")
	if r := d.cli(t, "", "secret", "import", hostPub); r.code != 1 || !strings.Contains(r.stderr, "is not a sealed secret") {
		t.Errorf("import of a key file: want exit 1 and a clear message:\n%s", r)
	}

	// Sealed for another project.
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "team"}, http.StatusCreated, nil)
	forTeam := seal(hostPub, "team", "team secret")
	body, _ := os.ReadFile(forTeam)
	wantError(t, d.api(t, "POST", "/v1/projects/default/secrets:import", body), http.StatusBadRequest, "sealed_project_mismatch")
	if r := d.cli(t, "", "secret", "import", "--project", "default", forTeam); r.code != 1 || !strings.Contains(r.stderr, "(sealed_project_mismatch)") {
		t.Errorf("import into another project: want exit 1 and sealed_project_mismatch:\n%s", r)
	}

	// Who may not import: a member's token gets 403, before the body is
	// read; an admin's token imports, and sees the import key.
	d.newUser(t, "mem")
	d.setRole(t, "team", "mem", "member")
	memTok := d.newCred(t, "team", map[string]any{"type": "access-token", "user": "mem"}).Token
	memEnv := []string{"COFFER_SOCKET=" + d.socket, "COFFER_TOKEN=" + memTok}
	if code, _, errs := cliAs(t, cofferBin, -1, memEnv, "secret", "import", forTeam); code != 1 || !strings.Contains(errs, "(forbidden)") {
		t.Errorf("member imports: exit %d %s, want 1 forbidden", code, errs)
	}
	if code, _, errs := cliAs(t, cofferBin, -1, memEnv, "hsm", "import-key"); code != 1 || !strings.Contains(errs, "(forbidden)") {
		t.Errorf("member reads the import key: exit %d %s, want 1 forbidden", code, errs)
	}
	hdr := http.Header{"Authorization": {"Bearer " + memTok}}
	wantError(t, d.send(t, "POST", "/v1/projects/team/secrets:import", hdr, `{not even json`), http.StatusForbidden, "forbidden")
	d.newUser(t, "boss")
	d.setRole(t, "team", "boss", "admin")
	bossEnv := []string{"COFFER_SOCKET=" + d.socket, "COFFER_TOKEN=" + d.newCred(t, "team", map[string]any{"type": "access-token", "user": "boss"}).Token}
	if code, out, errs := cliAs(t, cofferBin, -1, bossEnv, "hsm", "import-key"); code != 0 || string(out) != key.PublicKeyPEM+"fingerprint: "+key.Fingerprint+"\n" {
		t.Errorf("project admin reads the import key: exit %d %s", code, errs)
	}
	if code, out, errs := cliAs(t, cofferBin, -1, bossEnv, "secret", "import", forTeam); code != 0 || !strings.Contains(string(out), "team secret") {
		t.Errorf("project admin imports: exit %d %s %s", code, out, errs)
	}

	// A file larger than a create request's 8 KiB imports (the route takes
	// 16 KiB); one over 16 KiB is 413.
	big := bytes.Repeat([]byte("b"), 6000)
	if err := os.WriteFile(payloadFile, big, 0o600); err != nil {
		t.Fatal(err)
	}
	bigFile := seal(hostPub, "default", "big")
	if fi, err := os.Stat(bigFile); err != nil || fi.Size() <= 8<<10 || fi.Size() > 16<<10 {
		t.Fatalf("the big sealed file is %d bytes, want 8-16 KiB (%v)", fi.Size(), err)
	}
	d.mustAPI(t, "POST", "/v1/projects/default/secrets:import", readFile(t, bigFile), http.StatusCreated, nil)
	if err := os.WriteFile(payloadFile, bytes.Repeat([]byte("h"), 13<<10), 0o600); err != nil {
		t.Fatal(err)
	}
	wantError(t, importFile(seal(hostPub, "default", "huge")), http.StatusRequestEntityTooLarge, "request_body_too_large")

	// The audit log tells the import as a secret create naming the file,
	// and the replay as a refused one.
	var sealedFile struct{ ID string }
	if err := json.Unmarshal([]byte(readFile(t, sealed)), &sealedFile); err != nil {
		t.Fatal(err)
	}
	events := d.auditEntries(t)
	if _, ok := findEvent(events, "secret.create", "ok", map[string]string{"sealed": sealedFile.ID, "secret": sec.ID, "project": sec.ProjectID}); !ok {
		t.Errorf("no audit event for the import of %s as secret %s", sealedFile.ID, sec.ID)
	}
	if e, ok := findEvent(events, "secret.create", "failed", map[string]string{"sealed": sealedFile.ID}); !ok || e.Code != "sealed_secret_replayed" {
		t.Errorf("no audit event for the replay of %s: %+v", sealedFile.ID, e)
	}

	// Consumed stays consumed across a restart.
	d.Stop(t)
	log := d.stderr.String()
	d = startDaemon(t, dir)
	wantError(t, importFile(sealed), http.StatusBadRequest, "sealed_secret_replayed")
	d.Stop(t)

	for i, o := range outputs {
		scanText(t, "CLI output #"+itoa(i), []byte(o), needles)
	}
	scanText(t, "daemon log", []byte(log+d.stderr.String()), needles)
	if files, _ := scanTree(t, d.stateDir, needles); files == 0 {
		t.Fatal("no state files scanned")
	}
}

// editJSON rewrites a sealed file with edit and returns the new file.
func editJSON(t *testing.T, path string, edit func(map[string]any)) string {
	t.Helper()
	var f map[string]any
	if err := json.Unmarshal([]byte(readFile(t, path)), &f); err != nil {
		t.Fatal(err)
	}
	edit(f)
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, filepath.Dir(path), filepath.Base(path)+".edited", string(b))
}

// flipB64 flips one bit of byte i of a base64 value.
func flipB64(t *testing.T, s string, i int) string {
	t.Helper()
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	b[i] ^= 1
	return base64.StdEncoding.EncodeToString(b)
}

// sealedFileID reads the id of a sealed file.
func sealedFileID(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f struct{ ID string }
	if err := json.Unmarshal(b, &f); err != nil || f.ID == "" {
		t.Fatalf("sealed file %s: id %q, %v", path, f.ID, err)
	}
	return f.ID
}
