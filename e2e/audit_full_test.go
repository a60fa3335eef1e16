package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// The audit trail fails closed, on a real full filesystem: with the audit
// log's directory on a tmpfs filled to ENOSPC, changes wait in the store
// and then are refused with 503 audit_unavailable (nothing acknowledged
// that the log will not get), deliveries go on, and once there is room
// again every acknowledged change reaches the log, in order, and changes
// are accepted again — no restart.
func TestAuditFullDiskRefusesChanges(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	dir := workDir(t)
	auditDir := filepath.Join(dir, ".coffer", "audit")
	mountTmpfs(t, auditDir, 4<<20)
	d := startDaemon(t, dir)
	d.newUser(t, "consumer")
	d.setRole(t, "default", "consumer", "reader")
	sec := d.createSecret(t, "default", "db", []byte("DBPASS"), nil)
	d.bind(t, sec.ID, map[string]string{"user": "consumer", "name": "db"})
	tok := secretOf(d.newCred(t, "default", map[string]any{"type": "access-token", "user": "consumer"}))

	ballastFile := filepath.Join(auditDir, "ballast")
	ballast(t, ballastFile, -1)

	var acked []string
	refused := false
	deadline := time.Now().Add(30 * time.Second)
	for !refused && time.Now().Before(deadline) {
		res := d.api(t, "POST", "/v1/projects/default/secrets", map[string]string{"display_name": "during", "payload": b64([]byte("x"))})
		switch res.status {
		case http.StatusCreated:
			var s secret
			if err := decodeJSON(res.body, &s); err != nil {
				t.Fatal(err)
			}
			acked = append(acked, s.ID)
			time.Sleep(20 * time.Millisecond)
		case http.StatusServiceUnavailable:
			wantError(t, res, http.StatusServiceUnavailable, "audit_unavailable")
			refused = true
		default:
			t.Fatalf("a change while the audit log is full: status %d %s", res.status, res.body)
		}
	}
	if !refused {
		t.Fatalf("%d changes were acknowledged while the audit log could not take them, and none refused", len(acked))
	}
	t.Logf("%d changes acknowledged (waiting in the store), then refused", len(acked))
	// Reads and deliveries go on.
	if res := d.mustBearer(t, tok, "GET", "/v1/deliver/db", nil, http.StatusOK, nil); string(res.body) != "DBPASS" {
		t.Errorf("delivery while the audit log is full: %q", res.body)
	}

	if err := os.Remove(ballastFile); err != nil {
		t.Fatal(err)
	}
	for _, id := range acked {
		d.waitAudit(t, "the acknowledged change "+id, "secret.create", "ok", map[string]string{"secret": id}, "")
	}
	after := d.createSecret(t, "default", "after", []byte("x"), nil)
	d.waitAudit(t, "the change after recovery", "secret.create", "ok", map[string]string{"secret": after.ID}, "")
	var last uint64
	for _, e := range d.auditEntriesRaw(t) {
		if e.Type != "event" || e.Change == 0 {
			continue
		}
		if e.Change <= last {
			t.Errorf("change %d after %d in the log", e.Change, last)
		}
		last = e.Change
	}
	noCrashIn(t, "the daemon log", d.stderr.String())
}
