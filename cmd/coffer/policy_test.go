//go:build !nodaemon

package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// coffer policy check compiles a document as the daemon would, with no
// daemon: a typo is reported with its rule, line and column and exits 1.
func TestPolicyCheck(t *testing.T) {
	tests := []struct {
		name, doc  string
		code       int
		out, inErr string
	}{
		{"good", "rules:\n- effect: deny\n  condition: request.method == \"DELETE\"\n- effect: allow\n  condition: request.path.matchesPath(\"/v1/deliver/*\")\n",
			0, "2 rules: the policy compiles\n", ""},
		{"typo", "rules:\n- effect: deny\n  condition: request.methd == \"GET\"\n",
			1, "", "rule 1, line 1 column 8: undefined field 'methd'"},
		{"not a bool", "rules:\n- effect: deny\n  condition: request.method\n",
			1, "", "rule 1: the condition is of type string, not bool"},
		{"bad path pattern", "rules:\n- effect: allow\n  condition: request.path.matchesPath(\"v1/**/x\")\n",
			1, "", "rule 1"},
		{"json", `{"rules":[{"effect":"allow","condition":"subject.user == 'alice'"}]}`, 0, "1 rule: the policy compiles\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"coffer", "policy", "check", "--file", "-"}, strings.NewReader(tt.doc), &stdout, &stderr)
			if code != tt.code || stdout.String() != tt.out || !strings.Contains(stderr.String(), tt.inErr) {
				t.Errorf("exit %d, stdout %q, stderr %q; want %d, %q, containing %q", code, stdout.String(), stderr.String(), tt.code, tt.out, tt.inErr)
			}
		})
	}
}
