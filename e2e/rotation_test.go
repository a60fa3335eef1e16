package e2e

// End-to-end tests of key rotation (issue 5): the KEK is rotated through
// the CLI and every secret is re-wrapped; a second rotation is killed with
// SIGKILL and finished by the next start; old KEKs are destroyed; a JWT
// signed before a signing key rotation keeps verifying against the JWKS,
// and new JWTs carry the new kid.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/audit"
)

// hsmKeys reads GET /v1/hsm/keys.
func (d *daemonProc) hsmKeys(t *testing.T) api.HSMKeys {
	t.Helper()
	var k api.HSMKeys
	d.mustAPI(t, "GET", "/v1/hsm/keys", nil, http.StatusOK, &k)
	return k
}

// waitRewrapDone waits for the KEK rotation to target to be done.
func (d *daemonProc) waitRewrapDone(t *testing.T, target string) api.HSMKeys {
	t.Helper()
	deadline := time.Now().Add(startTimeout)
	for {
		k := d.hsmKeys(t)
		if r := k.Rotation; r != nil && r.Target == target && r.State == "done" {
			return k
		}
		if time.Now().After(deadline) {
			t.Fatalf("the KEK re-wrap to %s is not done after %s: %+v\nstderr:\n%s", target, startTimeout, k.Rotation, d.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func kekRows(k api.HSMKeys) string {
	var b strings.Builder
	for _, v := range k.KEKs {
		fmt.Fprintf(&b, "%s:%d", v.Label, v.Records)
		if v.Current {
			b.WriteString("*")
		}
		b.WriteString(" ")
	}
	return b.String()
}

func TestKeyRotation(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)
	d.newUser(t, "rot")
	d.setRole(t, "default", "rot", "member")
	tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "rot"}).Token
	oc := d.newCred(t, "default", map[string]any{"type": "oauth2", "user": "rot"})

	// 300 secrets (two re-wrap batches), each bound to the workload user.
	const n = 300
	mark := canary("ROTCANARY-")
	want := map[string][]byte{}
	for i := range n {
		p := make([]byte, 1+i%200)
		rand.Read(p)
		if i == 7 {
			p = []byte(mark)
		}
		var kvs map[string]string
		if i%5 == 0 {
			kvs = map[string]string{"k": fmt.Sprint(i)}
		}
		s := d.createSecret(t, "default", fmt.Sprintf("s%d", i), p, kvs)
		name := fmt.Sprintf("n%d", i)
		d.bind(t, s.ID, map[string]string{"user": "rot", "name": name})
		want[name] = p
	}
	deliverAll := func(d *daemonProc, when string) {
		t.Helper()
		for name, p := range want {
			res := d.bearer(t, tok, "GET", "/v1/deliver/"+name, nil)
			if res.status != http.StatusOK || !bytes.Equal(res.body, p) {
				t.Fatalf("%s: deliver %s: status %d, %d bytes that are not its %d-byte payload", when, name, res.status, len(res.body), len(p))
			}
		}
	}
	deliverAll(d, "before rotation")
	jwtBefore := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
	set := d.fetchJWKS(t)
	if len(set.Keys) != 1 {
		t.Fatalf("JWKS has %d keys before rotation", len(set.Keys))
	}
	kid1 := set.Keys[0].KeyID

	// Only system admins manage keys; a bearer gets 403 before anything.
	for _, req := range []struct{ method, path string }{
		{"GET", "/v1/hsm/keys"}, {"POST", "/v1/hsm/kek:rotate"},
		{"DELETE", "/v1/hsm/keks/coffer-kek-1"}, {"POST", "/v1/hsm/signing-key:rotate"},
	} {
		wantError(t, d.bearer(t, tok, req.method, req.path, nil), http.StatusForbidden, "forbidden")
	}

	// KEK rotation through the CLI: it waits for the re-wrap.
	var rot api.KEKRotation
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "hsm", "rotate-kek").stdout, &rot)
	if rot.State != "done" || rot.Target != "coffer-kek-2" || rot.Previous != "coffer-kek-1" || rot.Rewrapped != n || rot.Remaining != 0 || rot.Failed != 0 {
		t.Fatalf("rotate-kek: %+v", rot)
	}
	if got := kekRows(d.hsmKeys(t)); got != fmt.Sprintf("coffer-kek-1:0 coffer-kek-2:%d* ", n) {
		t.Fatalf("KEKs after rotation: %s", got)
	}
	deliverAll(d, "after KEK rotation")
	if r := d.cli(t, "", "hsm", "remove-kek", "coffer-kek-2"); r.code != 1 || !strings.Contains(r.stderr, "is the current KEK (conflict)") {
		t.Fatalf("remove the current KEK:\n%s", r)
	}
	wantError(t, d.api(t, "DELETE", "/v1/hsm/keks/coffer-kek-9", nil), http.StatusNotFound, "not_found")

	// Signing key rotation: the old key stays published.
	var sr api.SigningKeyRotation
	decodeOutput(t, "json", d.mustCLI(t, "", "-o", "json", "hsm", "rotate-signing-key").stdout, &sr)
	if sr.Current.Label != "coffer-sig-2" || sr.Previous.Label != "coffer-sig-1" || sr.Previous.Kid != kid1 || sr.Previous.RetireAfter == nil || !sr.Previous.Published {
		t.Fatalf("rotate-signing-key: %+v", sr)
	}
	jwtAfter := d.oauthToken(t, oc.ClientID, oc.ClientSecret).AccessToken
	checkJWTs := func(d *daemonProc, when string) {
		t.Helper()
		set := d.fetchJWKS(t)
		if len(set.Keys) != 2 || set.Keys[0].KeyID != sr.Current.Kid || set.Keys[1].KeyID != kid1 {
			t.Fatalf("%s: JWKS kids %v, want [%s %s]", when, set.Keys, sr.Current.Kid, kid1)
		}
		for _, c := range []struct {
			name, tok, kid string
		}{{"JWT from before", jwtBefore, kid1}, {"JWT from after", jwtAfter, sr.Current.Kid}} {
			_, h, err := verifyJWT(t, set, c.tok)
			if err != nil || h.KeyID != c.kid {
				t.Fatalf("%s: %s: kid %q (want %q), verify: %v", when, c.name, h.KeyID, c.kid, err)
			}
			d.wantWorks(t, when+": "+c.name, c.tok)
		}
	}
	checkJWTs(d, "after signing key rotation")

	// A second KEK rotation, and the daemon is killed at once: the next
	// start finishes the re-wrap from where it was.
	d.mustCLI(t, "", "hsm", "rotate-kek", "--no-wait")
	d.Kill(t)
	d2 := startDaemon(t, dir)
	k := d2.waitRewrapDone(t, "coffer-kek-3")
	if got := kekRows(k); got != fmt.Sprintf("coffer-kek-1:0 coffer-kek-2:0 coffer-kek-3:%d* ", n) {
		t.Fatalf("KEKs after the restart: %s", got)
	}
	if k.Rotation.Remaining != 0 || k.Rotation.Failed != 0 {
		t.Fatalf("rotation after the restart: %+v", k.Rotation)
	}
	t.Logf("after SIGKILL: %d records were re-wrapped in total; the restart resumed: %v",
		k.Rotation.Rewrapped, strings.Contains(d2.stderr.String(), "KEK re-wrap running"))
	deliverAll(d2, "after the restart")

	// store.key moved with the records.
	var sk struct {
		Sealed struct {
			KEK string `json:"kek"`
		} `json:"sealed"`
	}
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(d2.stateDir, "store.key"))), &sk); err != nil || sk.Sealed.KEK != "coffer-kek-3" {
		t.Fatalf("store.key is sealed by %q (%v), want coffer-kek-3", sk.Sealed.KEK, err)
	}

	// Old KEKs go once nothing uses them.
	d2.mustCLI(t, "", "hsm", "remove-kek", "coffer-kek-1")
	d2.mustCLI(t, "", "hsm", "remove-kek", "coffer-kek-2")
	if got := kekRows(d2.hsmKeys(t)); got != fmt.Sprintf("coffer-kek-3:%d* ", n) {
		t.Fatalf("KEKs after removal: %s", got)
	}
	audited := d2.mustCLI(t, "", "-o", "json", "audit", "tail", "-n", "5").stdout
	for _, s := range []string{`"action":"hsm.kek_remove"`, `"kek":"coffer-kek-1"`, `"kek":"coffer-kek-2"`} {
		if !strings.Contains(audited, s) {
			t.Errorf("audit log lacks %s:\n%s", s, audited)
		}
	}
	deliverAll(d2, "after removing the old KEKs")
	checkJWTs(d2, "after the restart")
	var st status
	d2.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	if strings.Join(st.HSM.KeyLabels, ",") != "coffer-kek-3,coffer-sig-2,coffer-import-1" {
		t.Fatalf("status key labels %v", st.HSM.KeyLabels)
	}

	// The table output names the keys; nothing secret anywhere.
	out := d2.mustCLI(t, "", "hsm", "keys").stdout
	for _, s := range []string{"coffer-kek-3", "coffer-sig-1", "coffer-sig-2", kid1, "done"} {
		if !strings.Contains(out, s) {
			t.Errorf("hsm keys table lacks %q:\n%s", s, out)
		}
	}
	d2.Stop(t)
	for _, dp := range []*daemonProc{d, d2} {
		scanText(t, "daemon log", []byte(dp.stderr.String()), secretNeedles("payload", mark))
	}
	scanTree(t, d2.stateDir, secretNeedles("payload", mark))
}

// TestAuditAcrossSigningKeyRotation: audit checkpoints signed before and
// after a signing key rotation all verify.
func TestAuditAcrossSigningKeyRotation(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "before"}, http.StatusCreated, nil)
	d.Stop(t) // a checkpoint signed with coffer-sig-1

	d2 := startDaemon(t, dir)
	d2.mustCLI(t, "", "hsm", "rotate-signing-key")
	d2.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "after"}, http.StatusCreated, nil)
	d2.Stop(t) // one signed with coffer-sig-2

	d3 := startDaemon(t, dir)
	var rep audit.Report
	decodeOutput(t, "json", d3.mustCLI(t, "", "-o", "json", "audit", "verify").stdout, &rep)
	if !rep.OK || rep.Checkpoints < 2 {
		t.Fatalf("audit verify after a signing key rotation: %+v", rep)
	}
}
