package e2e

// End-to-end tests of encrypted backups (issue 5): coffer backup while
// writes go on, coffer restore into a new state directory on the same HSM
// token, a daemon started on it serving every secret's exact payload and
// the same records, and every way a restore must refuse.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/coffer-hsm/coffer/api"
)

// sameTokenState makes dir/.coffer/hsm a copy of d's dev token: a new
// state directory on the same HSM (as after losing the disk but not the
// HSM).
func sameTokenState(t *testing.T, d *daemonProc) string {
	t.Helper()
	dir := workDir(t)
	if err := os.Mkdir(filepath.Join(dir, ".coffer"), 0o700); err != nil {
		t.Fatal(err)
	}
	copyTree(t, filepath.Join(d.stateDir, "hsm"), filepath.Join(dir, ".coffer", "hsm"))
	return dir
}

// restoreCLI runs coffer restore FILE --dev --state-dir dir/.coffer (plus args).
func restoreCLI(t *testing.T, file, dir string, args ...string) cliResult {
	t.Helper()
	return runCLI(t, "", "", append([]string{"restore", file, "--dev", "--state-dir", filepath.Join(dir, ".coffer")}, args...)...)
}

// written is a secret the background writer created, in order.
type written struct {
	id      string
	payload []byte
	cred    string // unit credential name it is bound to
}

// writeWhileBackingUp creates and binds secrets one after the other until
// stop is closed, and returns them in the order they were acknowledged.
func writeWhileBackingUp(socket, proj string, stop <-chan struct{}) ([]written, error) {
	c := httpClient(socket)
	defer c.CloseIdleConnections()
	post := func(path string, body any, out any) error {
		b, _ := json.Marshal(body)
		resp, err := c.Post("http://coffer"+path, "application/json", bytes.NewReader(b))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		rb, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusCreated {
			return fmt.Errorf("POST %s: %d %s", path, resp.StatusCode, rb)
		}
		return json.Unmarshal(rb, out)
	}
	var out []written
	for i := 0; ; i++ {
		select {
		case <-stop:
			return out, nil
		default:
		}
		payload, _ := binaryPayload(fmt.Sprintf("DURING%d-", i))
		var s secret
		if err := post("/v1/projects/"+proj+"/secrets", map[string]any{"display_name": fmt.Sprintf("during %d", i), "payload": b64(payload)}, &s); err != nil {
			return out, err
		}
		w := written{id: s.ID, payload: payload, cred: fmt.Sprintf("during%d", i)}
		var b api.Binding
		if err := post("/v1/secrets/"+s.ID+"/bindings", map[string]string{"unit": "during.service", "credential": w.cred}, &b); err != nil {
			return out, err
		}
		out = append(out, w)
	}
}

