package e2e

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func canary(prefix string) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// needle is one secret string that must not be found anywhere.
type needle struct{ what, value string }

// secretNeedles are the forms in which a secret could leak.
func secretNeedles(what, s string) []needle {
	return []needle{{what, s}, {what + " (base64)", b64([]byte(s))}}
}

// scanText fails for every needle found in text.
func scanText(t *testing.T, where string, text []byte, needles []needle) {
	t.Helper()
	for _, n := range needles {
		if bytes.Contains(text, []byte(n.value)) {
			t.Errorf("LEAK: %s found in %s", n.what, where)
		}
	}
}

// scanTree fails for every needle found in any file under root and returns
// how many files it read.
func scanTree(t *testing.T, root string, needles []needle) (files int, all [][]byte) {
	t.Helper()
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !e.Type().IsRegular() {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		all = append(all, b)
		rel, _ := filepath.Rel(root, path)
		scanText(t, "state file "+rel, b, needles)
		return nil
	})
	if err != nil {
		t.Fatalf("scan %s: %v", root, err)
	}
	return files, all
}

// TestNoSecretLeaks creates, rotates and revokes secrets with distinctive
// payloads and key values (and sends bad requests carrying them), then
// searches every state file, the daemon's whole log and every CLI output
// and HTTP response for them, in plain text and base64.
func TestNoSecretLeaks(t *testing.T) {
	for _, tc := range []struct{ name, level, format string }{
		{"info", "info", "auto"}, {"debug", "debug", "auto"}, {"json", "info", "json"},
	} {
		level := tc.level
		t.Run(tc.name, func(t *testing.T) {
			dir := workDir(t)
			d := startDaemon(t, dir, "--log-level", level, "--log-format", tc.format)

			payload1 := canary("PAYLOADCANARY1-")
			payload2 := canary("PAYLOADCANARY2-")
			payload3 := canary("PAYLOADCANARY3-")
			payload4 := canary("PAYLOADCANARY4-")
			badPayload := canary("BADPAYLOAD-") + "!!"
			kv1 := canary("KVCANARY1-")
			kv2 := canary("KVCANARY2-")
			kv3 := canary("KVCANARY3-")
			fieldVal := canary("FIELDCANARY-")
			// Not secret, but a tenant's data: in no log, and (encrypted at
			// rest) in no state file; also proves the scan sees stored data.
			displayName := canary("DISPLAYNAME-")
			credName := strings.ToLower(canary("credname-"))
			var needles []needle
			for _, s := range []struct{ what, v string }{
				{"payload 1", payload1}, {"payload 2", payload2}, {"payload 3", payload3}, {"payload 4", payload4},
				{"key value 1", kv1}, {"key value 2", kv2}, {"key value 3", kv3},
			} {
				needles = append(needles, secretNeedles(s.what, s.v)...)
			}
			needles = append(needles, needle{"rejected payload", badPayload}, needle{"unknown field value", fieldVal})

			var outputs []string
			cli := func(stdin string, args ...string) cliResult {
				t.Helper()
				r := d.mustCLI(t, stdin, args...)
				outputs = append(outputs, r.stdout, r.stderr)
				return r
			}
			var responses [][]byte
			api := func(method, path string, body any, want int, out any) {
				t.Helper()
				res := d.mustAPI(t, method, path, body, want, out)
				responses = append(responses, res.body)
			}

			// CLI: create from a payload file and rotate from stdin
			pf := filepath.Join(workDir(t), "payload")
			if err := os.WriteFile(pf, []byte(payload1), 0o600); err != nil {
				t.Fatal(err)
			}
			r := cli("", "-o", "json", "secret", "create", "--display-name", displayName, "--payload-file", pf, "--key-value", "token="+kv1)
			var s1 secret
			decodeOutput(t, "json", r.stdout, &s1)
			cli(payload2, "secret", "rotate", s1.ID, "--payload-file", "-", "--key-value", "token="+kv2, "--cas", "1")
			cli("", "-o", "yaml", "secret", "get", s1.ID)
			cli("", "secret", "list")

			// HTTP: create, rotate keeping key_values, revoke
			var s2 secret
			api("POST", "/v1/projects/default/secrets", map[string]any{
				"display_name": "http", "payload": b64([]byte(payload3)), "key_values": map[string]string{"password": kv3},
				"expires_at": "2099-01-01T00:00:00Z",
			}, http.StatusCreated, &s2)
			api("POST", "/v1/secrets/"+s2.ID+"/rotate", map[string]any{"payload": b64([]byte(payload4))}, http.StatusOK, nil)
			api("GET", "/v1/secrets/"+s2.ID, nil, http.StatusOK, nil)
			api("GET", "/v1/projects/default/secrets", nil, http.StatusOK, nil)
			api("POST", "/v1/secrets/"+s1.ID+"/revoke", nil, http.StatusOK, nil)
			api("GET", "/v1/status", nil, http.StatusOK, nil)
			api("POST", "/v1/users", map[string]any{"name": "leaky"}, http.StatusCreated, nil)
			api("PUT", "/v1/projects/default/roles/leaky/reader", nil, http.StatusOK, nil)
			api("POST", "/v1/projects/default/credentials", map[string]any{"type": "access-token", "user": "leaky", "name": credName}, http.StatusCreated, nil)
			// A delivery name is the project's: in no log (the audit log
			// and its journal copy name the binding by id). Unit and
			// credential names are the host's configuration, in its unit
			// files, and the audit log names them.
			bindName := strings.ToLower(canary("bindname-"))
			api("POST", "/v1/secrets/"+s2.ID+"/bindings", map[string]any{"user": "leaky", "name": bindName}, http.StatusCreated, nil)
			leakyTok := secretOf(d.newCred(t, "default", map[string]any{"type": "access-token", "user": "leaky"}))
			d.mustBearer(t, leakyTok, "GET", "/v1/deliver/"+bindName, nil, http.StatusOK, nil)
			d.bearer(t, leakyTok, "GET", "/v1/deliver/"+bindName+"x", nil)

			// bad requests carrying secrets: the errors must not echo them
			for _, bad := range []struct {
				body   string
				status int
			}{
				{`{"display_name":"x","payload":"` + badPayload + `"}`, 400},
				{`{"display_name":"x","payload":"` + b64([]byte(payload1)) + `","key_values":{"bad key":"` + kv1 + `"}}`, 400},
				{`{"display_name":"x","payload":"` + b64([]byte(payload1)) + `","other":"` + fieldVal + `"}`, 400},
				{`{"display_name":"x","payload":"` + b64([]byte(payload1)) + `","key_values":{"` + fieldVal + `":5}}`, 400},
				{`{"display_name":" ","payload":"` + b64([]byte(payload2)) + `"}`, 400},
				{`{"display_name":"x","payload":"` + b64([]byte(payload2)) + `","expires_at":"` + fieldVal + `"}`, 400},
				{`{"display_name":"x","payload":"` + b64([]byte(payload2)) + `"} "` + fieldVal + `"`, 400},
				{`{"display_name":"x","payload":"` + b64([]byte(payload2)) + `",`, 400},
			} {
				res := d.api(t, "POST", "/v1/projects/default/secrets", bad.body)
				if res.status != bad.status {
					t.Errorf("bad request: status %d, want %d: %s", res.status, bad.status, res.body)
				}
				responses = append(responses, res.body)
			}
			res := d.api(t, "POST", "/v1/secrets/"+s2.ID+"/rotate", `{"payload":"`+b64([]byte(payload1))+`","cas":99}`)
			responses = append(responses, res.body)
			res = d.api(t, "POST", "/v1/projects/nope/secrets", `{"display_name":"x","payload":"`+b64([]byte(payload1))+`"}`)
			responses = append(responses, res.body)
			// a CLI failure with a secret in its arguments
			bad := d.cli(t, payload1, "secret", "create", "--display-name", " ", "--payload-file", "-", "--key-value", "k="+kv1)
			if bad.code != 1 {
				t.Errorf("want exit 1:\n%s", bad)
			}
			outputs = append(outputs, bad.stdout, bad.stderr)

			d.Stop(t)

			for i, o := range outputs {
				scanText(t, "CLI output #"+itoa(i), []byte(o), needles)
			}
			for i, b := range responses {
				scanText(t, "HTTP response #"+itoa(i)+" ("+string(b)+")", b, needles)
			}
			scanText(t, "daemon log ("+level+")", []byte(d.stderr.String()), append(needles, needle{"display name", displayName}, needle{"credential name", credName},
				needle{"delivery name", bindName}))
			scanText(t, "daemon stdout", []byte(d.stdout.String()), needles)
			if tc.format == "json" {
				// Every line one JSON object, and the changes said in words
				// by id: the rotation of s2 among them.
				want := "secret " + s2.ID[:8] + "… rotated to version 2 in project "
				found := false
				for _, line := range strings.Split(strings.TrimSpace(d.stderr.String()), "\n") {
					var rec map[string]any
					if err := json.Unmarshal([]byte(line), &rec); err != nil {
						t.Fatalf("--log-format json: a line that is no JSON object: %q", line)
					}
					msg, _ := rec["msg"].(string)
					if strings.HasPrefix(msg, want) && rec["secret"] == s2.ID && rec["action"] == "secret.rotate" {
						found = true
					}
				}
				if !found {
					t.Errorf("no log record %q... with secret=%s and action=secret.rotate:\n%s", want, s2.ID, d.stderr)
				}
			}
			if level == "debug" && !strings.Contains(d.stderr.String(), "level=DEBUG") {
				t.Logf("no DEBUG line was logged at --log-level debug")
			}

			files, all := scanTree(t, d.stateDir, needles)
			if files == 0 {
				t.Fatalf("no files under %s", d.stateDir)
			}
			// the store is encrypted at rest: not even metadata is in the clear
			scanText(t, "state files", bytes.Join(all, nil), []needle{{"display name", displayName}})
			t.Logf("scanned %d state files", files)
		})
	}
}

