package e2e

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/internal/k8stest"
)

// TestK8sWebhookAPIServer puts coffer's TokenReview and
// SubjectAccessReview webhooks behind a real kube-apiserver, set up as
// docs/k8s-webhooks.md tells a user: the kubeconfigs `coffer k8s
// webhook-config` prints, the v1 review flags, --authorization-mode=
// Node,Webhook,RBAC and the docs' ClusterRoleBindings of coffer's role
// groups (read from the docs themselves). Then kubectl with coffer tokens:
// who they are, what RBAC grants their groups, a revoked credential
// refused within the caches' TTLs, and a credential's access rules
// narrowing what cluster-admin would grant, coffer's reason reaching
// kubectl.
func TestK8sWebhookAPIServer(t *testing.T) {
	k8stest.Bin(t) // skip before starting anything when the programs are not wanted
	start := time.Now()
	dir := workDir(t)

	// 1. The daemon with the listener and a bearer only kube-apiserver knows.
	secret := make([]byte, 32)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	bearerFile := filepath.Join(dir, "k8s-bearer")
	if err := os.WriteFile(bearerFile, []byte(hex.EncodeToString(secret)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "--k8s-listen", "127.0.0.1:0", "--k8s-bearer-file", bearerFile)

	// 2. The kubeconfigs, as printed.
	authn := filepath.Join(dir, "coffer-authn.yaml")
	authz := filepath.Join(dir, "coffer-authz.yaml")
	for kind, path := range map[string]string{"authn": authn, "authz": authz} {
		out := d.mustCLI(t, "", "k8s", "webhook-config", "--kind", kind).stdout
		if !strings.Contains(out, "tokenFile: "+bearerFile) {
			t.Fatalf("webhook-config --kind %s names no tokenFile %s:\n%s", kind, bearerFile, out)
		}
		if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// 3. kube-apiserver with the docs' flags; short cache TTLs.
	const authnTTL = 2 * time.Second
	cp := k8stest.Start(t, k8stest.Options{
		TokenWebhookConfig:                  authn,
		TokenWebhookCacheTTL:                authnTTL,
		AuthorizationWebhookConfig:          authz,
		AuthorizationWebhookAuthorizedTTL:   time.Second,
		AuthorizationWebhookUnauthorizedTTL: time.Second,
	})
	ready := time.Now()
	docs, err := os.ReadFile(filepath.Join("..", "docs", "k8s-webhooks.md"))
	if err != nil {
		t.Fatal(err)
	}
	checkDocsFlags(t, string(docs), cp.APIServerLog(), map[string]string{
		"--authentication-token-webhook-config-file":     authn,
		"--authorization-webhook-config-file":            authz,
		"--authentication-token-webhook-cache-ttl":       authnTTL.String(),
		"--authorization-webhook-cache-unauthorized-ttl": time.Second.String(),
	})

	// 4. The docs' ClusterRoleBindings, applied by the cluster's admin.
	bindings := docsClusterRoleBindings(t, string(docs))
	if r := cp.RunKubectl(t, "", bindings, "apply", "-f", "-"); r.Code != 0 ||
		!strings.Contains(r.Stdout, "coffer-default-admin created") || !strings.Contains(r.Stdout, "coffer-default-reader created") {
		t.Fatalf("applying the docs' ClusterRoleBindings:\n%s", r)
	}

	// The docs bind the reader group to view, an aggregated ClusterRole
	// whose rules kube-controller-manager's clusterrole-aggregation
	// controller fills in; this control plane has no controller manager,
	// so the admin does what it would.
	aggregateView(t, cp)

	// Users and their coffer access tokens, made with the CLI as the docs do.
	d.newUser(t, "ops")
	d.setRole(t, "default", "ops", "admin")
	d.newUser(t, "viewer")
	d.setRole(t, "default", "viewer", "reader")
	d.newUser(t, "ci")
	d.setRole(t, "default", "ci", "admin")
	cred := func(user, name string, extra ...string) api.Credential {
		t.Helper()
		var c api.Credential
		args := append([]string{"-o", "json", "cred", "create", "--type", "access-token", "--user", user, "--project", "default"}, extra...)
		decodeOutput(t, "json", d.mustCLI(t, "", append(args, name)...).stdout, &c)
		if c.Token == "" || c.TokenID == "" {
			t.Fatalf("cred create %s: no token or token_id", name)
		}
		return c
	}
	// The admin's token is created unrestricted: only such a token gets
	// the admin group (bound to cluster-admin); a restricted one of an
	// admin stops at member.
	admin := cred("ops", "ops-kube", "--unrestricted")
	restrictedAdmin := cred("ops", "ops-kube-restricted")
	reader := cred("viewer", "viewer-kube")
	doomed := cred("viewer", "doomed-kube")
	// The docs' CI token, with only the get rule.
	pods := cred("ci", "ci-kube", "--access-rule", "kubernetes:get:/api/v1/namespaces/*/pods/*")

	// Who a coffer token is: service-account-<token id in lowercase>, in its roles'
	// groups. The id keeps its case (daemon/k8s_review.go: base62 ids are
	// case-sensitive), though the issue asked for lower case.
	for _, tc := range []struct {
		c      api.Credential
		groups []string
	}{
		{admin, []string{"coffer:default:admin", "coffer:default:member", "coffer:default:reader", "system:authenticated"}},
		{reader, []string{"coffer:default:reader", "system:authenticated"}},
		{restrictedAdmin, []string{"coffer:default:member", "coffer:default:reader", "system:authenticated"}},
	} {
		r := cp.RunKubectl(t, tc.c.Token, "", "auth", "whoami", "--output=json")
		var who struct {
			Status struct {
				UserInfo struct {
					Username string              `json:"username"`
					UID      string              `json:"uid"`
					Groups   []string            `json:"groups"`
					Extra    map[string][]string `json:"extra"`
				} `json:"userInfo"`
			} `json:"status"`
		}
		if r.Code != 0 {
			t.Fatalf("whoami as %s:\n%s", tc.c.Name, r)
		}
		if err := json.Unmarshal([]byte(r.Stdout), &who); err != nil {
			t.Fatalf("whoami as %s: %v\n%s", tc.c.Name, err, r)
		}
		u := who.Status.UserInfo
		got := slices.Sorted(slices.Values(u.Groups))
		if u.Username != "service-account-"+strings.ToLower(tc.c.TokenID) || u.UID != tc.c.ID || !slices.Equal(got, slices.Sorted(slices.Values(tc.groups))) ||
			!slices.Equal(u.Extra["coffer.dev/credential"], []string{tc.c.Name}) || !slices.Equal(u.Extra["coffer.dev/project"], []string{"default"}) {
			t.Fatalf("whoami as %s (token id %s, credential %s): want user service-account-%s in %v\n%s",
				tc.c.Name, tc.c.TokenID, tc.c.ID, strings.ToLower(tc.c.TokenID), tc.groups, r)
		}
	}

	// RBAC grants the groups what the docs bind: the admin token creates
	// (cluster-admin), the reader token lists (view) but may not create.
	const ns = "default"
	if r := cp.RunKubectl(t, admin.Token, "", "--namespace="+ns, "create", "secret", "generic", "db", "--from-literal=password=k8s-e2e-value"); r.Code != 0 ||
		!strings.Contains(r.Stdout, "secret/db created") {
		t.Fatalf("the admin token creates a Secret:\n%s", r)
	}
	// A pod (never scheduled: there is no scheduler) for the readers to
	// find; the ServiceAccount admission wants its service account.
	for _, args := range [][]string{
		{"create", "serviceaccount", "default"},
		{"run", "web", "--image=registry.k8s.io/pause:3.10", "--restart=Never"},
	} {
		if r := cp.RunKubectl(t, admin.Token, "", append([]string{"--namespace=" + ns}, args...)...); r.Code != 0 {
			t.Fatalf("the admin token: %s", r)
		}
	}
	if r := cp.RunKubectl(t, reader.Token, "", "--namespace="+ns, "get", "pods", "--output=name"); r.Code != 0 || strings.TrimSpace(r.Stdout) != "pod/web" {
		t.Fatalf("the reader token lists pods, want pod/web:\n%s", r)
	}
	if r := cp.RunKubectl(t, reader.Token, "", "--namespace="+ns, "create", "secret", "generic", "nope", "--from-literal=k=v"); r.Code == 0 ||
		!strings.Contains(r.Stderr, `secrets is forbidden: User "service-account-`+strings.ToLower(reader.TokenID)+`" cannot create resource "secrets"`) ||
		!strings.Contains(r.Stderr, "coffer: credential viewer-kube allows it; RBAC decides") {
		// coffer was asked and left the decision to RBAC (view: no create).
		t.Fatalf("the reader token creates a Secret, want forbidden by RBAC, coffer without opinion:\n%s", r)
	}

	// A restricted admin token is no cluster-admin: RBAC (view) refuses
	// its writes.
	if r := cp.RunKubectl(t, restrictedAdmin.Token, "", "--namespace="+ns, "create", "secret", "generic", "nope2", "--from-literal=k=v"); r.Code == 0 ||
		!strings.Contains(r.Stderr, "cannot create resource \"secrets\"") {
		t.Fatalf("the restricted admin token creates a Secret, want forbidden by RBAC:\n%s", r)
	}

	// The access rules narrow what RBAC (view) grants: list secrets is
	// denied by coffer, with its reason.
	r := cp.RunKubectl(t, pods.Token, "", "--namespace="+ns, "get", "secrets")
	if r.Code == 0 || !strings.Contains(r.Stderr, "Forbidden") ||
		!strings.Contains(r.Stderr, "coffer: access rules of credential ci-kube: no rule matches list /api/v1/namespaces/default/secrets on kubernetes") {
		t.Fatalf("the get-pods-only token lists secrets, want Forbidden with coffer's reason:\n%s", r)
	}
	denial := strings.TrimSpace(r.Stderr)
	// What the rule allows, coffer leaves to RBAC (view).
	if r := cp.RunKubectl(t, pods.Token, "", "--namespace="+ns, "get", "pod", "web", "--output=name"); r.Code != 0 || strings.TrimSpace(r.Stdout) != "pod/web" {
		t.Fatalf("the get-pods-only token gets pod web:\n%s", r)
	}
	if r := cp.RunKubectl(t, pods.Token, "", "--namespace="+ns, "get", "pod", "absent"); r.Code == 0 ||
		!strings.Contains(r.Stderr, `pods "absent" not found`) || strings.Contains(r.Stderr, "Forbidden") {
		t.Fatalf("the get-pods-only token gets a missing pod, want NotFound, not Forbidden:\n%s", r)
	}
	// list pods is not get: denied too.
	if r := cp.RunKubectl(t, pods.Token, "", "--namespace="+ns, "get", "pods"); r.Code == 0 ||
		!strings.Contains(r.Stderr, "Forbidden") || !strings.Contains(r.Stderr, "coffer: access rules of credential ci-kube: no rule matches list /api/v1/namespaces/default/pods on kubernetes") {
		t.Fatalf("the get-pods-only token lists pods, want Forbidden by coffer:\n%s", r)
	}

	// Revocation. coffer's authorizer refuses a gone credential at once,
	// so only kube-apiserver's cached "no opinion" (unauthorized TTL 1s)
	// delays Forbidden. Unauthorized comes when kube-apiserver's token
	// caches let go: the webhook's (2s) and, above it, the success cache
	// it keeps for all its token authenticators together: 10s, no flag
	// (TokenSuccessCacheTTL; it logs "the webhook cache ttl of 2s is
	// shorter than the overall cache ttl of 10s").
	const (
		authzTTL        = time.Second
		overallTokenTTL = 10 * time.Second
		slack           = 2 * time.Second // kubectl runs on a loaded 2-core machine
	)
	if r := cp.RunKubectl(t, doomed.Token, "", "--namespace="+ns, "get", "pods", "--output=name"); r.Code != 0 {
		t.Fatalf("before revocation:\n%s", r)
	}
	d.mustCLI(t, "", "cred", "revoke", "--project", "default", "doomed-kube")
	revoked := time.Now()
	var seen outcomes
	var refused time.Duration // when kubectl first failed
	for {
		r := cp.RunKubectl(t, doomed.Token, "", "--namespace="+ns, "get", "pods", "--output=name")
		since := time.Since(revoked)
		what := kubectlSummary(r)
		seen.add(since, what)
		if r.Code != 0 && refused == 0 {
			refused = since
			if !strings.Contains(r.Stderr, "Unauthorized") &&
				!strings.Contains(r.Stderr, `pods is forbidden: User "service-account-`+strings.ToLower(doomed.TokenID)+`" cannot list resource "pods"`) {
				t.Fatalf("a revoked token, want Forbidden or Unauthorized:\n%s", r)
			}
		}
		if r.Code != 0 && strings.Contains(r.Stderr, "Unauthorized") {
			break
		}
		if r.Code == 0 && since > authzTTL+slack {
			t.Fatalf("a revoked token still lists pods %s after revocation:\n%s", since.Round(time.Millisecond), seen)
		}
		if since > overallTokenTTL+authnTTL+slack {
			t.Fatalf("a revoked token is not Unauthorized %s after revocation:\n%s", since.Round(time.Millisecond), seen)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if !strings.Contains(seen.String(), "Unauthorized") || (refused > authzTTL+slack) {
		t.Fatalf("revocation: %s", seen)
	}

	// Nothing secret in the daemon's output or kube-apiserver's log.
	apiLog := cp.APIServerLog()
	for _, s := range []string{admin.Token, reader.Token, doomed.Token, pods.Token, hex.EncodeToString(secret)} {
		if strings.Contains(d.stderr.String(), s) || strings.Contains(d.stdout.String(), s) || strings.Contains(apiLog, s) {
			t.Fatal("a token or the webhook bearer in the daemon's output or kube-apiserver's log")
		}
	}
	t.Logf("kube-apiserver ready in %s; coffer's denial: %s; revoked token: %s; whole test %s",
		ready.Sub(start).Round(time.Millisecond), denial, seen.String(), time.Since(start).Round(time.Millisecond))
}

// aggregateView gives the view ClusterRole the rules of the ClusterRoles
// labelled rbac.authorization.k8s.io/aggregate-to-view=true, as
// kube-controller-manager does in a full cluster.
func aggregateView(t *testing.T, cp *k8stest.ControlPlane) {
	t.Helper()
	var list struct {
		Items []struct {
			Rules []json.RawMessage `json:"rules"`
		} `json:"items"`
	}
	out := cp.Kubectl(t, "get", "clusterroles", "--selector=rbac.authorization.k8s.io/aggregate-to-view=true", "--output=json")
	if err := json.Unmarshal([]byte(out), &list); err != nil {
		t.Fatalf("aggregate-to-view ClusterRoles: %v", err)
	}
	var rules []json.RawMessage
	for _, it := range list.Items {
		rules = append(rules, it.Rules...)
	}
	if len(rules) == 0 {
		t.Fatalf("no aggregate-to-view ClusterRole rules:\n%s", out)
	}
	cp.Kubectl(t, "patch", "clusterrole", "view", "--type=merge", "--patch="+mustJSON(map[string]any{"rules": rules}))
}

// outcomes are the kubectl outcomes seen over time, runs of the same one
// merged.
type outcomes []struct {
	from, to time.Duration
	what     string
	n        int
}

func (o *outcomes) add(at time.Duration, what string) {
	if n := len(*o); n > 0 && (*o)[n-1].what == what {
		(*o)[n-1].to = at
		(*o)[n-1].n++
		return
	}
	*o = append(*o, struct {
		from, to time.Duration
		what     string
		n        int
	}{at, at, what, 1})
}

func (o outcomes) String() string {
	var b strings.Builder
	for _, s := range o {
		fmt.Fprintf(&b, "\n  %s..%s after revocation, %d× %s", s.from.Round(10*time.Millisecond), s.to.Round(10*time.Millisecond), s.n, s.what)
	}
	return b.String()
}

// kubectlSummary is a one-line account of a kubectl run: "ok" or its
// exit code and the first line of its standard error.
func kubectlSummary(r k8stest.KubectlResult) string {
	if r.Code == 0 {
		return "ok"
	}
	line, _, _ := strings.Cut(strings.TrimSpace(r.Stderr), "\n")
	return "exit " + strconv.Itoa(r.Code) + ": " + line
}

// docsClusterRoleBindings returns the YAML of the docs' `kubectl apply -f -`
// heredoc.
func docsClusterRoleBindings(t *testing.T, docs string) string {
	t.Helper()
	m := regexp.MustCompile(`(?s)kubectl apply -f - <<'EOF'\n(.*?)\nEOF\n`).FindStringSubmatch(docs)
	if m == nil || !strings.Contains(m[1], "kind: ClusterRoleBinding") {
		t.Fatal("docs/k8s-webhooks.md: no `kubectl apply -f - <<'EOF'` block of ClusterRoleBindings")
	}
	return m[1] + "\n"
}

// checkDocsFlags checks that kube-apiserver ran (the first line of its
// log is its command line) with every flag of the docs' `kube-apiserver
// ...` block: the same value, or the one in values (files and TTLs the
// test chose).
func checkDocsFlags(t *testing.T, docs, apiLog string, values map[string]string) {
	t.Helper()
	block := regexp.MustCompile(`(?s)\nkube-apiserver \.\.\. \\\n(.*?)\n` + "```").FindStringSubmatch(docs)
	if block == nil {
		t.Fatal("docs/k8s-webhooks.md: no `kube-apiserver ... \\` block")
	}
	cmdline, _, _ := strings.Cut(apiLog, "\n")
	args := strings.Fields(cmdline)
	n := 0
	for _, line := range strings.Split(block[1], "\n") {
		flag := strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(line), `\`))
		if flag == "" {
			continue
		}
		name, val, _ := strings.Cut(flag, "=")
		if v, ok := values[name]; ok {
			val = v
		}
		if !slices.Contains(args, name+"="+val) {
			t.Fatalf("kube-apiserver runs without the docs' %s=%s:\n%s", name, val, cmdline)
		}
		n++
	}
	if n < 7 {
		t.Fatalf("docs/k8s-webhooks.md: only %d flags in the kube-apiserver block:\n%s", n, block[1])
	}
}