// TestBackupAndRestore takes a backup while secrets are being written,
// restores it into a new state directory on the same HSM token, and starts
// a daemon there: every secret of the snapshot delivers its exact payload,
// records and bearer credentials are the same, the secrets written during
// the backup are a prefix of the acknowledged ones, and the backup file
// holds none of the plaintext.
func TestBackupAndRestore(t *testing.T) {
	dirA := workDir(t)
	a := startDaemon(t, dirA)
	proj := strings.ToLower(canary("bkproj-")[:20])
	a.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": proj}, http.StatusCreated, nil)
	user := a.newUser(t, "bk-worker")
	a.setRole(t, proj, user.Name, "reader")
	cred := a.newCred(t, proj, map[string]any{"type": "access-token", "user": user.Name})
	token := secretOf(cred)

	var needles []needle
	var before []secret
	delivers := map[string][]byte{} // unit credential name -> what it must deliver
	for i := range 6 {
		payload, marker := binaryPayload(fmt.Sprintf("BKPAYLOAD%d-", i))
		kv := canary("BKKV-")
		display := canary("BKDISPLAY-")
		s := a.createSecret(t, proj, display, payload, map[string]string{"k": kv})
		a.bind(t, s.ID, map[string]string{"unit": "bk.service", "credential": fmt.Sprintf("c%d", i)})
		needles = append(needles, payloadNeedles("payload", payload, marker)...)
		needles = append(needles, needle{"key value", kv}, needle{"display name", display})
		before = append(before, s)
		delivers[fmt.Sprintf("c%d", i)] = payload
	}
	p2, m2 := binaryPayload("BKROTATED-")
	needles = append(needles, payloadNeedles("rotated payload", p2, m2)...)
	before[0] = a.rotateSecret(t, before[0].ID, p2, 1)
	before[0].UnitActions = nil // what the rotation did to bk.service: its answer's, not the record's
	delivers["c0"] = p2
	a.mustAPI(t, "POST", "/v1/secrets/"+before[1].ID+"/revoke", nil, http.StatusOK, &before[1])
	delivers["c1"] = nil // revoked: nothing to deliver
	a.mustAPI(t, "DELETE", "/v1/secrets/"+before[2].ID, nil, http.StatusNoContent, nil)
	delivers["c2"] = nil
	deleted := before[2]
	before = append(before[:2], before[3:]...)
	needles = append(needles, needle{"project name", proj})

	// the backup, while a writer creates and binds secrets
	stop := make(chan struct{})
	var during []written
	var writeErr error
	var wg sync.WaitGroup
	var started atomic.Bool
	wg.Go(func() {
		started.Store(true)
		during, writeErr = writeWhileBackingUp(a.socket, proj, stop)
	})
	file := filepath.Join(workDir(t), "coffer.backup")
	r := a.mustCLI(t, "", "-o", "json", "backup", file)
	a.createSecret(t, proj, "after the backup", []byte("not in the backup"), nil)
	close(stop)
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("writer: %v", writeErr)
	}
	var info struct {
		File       string `json:"file"`
		Bytes      int64  `json:"bytes"`
		CreatedAt  string `json:"created_at"`
		TokenLabel string `json:"token_label"`
		KEKLabel   string `json:"kek_label"`
		Format     int    `json:"format"`
	}
	decodeOutput(t, "json", r.stdout, &info)
	fi, err := os.Stat(file)
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != info.Bytes || info.TokenLabel != "coffer-dev" || info.KEKLabel != "coffer-kek-1" || info.Format != 1 {
		t.Fatalf("backup file: %v, mode %v, size %d; output %+v", err, fi.Mode(), fi.Size(), info)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(file), ".*")); len(left) > 0 {
		t.Errorf("partial files left: %v", left)
	}
	scanText(t, "backup file", []byte(readFile(t, file)), needles)
	scanText(t, "backup output", []byte(r.stdout+r.stderr), needles)
	t.Logf("backup: %d bytes; %d secrets written while it ran", info.Bytes, len(during))

	// restore into a new state dir on the same token, and serve it
	dirB := sameTokenState(t, a)
	rr := restoreCLI(t, file, dirB)
	if rr.code != 0 || !strings.Contains(rr.stdout, "KEK coffer-kek-1 on HSM token coffer-dev") {
		t.Fatalf("restore:\n%s", rr)
	}
	b := startDaemon(t, dirB)
	credsB := filepath.Join(b.stateDir, "creds.sock")

	for _, w := range before {
		var got secret
		b.mustAPI(t, "GET", "/v1/secrets/"+w.ID, nil, http.StatusOK, &got)
		sameJSON(t, "restored secret "+w.DisplayName, got, w)
	}
	wantError(t, b.api(t, "GET", "/v1/secrets/"+deleted.ID, nil), http.StatusNotFound, "not_found")
	for name, want := range delivers {
		if got := loadCred(t, credsB, systemdAddr("bk.service", name)); !bytes.Equal(got, want) {
			t.Errorf("restored delivery of %s: %d bytes, want its %d", name, len(got), len(want))
		}
	}

	// the secrets written during the backup: a prefix of the acknowledged
	// ones, each with its binding except perhaps the last
	var listA, listB list[secret]
	a.mustAPI(t, "GET", "/v1/projects/"+proj+"/secrets?limit=1000", nil, http.StatusOK, &listA)
	b.mustAPI(t, "GET", "/v1/projects/"+proj+"/secrets?limit=1000", nil, http.StatusOK, &listB)
	inB := map[string]secret{}
	for _, s := range listB.Items {
		inB[s.ID] = s
	}
	recA := map[string]secret{}
	for _, s := range listA.Items {
		recA[s.ID] = s
	}
	for id, s := range inB {
		sameJSON(t, "restored record "+id, s, recA[id])
	}
	k := 0
	for k < len(during) && inB[during[k].id].ID != "" {
		k++
	}
	for _, w := range during[k:] {
		if _, ok := inB[w.id]; ok {
			t.Errorf("secret %s is in the backup but one written before it is not: not one snapshot", w.id)
		}
	}
	if want := len(before) + k; len(inB) != want {
		t.Errorf("restored %d secrets, want %d (%d before the backup, %d written during it)", len(inB), want, len(before), k)
	}
	for i, w := range during[:k] {
		got := loadCred(t, credsB, systemdAddr("during.service", w.cred))
		if !bytes.Equal(got, w.payload) && !(i == k-1 && len(got) == 0) {
			t.Errorf("restored delivery of %s: %d bytes, not its payload", w.cred, len(got))
		}
	}
	t.Logf("%d of %d secrets written during the backup are in it", k, len(during))

	// users, projects and credentials came back too: the bearer token works
	for _, path := range []string{"/v1/projects", "/v1/users", "/v1/credentials/" + cred.ID} {
		ra, rb := a.api(t, "GET", path, nil), b.api(t, "GET", path, nil)
		if ra.status != http.StatusOK || !bytes.Equal(ra.body, rb.body) {
			t.Errorf("GET %s differs after restore:\n%s\n%s", path, ra.body, rb.body)
		}
	}
	b.mustBearer(t, token, "GET", "/v1/projects/"+proj+"/secrets", nil, http.StatusOK, nil)

	// restore refuses a running daemon's store, and a store without --force
	if res := restoreCLI(t, file, dirB, "--force"); res.code != 1 || !strings.Contains(res.stderr, fmt.Sprintf("is in use by a coffer daemon (pid %d): stop it before restoring", b.cmd.Process.Pid)) {
		t.Errorf("restore over a running daemon:\n%s", res)
	}
	b.Stop(t)
	if res := restoreCLI(t, file, dirB); res.code != 1 || !strings.Contains(res.stderr, "already holds a store: restore replaces it only with --force") {
		t.Errorf("restore over a store without --force:\n%s", res)
	}
	if res := restoreCLI(t, file, dirB, "--force"); res.code != 0 {
		t.Errorf("restore --force:\n%s", res)
	}
	b2 := startDaemon(t, dirB)
	b2.mustAPI(t, "GET", "/v1/secrets/"+before[3].ID, nil, http.StatusOK, nil)
}

