package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestKeyValuesFromFileAndDelivery: key values given in a file (not on the
// command line) are sealed with the payload, never shown by management
// reads, and delivered one key at a time to the bound user only.
func TestKeyValuesFromFileAndDelivery(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)
	value := canary("KVCANARY-")
	kvFile := filepath.Join(dir, "kv")
	if err := os.WriteFile(kvFile, []byte("# comment\nrole_arn=arn:aws:iam::1:role/x\nsecret_key="+value+"\n\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	payloadFile := filepath.Join(dir, "payload")
	if err := os.WriteFile(payloadFile, []byte("the-payload"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := d.mustCLI(t, "", "-o", "json", "secret", "create", "--display-name", "kv", "--payload-file", payloadFile, "--key-values-file", kvFile)
	if strings.Contains(r.stdout, value) || strings.Contains(r.stdout, "arn:aws") {
		t.Fatalf("create printed a key value:\n%s", r.stdout)
	}
	id := jsonField(t, r.stdout, "id")

	d.newUser(t, "kvuser")
	d.setRole(t, "default", "kvuser", "reader")
	d.mustAPI(t, "POST", "/v1/secrets/"+id+"/bindings", map[string]string{"user": "kvuser", "name": "aws"}, http.StatusCreated, nil)
	tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "kvuser"}).Token
	env := []string{"COFFER_SOCKET=" + d.socket, "COFFER_TOKEN=" + tok}
	for key, want := range map[string]string{"": "the-payload", "role_arn": "arn:aws:iam::1:role/x", "secret_key": value} {
		args := []string{"deliver", "aws"}
		if key != "" {
			args = append(args, "--key", key)
		}
		if code, out, errs := cliAs(t, cofferBin, -1, env, args...); code != 0 || string(out) != want {
			t.Errorf("deliver --key %q: exit %d, %q, want %q (%s)", key, code, out, want, errs)
		}
	}
	if code, _, errs := cliAs(t, cofferBin, -1, env, "deliver", "aws", "--key", "nope"); code != 1 || !strings.Contains(errs, "(not_found)") {
		t.Errorf("unknown key: exit %d %s", code, errs)
	}
	// The admin is not the bound consumer.
	wantError(t, d.api(t, "GET", "/v1/deliver/aws?key=secret_key", nil), http.StatusNotFound, "not_found")
	// Both stdin readers at once is a usage error.
	if res := d.cli(t, "x", "secret", "create", "--display-name", "y", "--payload-file", "-", "--key-values-file", "-"); res.code != 2 {
		t.Errorf("payload and key values both from stdin: exit %d, want 2", res.code)
	}
	d.Stop(t)
	scanText(t, "daemon log", []byte(d.stderr.String()), secretNeedles("key value", value))
	scanTree(t, d.stateDir, secretNeedles("key value", value))
}

// jsonField returns one string field of a JSON object.
func jsonField(t *testing.T, doc, field string) string {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("decode %s: %v", doc, err)
	}
	s, _ := m[field].(string)
	if s == "" {
		t.Fatalf("no %s in %s", field, doc)
	}
	return s
}
