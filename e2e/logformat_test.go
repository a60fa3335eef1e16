package e2e

// Issue 15, readable logs: --log-format and log_format in the config file.

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestLogFormat(t *testing.T) {
	t.Parallel()
	dir := workDir(t)

	// An unknown format is a usage error.
	bad := launchDaemon(t, dir, "daemon", "--dev", "--log-format", "xml")
	if code := bad.waitExit(t); code != 2 || strings.TrimSpace(bad.stderr.String()) != `coffer: unknown --log-format "xml": auto, text, json or journal (see 'coffer daemon --help')` {
		t.Fatalf("--log-format xml: exit %d, stderr %q", code, bad.stderr)
	}

	// log_format = "json" in the config file: every line of stderr is a
	// JSON object, and a change is said in words with its ids as keys.
	cfg := filepath.Join(dir, "coffer.toml")
	if err := os.WriteFile(cfg, []byte("log_format = \"json\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "--config", cfg)
	u := d.newUser(t, "log-reader")
	d.Stop(t)
	found := false
	for _, line := range strings.Split(strings.TrimSpace(d.stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("log_format = \"json\": a line that is no JSON object: %q", line)
		}
		if rec["msg"] == "user "+u.ID[:8]+"… created by uid 0" && rec["user"] == u.ID && rec["action"] == "user.create" {
			found = true
		}
		if strings.Contains(line, "log-reader") {
			t.Errorf("a log line names the user: %s", line)
		}
	}
	if !found {
		t.Errorf("no record \"user %s… created by uid 0\" with user and action:\n%s", u.ID[:8], d.stderr)
	}
}