// TestRestoreRefusals: a backup another HSM sealed, a changed one and a cut
// one are refused with a clear message, and the target keeps nothing.
func TestRestoreRefusals(t *testing.T) {
	dirA := workDir(t)
	a := startDaemon(t, dirA)
	for i := range 30 {
		a.createSecret(t, "default", fmt.Sprintf("s%d", i), bytes.Repeat([]byte{byte(i)}, 3000), nil)
	}
	file := filepath.Join(workDir(t), "a.backup")
	a.mustCLI(t, "", "backup", file)
	full := []byte(readFile(t, file))
	write := func(name string, b []byte) string {
		p := filepath.Join(filepath.Dir(file), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	changed := bytes.Clone(full)
	changed[len(changed)-2000] ^= 0x01
	cut := full[:len(full)-1000]

	// another dev token that has its own coffer-kek-1: a daemon ran on it
	otherKEK := func(t *testing.T) string {
		dir := workDir(t)
		startDaemon(t, dir).Stop(t)
		for _, name := range []string{"data", "store.key", "store.witness", "audit"} {
			if err := os.RemoveAll(filepath.Join(dir, ".coffer", name)); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	sameHSM := func(t *testing.T) string { return sameTokenState(t, a) }
	for _, c := range []struct {
		name     string
		file     string
		target   func(t *testing.T) string // nil: a new dev state dir (a token without keys)
		want     string
		wantCode int
	}{
		{"another dev token", file, otherKEK, "backup " + file + " was sealed by KEK coffer-kek-1 on token coffer-dev; this HSM (token coffer-dev) cannot unseal it", 1},
		{"a token without keys", file, nil, "backup " + file + " was sealed by KEK coffer-kek-1 on token coffer-dev; this HSM cannot unseal it: HSM KEK coffer-kek-1 is missing from token coffer-dev", 1},
		{"changed", write("changed.backup", changed), sameHSM, "does not authenticate (changed, moved, or from another backup)", 1},
		{"cut short", write("cut.backup", cut), sameHSM, "cut short", 1},
		{"not a backup", write("notes.txt", []byte("just some notes\n")), sameHSM, "not an intact coffer backup", 1},
		{"missing file", filepath.Join(t.TempDir(), "none"), sameHSM, "open backup: ", 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := workDir(t)
			if c.target != nil {
				dir = c.target(t)
			}
			res := restoreCLI(t, c.file, dir)
			if res.code != c.wantCode || !strings.Contains(res.stderr, c.want) {
				t.Fatalf("want exit %d and %q:\n%s", c.wantCode, c.want, res)
			}
			if n := strings.Count(strings.TrimSpace(res.stderr), "\n"); n != 0 {
				t.Errorf("error is %d lines, want one:\n%s", n+1, res.stderr)
			}
			noPanic(t, res.stderr)
			es, _ := os.ReadDir(filepath.Join(dir, ".coffer"))
			for _, e := range es {
				if e.Name() != "hsm" {
					t.Errorf("the failed restore left %s in the state dir", e.Name())
				}
			}
		})
	}
}
