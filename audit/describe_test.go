package audit

import (
	"strings"
	"testing"
)

func TestDescribe(t *testing.T) {
	uid := func(n uint32) *uint32 { return &n }
	const sec, cred, proj, user = "01a2b3c4-0000-4000-8000-000000000001", "9f1e22aa-0000-4000-8000-000000000002",
		"5ab0c0de-0000-4000-8000-000000000003", "77aa88bb-0000-4000-8000-000000000004"
	tests := []struct {
		name string
		e    Event
		want string
	}{
		{"rotate", Event{Action: "secret.rotate", Outcome: OutcomeOK, Principal: &Principal{Channel: "unix", UID: uid(1000)},
			Target: map[string]string{"secret": sec, "version": "3", "project": proj}},
			"secret 01a2b3c4… rotated to version 3 in project 5ab0c0de… by uid 1000"},
		{"revoke with a token", Event{Action: "credential.revoke", Outcome: OutcomeOK,
			Principal: &Principal{Channel: "unix", UID: uid(0), Credential: cred}, Target: map[string]string{"credential": cred, "user": user}},
			"credential 9f1e22aa… revoked for user 77aa88bb… by uid 0 with credential 9f1e22aa…"},
		{"authorize denied", Event{Action: "authorize", Outcome: OutcomeDenied, Code: "forbidden", Reason: "no access rule allows it",
			Principal: &Principal{Channel: "unix", UID: uid(1000), TokenID: "cfs_0123456789abcdefABCDEF"},
			Target:    map[string]string{"service": "billing", "path": "/v1/invoices/acme", "credential": cred}},
			"authorize denied of credential 9f1e22aa… by uid 1000 with token cfs_0123456789abcdefABCDEF: forbidden"},
		{"binding by names", Event{Action: "binding.create", Outcome: OutcomeOK, Principal: &Principal{Channel: "daemon"},
			Target: map[string]string{"binding": "not-an-id name", "secret": sec, "unit": "payroll.service", "unit_credential": "dbpass"}},
			"binding created of secret 01a2b3c4… by the daemon"},
		{"deliver", Event{Action: "deliver", Outcome: OutcomeOK, Principal: &Principal{Channel: "vsock", CID: uid(42)},
			Target: map[string]string{"secret": sec, "name": "dbpass"}},
			"secret 01a2b3c4… delivered by vsock cid 42"},
		{"coalesced", Event{Action: "secret.create", Outcome: OutcomeDenied, Code: "forbidden", Count: 7, Principal: &Principal{Channel: "unix", UID: uid(1001)}},
			"secret create denied by uid 1001 (7 more like it): forbidden"},
		{"introspect inactive", Event{Action: "oauth2.introspect", Outcome: OutcomeOK, Principal: &Principal{Channel: "unix", UID: uid(33)},
			Target: map[string]string{"active": "false"}},
			"token introspected (inactive) by uid 33"},
		{"reload", Event{Action: "config.reload", Outcome: OutcomeOK, Principal: &Principal{Channel: "unix", UID: uid(0)}}, "config reloaded by uid 0"},
		{"lost", Event{Action: ActionLost, Outcome: OutcomeOK, Target: map[string]string{TargetEvents: "12"}}, "audit events lost"},
		{"empty", Event{}, "audit event"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Describe(tt.e); got != tt.want {
				t.Fatalf("Describe =\n  %s\nwant\n  %s", got, tt.want)
			}
		})
	}
}

// Names, paths, services and reasons never reach the message: only ids
// (hex and dashes) do, whatever key they are under.
func TestDescribeNamesNothing(t *testing.T) {
	const canary = "NAMECANARY-db-password"
	for _, action := range []string{"secret.rotate", "binding.create", "authorize", "deliver", "loadcredential", "user.create", "role.grant", "x.y"} {
		for _, outcome := range []string{OutcomeOK, OutcomeDenied, OutcomeFailed} {
			target := map[string]string{}
			for _, k := range []string{"secret", "credential", "user", "project", "session", "binding", "unit", "unit_credential",
				"name", "display_name", "service", "path", "reason", "version", "role"} {
				target[k] = canary
			}
			e := Event{Action: action, Outcome: outcome, Code: canary, Reason: canary, Target: target,
				Principal: &Principal{Channel: "unix", Credential: canary, TokenID: canary, User: canary}}
			if got := Describe(e); strings.Contains(got, canary) || strings.Contains(got, "NAMECANARY") {
				t.Fatalf("Describe(%s %s) = %s", action, outcome, got)
			}
		}
	}
}
