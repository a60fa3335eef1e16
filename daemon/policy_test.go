package daemon

import (
	"context"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/policy"
)

func deny(cond string) policy.Rule  { return policy.Rule{Effect: policy.Deny, Condition: cond} }
func allow(cond string) policy.Rule { return policy.Rule{Effect: policy.Allow, Condition: cond} }

// Policies are saved compiled: a bad one is 400 invalid_policy naming the
// rule and the position; names are per project; one in use is 409.
func TestPolicyResource(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	g := e.grant(t, ActManagePolicies, Resource{Project: "p1"})
	_, err := e.svc.CreatePolicy(ctx, g, PolicyInput{Name: "bad", Document: policy.Document{Rules: []policy.Rule{allow("true"), deny(`request.method ==`)}}})
	wantCode(t, err, CodeInvalidPolicy)
	if msg := MessageOf(err); !strings.Contains(msg, "policy bad: rule 2, line 1 column") {
		t.Errorf("message %q does not name the rule and position", msg)
	}
	p := e.policy(t, "p1", "no-deletes", deny(`request.method == "DELETE"`))
	_, err = e.svc.CreatePolicy(ctx, g, PolicyInput{Name: "no-deletes", Document: policy.Document{Rules: []policy.Rule{deny("false")}}})
	wantCode(t, err, CodeAlreadyExists)
	// The same name in another project or globally is another policy.
	e.policy(t, "", "no-deletes", deny("false"))

	// Unknown names are refused where they are attached.
	_, _, err = e.svc.CreateCredential(ctx, e.grant(t, ActCreateCredential, Resource{Project: "p1"}), CredentialInput{Type: CredAccessToken, User: "bob", Policies: []string{"nonexistent"}})
	wantCode(t, err, CodeInvalidPolicy)
	c, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Policies: []string{"no-deletes"}})

	got, err := e.svc.GetPolicy(ctx, e.grant(t, ActReadPolicies, Resource{Project: "p1"}), "no-deletes")
	if err != nil || got.ID != p.ID || len(got.UsedBy.Credentials) != 1 || got.UsedBy.Credentials[0] != c.ID {
		t.Fatalf("get: %+v %v", got, err)
	}
	err = e.svc.DeletePolicy(ctx, g, "no-deletes")
	wantCode(t, err, CodePolicyInUse)
	if !strings.Contains(MessageOf(err), "1 credentials") {
		t.Errorf("in use: %q", MessageOf(err))
	}
	if err := e.svc.DeleteCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: c.ID})); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeletePolicy(ctx, g, "no-deletes"); err != nil {
		t.Fatalf("delete once unused: %v", err)
	}
	ps, err := e.svc.ListPolicies(ctx, e.grant(t, ActReadPolicies, Resource{Project: "p1"}))
	if err != nil || len(ps) != 0 {
		t.Errorf("after delete: %+v %v", ps, err)
	}
	// Global policies are the system admins'; project admins read them.
	_, err = e.svc.Authorize(ctx, uidPrincipal(1001), ActManagePolicies, Resource{})
	wantCode(t, err, CodeForbidden)
	if _, err := e.svc.Authorize(ctx, uidPrincipal(1003), ActReadPolicies, Resource{}); err != nil {
		t.Errorf("a reader reads the global policies: %v", err)
	}
}

// Policies decide on coffer's own API, on /v1/authorize and on
// deliveries, attached to a project, a user, a credential or inline, and
// a change takes effect at once.
func TestPoliciesDecide(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	sec := e.secret
	// bob (member) reads secrets; carol (reader) too.
	bobRead := func(t *testing.T) error {
		_, err := e.svc.Authorize(ctx, uidPrincipal(1002), ActReadSecret, Resource{Secret: sec.ID, Method: "GET", Path: "/v1/secrets/" + sec.ID})
		return err
	}
	wantCode(t, bobRead(t), "")

	// A project policy applies to every request in the project.
	e.policy(t, "p1", "read-only", allow(`request.method == "GET"`))
	if _, err := e.svc.SetProjectPolicies(ctx, e.grant(t, ActManagePolicies, Resource{Project: "p1"}), []string{"read-only"}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, bobRead(t), "")
	_, err := e.svc.Authorize(ctx, uidPrincipal(1002), ActCreateCredential, Resource{Project: "p1", Method: "POST", Path: "/v1/projects/p1/credentials"})
	wantCode(t, err, CodeForbidden)

	// A user policy (global) applies to its requests.
	e.policy(t, "", "no-bob-secrets", deny(`subject.user == "bob" && request.path.matchesPath("/v1/secrets/**")`))
	if _, err := e.svc.PatchUser(ctx, e.grant(t, ActManageUser, Resource{User: "bob"}), UserPatch{Policies: &[]string{"no-bob-secrets"}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, bobRead(t), CodeForbidden)
	if _, ok := findEvent(e.events(), "secret.read", "denied", nil); !ok {
		t.Error("the policy's denial is not audited")
	}
	// The policy changes: at once.
	if _, err := e.svc.UpdatePolicy(ctx, e.grant(t, ActManagePolicies, Resource{}), PolicyInput{Name: "no-bob-secrets", Document: policy.Document{Rules: []policy.Rule{deny("false")}}}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, bobRead(t), "")

	// A credential's policy and an inline one apply to its token, on
	// /v1/authorize and on deliveries.
	e.policy(t, "p1", "no-payroll", deny(`request.service == "payroll"`))
	_, tok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "carol", Policies: []string{"no-payroll"},
		InlinePolicy: &policy.Document{Rules: []policy.Rule{deny(`request.path.matchesPath("/v1/deliver/db")`)}}})
	d, err := e.svc.AuthorizeCall(ctx, Call{Token: tok.Token, Service: "billing", Method: "GET", Path: "/invoices"})
	if err != nil || !d.Allowed {
		t.Errorf("billing: %+v %v", d, err)
	}
	d, err = e.svc.AuthorizeCall(ctx, Call{Token: tok.Token, Service: "payroll", Method: "GET", Path: "/salaries"})
	if err != nil || d.Allowed || d.Reason != "policy no-payroll rule 1 denies" {
		t.Errorf("payroll: %+v %v", d, err)
	}
	d, err = e.svc.AuthorizeCall(ctx, Call{Token: tok.Token, Service: "billing", Method: "POST", Path: "/invoices"})
	if err != nil || d.Allowed || !strings.Contains(d.Reason, "read-only") {
		t.Errorf("the project's policy on /v1/authorize: %+v %v", d, err)
	}
	d, err = e.svc.ExplainCall(ctx, Call{Token: tok.Token, Service: "payroll", Method: "POST", Path: "/x"})
	if err != nil || strings.Join(d.Matched, ",") != "no-payroll#1" {
		t.Errorf("explained: %+v %v", d, err)
	}
	if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "carol", Name: "db"}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "carol", Name: "db2"}); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Deliver(ctx, e.bearer(t, tok.Token), DeliveryRequest{Name: "db"})
	wantCode(t, err, CodeNotFound)
	if _, err := e.svc.Deliver(ctx, e.bearer(t, tok.Token), DeliveryRequest{Name: "db2"}); err != nil {
		t.Errorf("the inline policy denies db only: %v", err)
	}
	// carol by her uid has no credential: only the project's policy.
	if _, err := e.svc.Deliver(ctx, uidPrincipal(1003), DeliveryRequest{Name: "db"}); err != nil {
		t.Errorf("carol by uid: %v", err)
	}
}