// TestStoreEncryptedAtRest writes a project, a user, secrets (display
// names, key values, binary payloads) and a binding with distinctive
// names, and greps every file of the store for them: Badger's files hold
// none of it, the store key is on disk only sealed, and a restart reads
// everything back. A store whose key file is gone does not start.
func TestStoreEncryptedAtRest(t *testing.T) {
	dir := workDir(t)
	d := startDaemon(t, dir)
	proj := strings.ToLower(canary("projcanary-"))
	userName := strings.ToLower(canary("usercanary-"))
	display := canary("DISPLAYCANARY-")
	kvKey, kvValue := strings.ToLower(canary("kvkey")), canary("KVVALUECANARY-")
	payload, marker := binaryPayload("PAYLOADCANARY-")
	// short: systemd's abstract client address holds both
	unit, credName := strings.ToLower(canary("unitcanary-")[:20])+".service", strings.ToLower(canary("credcanary-")[:20])
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": proj}, http.StatusCreated, nil)
	d.newUser(t, userName)
	s := d.createSecret(t, proj, display, payload, map[string]string{kvKey: kvValue})
	d.bind(t, s.ID, map[string]string{"unit": unit, "credential": credName})
	d.Stop(t)

	dataDir := filepath.Join(d.stateDir, "data")
	needles := append(payloadNeedles("payload", payload, marker),
		needle{"project name", proj}, needle{"user name", userName}, needle{"display name", display},
		needle{"key_values key", kvKey}, needle{"key_values value", kvValue},
		needle{"unit name", unit}, needle{"credential name", credName}, needle{"secret id", s.ID})
	files, _ := scanTree(t, dataDir, needles)
	if files < 3 {
		t.Fatalf("only %d files under %s", files, dataDir)
	}
	keyFile := filepath.Join(d.stateDir, "store.key")
	fi, err := os.Stat(keyFile)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store.key: %v, mode %v; want 0600", err, fi.Mode())
	}
	var sealed struct {
		Format int    `json:"format"`
		Token  string `json:"token"`
		Sealed struct {
			KEK string `json:"kek"`
		} `json:"sealed"`
	}
	if err := json.Unmarshal([]byte(readFile(t, keyFile)), &sealed); err != nil || sealed.Format != 1 || sealed.Token != "coffer-dev" || sealed.Sealed.KEK != "coffer-kek-1" {
		t.Errorf("store.key is not a sealed key: %+v, %v", sealed, err)
	}

	d2 := startDaemon(t, dir)
	var got secret
	d2.mustAPI(t, "GET", "/v1/secrets/"+s.ID, nil, http.StatusOK, &got)
	sameJSON(t, "secret after restart", got, s)
	if b := loadCred(t, filepath.Join(d2.stateDir, "creds.sock"), systemdAddr(unit, credName)); !bytes.Equal(b, payload) {
		t.Errorf("delivery after restart: %d bytes, not the payload", len(b))
	}
	d2.Stop(t)

	// without its key the store cannot be read: the daemon says so and stops
	if err := os.Rename(keyFile, keyFile+".away"); err != nil {
		t.Fatal(err)
	}
	d3 := launchDaemon(t, dir, "daemon", "--dev")
	if code := d3.waitExit(t); code == 0 || !strings.Contains(d3.stderr.String(), "exists but its key "+keyFile+" does not: coffer stores are encrypted at rest") {
		t.Errorf("start without store.key: exit %d\nstderr:\n%s", code, d3.stderr)
	}
	noPanic(t, d3.stderr.String())
}

