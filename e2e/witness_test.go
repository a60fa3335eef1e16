package e2e

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The audit log witnesses the store: a store that lost acknowledged
// changes in a way its own files cannot tell — here, an older copy of the
// store put back with its key and witness file, as a careless restore from
// a file-level copy would — is refused at start with one line that names
// the gap and the way back, instead of serving the older state.
func TestStoreThatLostChangesIsRefused(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)
	d.createSecret(t, "default", "kept", []byte("payload"), nil)
	d.Stop(t)
	aside := workDir(t)
	for _, name := range []string{"data", "store.key", "store.witness"} {
		copyTree(t, filepath.Join(d.stateDir, name), filepath.Join(aside, name))
	}
	d = startDaemon(t, dir)
	for range 5 {
		d.createSecret(t, "default", "lost", []byte("payload"), nil)
	}
	d.Stop(t)
	for _, name := range []string{"data", "store.key", "store.witness"} {
		if err := os.RemoveAll(filepath.Join(d.stateDir, name)); err != nil {
			t.Fatal(err)
		}
		copyTree(t, filepath.Join(aside, name), filepath.Join(d.stateDir, name))
	}

	d2 := launchDaemon(t, dir, "daemon", "--dev")
	if code := d2.waitExit(t); code == 0 {
		t.Fatalf("the daemon served a store that lost its changes\nstderr:\n%s", d2.stderr)
	}
	last := lastLine(d2.stderr.String())
	for _, want := range []string{"the audit log records state change", "but the store's last change is", "coffer restore"} {
		if !strings.Contains(last, want) {
			t.Errorf("the last line does not say %q:\n%s", want, last)
		}
	}
	if strings.Contains(d2.stdout.String(), exportPrefix) {
		t.Errorf("the refused daemon printed the export line:\n%s", d2.stdout)
	}
}

// lastLine is the last non-empty line of s.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// Restoring an older backup over a state directory whose audit log has
// gone on is no loss of changes: the restore is itself a change, numbered
// past the log's last one, and the daemon starts on the restored store
// and records it.
func TestRestoreOfAnOlderBackupStarts(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	d := startDaemon(t, dir)
	old := d.createSecret(t, "default", "before the backup", []byte("payload"), nil)
	file := filepath.Join(workDir(t), "old.backup")
	d.mustCLI(t, "", "backup", file)
	newer := d.createSecret(t, "default", "after the backup", []byte("payload"), nil)
	d.Stop(t)

	if r := restoreCLI(t, file, dir, "--force"); r.code != 0 {
		t.Fatalf("restore: %s", r)
	}
	d = startDaemon(t, dir)
	d.mustAPI(t, "GET", "/v1/secrets/"+old.ID, nil, http.StatusOK, nil)
	if res := d.api(t, "GET", "/v1/secrets/"+newer.ID, nil); res.status != http.StatusNotFound {
		t.Errorf("a secret made after the backup: status %d, want 404", res.status)
	}
	e := d.waitAudit(t, "the restore", "store.restore", "ok", map[string]string{"backup": "old.backup"}, "")
	d.createSecret(t, "default", "after the restore", []byte("payload"), nil)
	es := d.auditEntriesRaw(t)
	var changes []uint64
	for _, x := range es {
		if x.Type == "event" && x.Change > 0 {
			changes = append(changes, x.Change)
		}
	}
	for i := 1; i < len(changes); i++ {
		if changes[i] <= changes[i-1] {
			t.Errorf("change numbers go back in the log: %v", changes)
			break
		}
	}
	if e.Change == 0 {
		t.Errorf("the restore is not a numbered change: %+v", e)
	}
}
