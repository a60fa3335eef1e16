//go:build nodaemon

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// coffer-client reads a policy document but cannot compile it: policy
// check says so (exit 2) instead of passing what it did not check.
func TestPolicyCheckNotInThisBuild(t *testing.T) {
	var stdout, stderr bytes.Buffer
	doc := "rules:\n- effect: deny\n  condition: request.method == \"DELETE\"\n"
	code := run(context.Background(), []string{"coffer", "policy", "check", "--file", "-"}, strings.NewReader(doc), &stdout, &stderr)
	if code != exitUsage || stdout.Len() != 0 || !strings.Contains(stderr.String(), "not in this build") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want %d, not in this build", code, stdout.String(), stderr.String(), exitUsage)
	}
}