// TestFileModes checks the socket is srw-rw---- and the state is private.
func TestFileModes(t *testing.T) {
	d := startDaemon(t, workDir(t))
	fi, err := os.Lstat(d.socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket %s mode = %v, want srw-rw----", d.socket, fi.Mode())
	}
	if want := filepath.Join(d.dir, ".coffer", "coffer.sock"); d.socket != want {
		// the dir may be reached through a symlink (e.g. /tmp); compare resolved
		a, _ := filepath.EvalSymlinks(filepath.Dir(d.socket))
		b, _ := filepath.EvalSymlinks(filepath.Dir(want))
		if a != b || filepath.Base(d.socket) != "coffer.sock" {
			t.Errorf("socket = %s, want %s", d.socket, want)
		}
	}
	if !filepath.IsAbs(d.socket) {
		t.Errorf("exported socket path %q is not absolute", d.socket)
	}
	for path, want := range map[string]os.FileMode{
		d.stateDir:                                     0o700,
		filepath.Join(d.stateDir, "data"):              0o700,
		filepath.Join(d.stateDir, "store.key"):         0o600,
		filepath.Join(d.stateDir, "hsm"):               0o700,
		filepath.Join(d.stateDir, "hsm", "tokens"):     0o700,
		filepath.Join(d.stateDir, "hsm", "hsm-pin"):    0o600,
		filepath.Join(d.stateDir, "hsm", "hsm-so-pin"): 0o600,
	} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Errorf("stat %s: %v", path, err)
			continue
		}
		if fi.Mode().Perm()&^want != 0 {
			t.Errorf("%s mode %v, want at most %v", path, fi.Mode().Perm(), want)
		}
	}
	// group and others cannot enter any directory of the state (files
	// inside, such as Badger's 0644 ones, are protected by that)
	err = filepath.WalkDir(d.stateDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.IsDir() {
			return err
		}
		fi, err := e.Info()
		if err != nil {
			return nil // Badger may remove files while we walk
		}
		if fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s is %v: readable by group or others", path, fi.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
