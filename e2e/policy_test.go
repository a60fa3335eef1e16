package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
)

// Policies at every level at once, written and attached through the CLI
// by the uids that own them, on the real binary: a global policy on a
// user, a project's on the project, one written on a credential. Each
// narrows; none widens another; a tenant neither reads nor borrows
// another's; they survive a restart.
func TestPoliciesDecide(t *testing.T) {
	t.Parallel()
	h := newTenantHost(t)
	betaSecret := h.secret(t, uidBetaAdmin, "beta", "BETA-PAYLOAD")
	h.must(t, uidBetaAdmin, "", "secret", "bind", betaSecret, "--user", "web", "--as", "dbpass")

	// A global policy, written by the system admin, on web: it may
	// receive its secrets and nothing else, although it is beta's reader.
	h.must(t, 0, `description: a workload that only receives
rules:
- effect: allow
  condition: request.path.matchesPath("/v1/deliver/*")
`, "policy", "create", "deliver-only", "--file", "-")
	h.must(t, 0, "", "user", "update", "web", "--policy", "deliver-only")
	if out := h.must(t, uidWeb, "", "deliver", "dbpass"); out != "BETA-PAYLOAD" {
		t.Fatalf("web's delivery under deliver-only: %q", out)
	}
	if errs := h.wantExit(t, uidWeb, 1, "forbidden", "secret", "list", "--project", "beta"); !strings.Contains(errs, "policy deliver-only") {
		t.Errorf("web's listing was refused without naming the policy: %s", errs)
	}

	// beta's admin writes and attaches beta's policy; alpha's admin can
	// neither read it, attach it to alpha, nor change beta's attachments.
	h.must(t, uidBetaAdmin, `{"rules":[{"effect":"deny","condition":"request.service == \"payroll\""}]}`,
		"policy", "create", "no-payroll", "--project", "beta", "--file", "-")
	h.must(t, uidBetaAdmin, "", "project", "set-policies", "beta", "no-payroll")
	h.wantExit(t, uidAlphaAdmin, 1, "forbidden", "policy", "get", "no-payroll", "--project", "beta")
	h.wantExit(t, uidAlphaAdmin, 1, "invalid_policy", "project", "set-policies", "alpha", "no-payroll")
	h.wantExit(t, uidAlphaAdmin, 1, "forbidden", "project", "set-policies", "beta")

	// A credential's own policy, and a permissive one that does not widen
	// the project's.
	h.must(t, uidBetaAdmin, `{"rules":[{"effect":"allow","condition":"true"}]}`,
		"policy", "create", "anything", "--project", "beta", "--file", "-")
	var cred api.Credential
	out := h.must(t, uidBetaAdmin, "rules:\n- effect: deny\n  condition: request.method == \"DELETE\"\n",
		"cred", "create", "--project", "beta", "--type", "access-token", "--policy", "anything", "--inline-policy", "-")
	if err := json.Unmarshal([]byte(out), &cred); err != nil || cred.Token == "" {
		t.Fatalf("cred create: %v\n%s", err, out)
	}
	decide := func(service, method string) api.Decision {
		t.Helper()
		var d api.Decision
		out := h.must(t, uidBetaAdmin, "", "authorize", "--token", cred.Token, "--service", service, "--method", method, "--path", "/x", "--explain")
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			t.Fatalf("authorize: %v\n%s", err, out)
		}
		return d
	}
	check := func(when string) {
		t.Helper()
		if d := decide("billing", "GET"); !d.Allowed {
			t.Errorf("%s: billing GET: %+v", when, d)
		}
		if d := decide("payroll", "GET"); d.Allowed || d.Reason != "policy no-payroll rule 1 denies" ||
			!slices.Contains(d.Matched, "no-payroll#1") || strings.Join(d.Policies, ",") != "no-payroll,anything,inline" {
			t.Errorf("%s: payroll GET (the project's policy, not widened by anything): %+v", when, d)
		}
		if d := decide("billing", "DELETE"); d.Allowed || !strings.Contains(d.Reason, "inline") {
			t.Errorf("%s: billing DELETE (the credential's own policy): %+v", when, d)
		}
		h.wantExit(t, uidWeb, 1, "forbidden", "secret", "list", "--project", "beta")
	}
	check("running")

	// A condition that does not type-check is refused with where it is
	// wrong; a policy in use is not deleted.
	code, _, errs := h.as(t, uidBetaAdmin, "rules:\n- effect: deny\n  condition: request.methd == \"GET\"\n", "policy", "create", "typo", "--project", "beta", "--file", "-")
	if code != 1 || !strings.Contains(errs, "line 1 column 8") || !strings.Contains(errs, "(invalid_policy)") {
		t.Errorf("a typo: exit %d, %s", code, errs)
	}
	h.wantExit(t, uidBetaAdmin, 1, "policy_in_use", "policy", "delete", "no-payroll", "--project", "beta")

	// A document as large as policies allow fits its request; past it,
	// 413 (the rest of the API keeps its 8 KiB bodies).
	rules := make([]map[string]string, 0, 20)
	for i := range 20 {
		rules = append(rules, map[string]string{"effect": "deny", "condition": fmt.Sprintf("request.path == %q", "/"+strings.Repeat("x", 1500)+strconv.Itoa(i))})
	}
	h.mustAPI(t, "POST", "/v1/projects/beta/policies", map[string]any{"name": "large", "rules": rules}, http.StatusCreated, nil)
	huge := map[string]any{"name": "huge", "description": strings.Repeat("x", 70<<10), "rules": rules[:1]}
	if res := h.api(t, "POST", "/v1/projects/beta/policies", huge); res.status != http.StatusRequestEntityTooLarge {
		t.Errorf("a 70 KiB policy: %d %s", res.status, res.body)
	}

	// Policies are kept: after a restart they decide the same.
	dir := h.daemonProc.dir
	h.Stop(t)
	h.daemonProc = startDaemon(t, dir, "--socket", h.sock, "--socket-mode", "0666")
	check("after a restart")
}
