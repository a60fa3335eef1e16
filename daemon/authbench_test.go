package daemon

import (
	"context"
	"testing"

	"github.com/coffer-hsm/coffer/policy"
)

// The request path of the read scenarios of coffer-bench: /v1/authorize
// with a cft_ token (from the bearer cache, and resolved again), and the
// authorization of a secret read with a cft_ bearer.

func benchToken(b *testing.B) (*identityEnv, string) {
	e := newIdentityEnv(b)
	_, iss := e.credential(b, "p1", CredentialInput{Type: CredAccessToken, User: "carol", AccessRules: []AccessRule{
		{Service: "billing", Method: "GET", Path: "/a/*"},
		{Service: "svc", Method: "GET", Path: "/x/*"},
		{Service: "coffer", Method: "GET", Path: "/v1/secrets/*"},
	}})
	return e, iss.Token
}

func BenchmarkAuthorizeCall(b *testing.B) {
	e, tok := benchToken(b)
	ctx := context.Background()
	for b.Loop() {
		if d, err := e.svc.AuthorizeCall(ctx, Call{Token: tok, Service: "svc", Method: "GET", Path: "/x/1"}); err != nil || !d.Allowed {
			b.Fatalf("%+v %v", d, err)
		}
	}
}

// BenchmarkAuthorizeCallMiss resolves the token from the store every time,
// as the first call of each of many distinct tokens does.
func BenchmarkAuthorizeCallMiss(b *testing.B) {
	e, tok := benchToken(b)
	ctx := context.Background()
	for b.Loop() {
		e.svc.bearers.mu.Lock()
		clear(e.svc.bearers.m)
		e.svc.bearers.mu.Unlock()
		if d, err := e.svc.AuthorizeCall(ctx, Call{Token: tok, Service: "svc", Method: "GET", Path: "/x/1"}); err != nil || !d.Allowed {
			b.Fatalf("%+v %v", d, err)
		}
	}
}

func BenchmarkBearerSecretRead(b *testing.B) {
	e, tok := benchToken(b)
	ctx := context.Background()
	res := Resource{Secret: e.secret.ID, Method: "GET", Path: "/v1/secrets/" + e.secret.ID}
	for b.Loop() {
		p, err := e.svc.Authenticate(ctx, anonPrincipal, tok)
		if err != nil {
			b.Fatal(err)
		}
		g, err := e.svc.Authorize(ctx, p, ActReadSecret, res)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := e.svc.GetSecret(ctx, g); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkAuthorizeCallPolicies is BenchmarkAuthorizeCall with the three
// policies of coffer-bench's authorize-policies attached to the token.
func BenchmarkAuthorizeCallPolicies(b *testing.B) {
	e := newIdentityEnv(b)
	ctx := context.Background()
	for name, rules := range map[string][]policy.Rule{
		"services": {{Effect: policy.Deny, Condition: `request.service == "payroll" && request.method != "GET"`},
			{Effect: policy.Allow, Condition: `request.service in ["svc", "billing"]`}},
		"paths": {{Effect: policy.Deny, Condition: `request.path.matchesPath("/x/*/secret")`},
			{Effect: policy.Allow, Condition: `request.path.matchesPath("/x/*")`}},
		"subject": {{Effect: policy.Deny, Condition: `subject.user_kind == "human" && subject.token_kind == ""`},
			{Effect: policy.Allow, Condition: `"reader" in subject.roles && subject.project == "p1"`}},
	} {
		e.policy(b, "p1", name, rules...)
	}
	_, iss := e.credential(b, "p1", CredentialInput{Type: CredAccessToken, User: "carol", Policies: []string{"services", "paths", "subject"},
		AccessRules: []AccessRule{{Service: "billing", Method: "GET", Path: "/a/*"}, {Service: "svc", Method: "GET", Path: "/x/*"}}})
	for b.Loop() {
		if d, err := e.svc.AuthorizeCall(ctx, Call{Token: iss.Token, Service: "svc", Method: "GET", Path: "/x/1"}); err != nil || !d.Allowed {
			b.Fatalf("%+v %v", d, err)
		}
	}
}