// Attaching a policy never widens: a member cannot escape the project's
// allow-only policy by attaching a permissive one to its own credential,
// and what a token mints keeps the token's policies.
func TestPoliciesOnlyNarrow(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	e.policy(t, "p1", "only-billing", allow(`request.service == "billing"`))
	e.policy(t, "p1", "anything", allow("true"))
	if _, err := e.svc.SetProjectPolicies(ctx, e.grant(t, ActManagePolicies, Resource{Project: "p1"}), []string{"only-billing"}); err != nil {
		t.Fatal(err)
	}
	// The project's policy refuses bob's own credential creation through
	// coffer's API (service coffer)...
	_, err := e.svc.Authorize(ctx, uidPrincipal(1002), ActCreateCredential, Resource{Project: "p1", Method: "POST", Path: "/v1/projects/p1/credentials"})
	wantCode(t, err, CodeForbidden)
	// ...and a credential made for him with a permissive policy attached
	// does not escape it.
	_, tok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Policies: []string{"anything"}})
	if d, _ := e.svc.AuthorizeCall(ctx, Call{Token: tok.Token, Service: "payroll", Method: "GET", Path: "/"}); d.Allowed {
		t.Errorf("a permissive policy widened the project's: %+v", d)
	}
	if d, _ := e.svc.AuthorizeCall(ctx, Call{Token: tok.Token, Service: "billing", Method: "GET", Path: "/"}); !d.Allowed {
		t.Errorf("billing is allowed by both: %+v", d)
	}

	// A token's policies go with what it mints.
	if _, err := e.svc.SetProjectPolicies(ctx, e.grant(t, ActManagePolicies, Resource{Project: "p1"}), nil); err != nil {
		t.Fatal(err)
	}
	e.policy(t, "p1", "no-payroll", deny(`request.service == "payroll"`))
	_, parent := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Unrestricted: true, Policies: []string{"no-payroll"},
		InlinePolicy: &policy.Document{Rules: []policy.Rule{deny(`request.method == "DELETE"`)}}})
	g, err := e.svc.Authorize(ctx, e.bearer(t, parent.Token), ActCreateCredential, Resource{Project: "p1", Method: "POST", Path: "/v1/projects/p1/credentials"})
	if err != nil {
		t.Fatal(err)
	}
	_, child, err := e.svc.CreateCredential(ctx, g, CredentialInput{Type: CredAccessToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct{ service, method string }{{"payroll", "GET"}, {"billing", "DELETE"}} {
		if d, _ := e.svc.AuthorizeCall(ctx, Call{Token: child.Token, Service: tt.service, Method: tt.method, Path: "/"}); d.Allowed {
			t.Errorf("the child token escaped its parent's policy on %s %s: %+v", tt.service, tt.method, d)
		}
	}
}

// A user's policy of one project applies to its requests in that project
// only.
func TestUserPolicyOfAProjectStaysInIt(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "p2"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p2"}), "bob", "member"); err != nil {
		t.Fatal(err)
	}
	e.policy(t, "p1", "deny-all", deny("true"))
	if _, err := e.svc.PatchUser(ctx, e.grant(t, ActManageUser, Resource{User: "bob"}), UserPatch{Policies: &[]string{"p1/deny-all"}}); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Authorize(ctx, uidPrincipal(1002), ActReadProject, Resource{Project: "p1", Method: "GET", Path: "/v1/projects/p1"})
	wantCode(t, err, CodeForbidden)
	if _, err := e.svc.Authorize(ctx, uidPrincipal(1002), ActReadProject, Resource{Project: "p2", Method: "GET", Path: "/v1/projects/p2"}); err != nil {
		t.Errorf("p1's policy applied in p2: %v", err)
	}
	u, err := e.svc.GetUser(ctx, e.grant(t, ActReadUser, Resource{User: "bob"}))
	if err != nil || len(u.Policies) != 1 || u.Policies[0] != "p1/deny-all" {
		t.Errorf("bob's policies: %+v %v", u.Policies, err)
	}
}
