package e2e

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestStorageReadOnly puts the state directory on a loop-mounted ext4
// and makes it fail under 4 writers (ext4 turns itself read-only, as it
// does on a disk error): the first failed write stops all writes (503
// store_unavailable, also when the audit log beside it failed first),
// with no panic however many requests follow (Badger,
// retried, would rotate into a memtable it cannot create and panic on
// every read); reads and deliveries go on; status, one journal line and
// the watchdog (pinged, STATUS= degraded) tell the truth; SIGTERM stops
// the daemon at once. Then the operator's repair (unmount, fsck, mount)
// and a start bring every acknowledged write back.
func TestStorageReadOnly(t *testing.T) {
	requireRoot(t)
	dir := workDir(t)
	fs := newExt4(t, filepath.Join(dir, ".coffer"), 256<<20)
	n := listenNotify(t)
	d := startDaemonWith(t, dir, []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=400000"})
	n.next(t, d, "READY", "1", startTimeout)
	n.next(t, d, "WATCHDOG", "1", 5*time.Second)

	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "app", "kind": "workload"}, http.StatusCreated, nil)
	d.setRole(t, "default", "app", "reader")
	tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "app"}).Token
	payload, _ := binaryPayload("DELIVERED-READ-ONLY-")
	bound := d.createSecret(t, "default", "bound", payload, nil)
	d.bind(t, bound.ID, map[string]string{"user": "app", "name": "db"})
	deliver := func(when string) {
		t.Helper()
		if res := d.bearer(t, tok, "GET", "/v1/deliver/db", nil); res.status != http.StatusOK || !bytes.Equal(res.body, payload) {
			t.Errorf("delivery %s: %d %q", when, res.status, res.body)
		}
	}

	var acked map[string]string
	var wg sync.WaitGroup
	// The first refusal comes from the store (its commit failed) or from
	// the audit log on the same filesystem (its append failed first, and
	// changes wait for it no more): either way the store is failed next.
	wg.Go(func() {
		acked = writers(t, d, 4, bytes.Repeat([]byte("r"), 1024), "store_unavailable", "audit_unavailable")
	})
	time.Sleep(500 * time.Millisecond)
	fs.fail(t)
	wg.Wait()
	acked[bound.ID] = "bound"
	t.Logf("%d writes acknowledged before the filesystem turned read-only", len(acked))
	waitStoreState(t, d, "failed")

	// Keep the daemon busy for a while: writes refused, reads served.
	deadline := time.Now().Add(2 * time.Second)
	for i := 0; time.Now().Before(deadline); i++ {
		wantError(t, d.api(t, "POST", "/v1/projects/default/secrets", map[string]any{"display_name": "refused", "payload": b64([]byte("x"))}),
			http.StatusServiceUnavailable, "store_unavailable")
		deliver("while the filesystem is read-only")
		d.mustAPI(t, "GET", "/v1/secrets/"+bound.ID, nil, http.StatusOK, nil)
		d.mustAPI(t, "GET", "/v1/projects/default/secrets?limit=10", nil, http.StatusOK, nil)
	}
	st := waitStoreState(t, d, "failed")
	// ext4 answers the write under way when it fails with EIO, later ones
	// with EROFS: the first failure is the one reported.
	if cause := st.Store.Error; st.Store.Healthy || st.Store.Since == nil || !strings.HasPrefix(cause, "failed: a write failed") ||
		!strings.Contains(cause, "input/output error") && !strings.Contains(cause, "read-only file system") {
		t.Errorf("status while read-only: %+v, want unhealthy, saying the write failed and why, since when", st.Store)
	}
	m := n.next(t, d, "STATUS", "*", 5*time.Second)
	for !strings.Contains(m.vars["STATUS"], "degraded") {
		m = n.next(t, d, "STATUS", "*", 5*time.Second)
	}
	if !strings.Contains(m.vars["STATUS"], "store") {
		t.Errorf("watchdog STATUS=%q, want it to name the store", m.vars["STATUS"])
	}
	n.next(t, d, "WATCHDOG", "1", 5*time.Second) // still pinged: reads are served

	start := time.Now()
	d.Stop(t)
	if took := time.Since(start); took > 10*time.Second {
		t.Errorf("stopping on a read-only filesystem took %v", took)
	}
	log := d.stderr.String()
	noCrashIn(t, "a read-only filesystem", log)
	if k := len(logLines(log, "a write to the store failed")); k != 1 {
		t.Errorf("%d journal lines saying a store write failed, want 1:\n%s", k, logTail(log, 30))
	}
	if k := len(logLines(log, "not closing the store cleanly")); k != 1 {
		t.Errorf("%d lines saying the store is left for the next start to replay, want 1", k)
	}

	fs.repair(t)
	d2 := startDaemon(t, dir)
	d2.waitLog(t, "start-up", "coffer is serving")
	if len(logLines(d2.stderr.String(), "not closed cleanly")) != 1 {
		t.Errorf("restart after the repair: no line saying the store was recovered from its write-ahead log:\n%s", logTail(d2.stderr.String(), 20))
	}
	checkAcked(t, d2, acked)
	d2.createSecret(t, "default", "after the repair", []byte("writable again"), nil)
	if res := d2.bearer(t, tok, "GET", "/v1/deliver/db", nil); res.status != http.StatusOK || !bytes.Equal(res.body, payload) {
		t.Errorf("delivery after the repair: %d %q", res.status, res.body)
	}
	noCrashIn(t, "the restart after the repair", d2.stderr.String())
}
