package policy

import (
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"
)

// testPattern is a small glob for tests: "*" one segment, "**" the rest.
func testPattern(pattern string) (func(string) bool, error) {
	if !strings.HasPrefix(pattern, "/") {
		return nil, errors.New("a path pattern starts with /")
	}
	segs := strings.Split(strings.Trim(pattern, "/"), "/")
	return func(path string) bool {
		got := strings.Split(strings.Trim(path, "/"), "/")
		for i, s := range segs {
			if s == "**" {
				return true
			}
			if i >= len(got) || (s != "*" && s != got[i]) {
				return false
			}
		}
		return len(got) == len(segs)
	}, nil
}

func compiler(t testing.TB) *Compiler {
	t.Helper()
	c, err := NewCompiler(Options{PathPattern: testPattern})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustCompile(t testing.TB, c *Compiler, name string, rules ...Rule) *Policy {
	t.Helper()
	p, err := c.Compile(name, Document{Rules: rules})
	if err != nil {
		t.Fatalf("compile %s: %v", name, err)
	}
	return p
}

func input() *Input {
	// Wednesday 2026-12-02 10:30 UTC.
	return &Input{
		Request: Request{Service: "coffer", Method: "GET", Path: "/v1/secrets/abc", Time: time.Date(2026, 12, 2, 10, 30, 0, 0, time.UTC)},
		Subject: Subject{User: "web", UserID: "u1", UserKind: "workload", Project: "alpha", ProjectID: "p1", Roles: []string{"reader"},
			CredentialID: "c1", CredentialName: "web-token", TokenKind: "access-token", SessionType: "clientless", Policies: []string{"a"}},
		Peer: Peer{Channel: "unix", UID: 1500, GID: 1500, CID: -1},
	}
}

// Every variable and helper reads what the input holds.
func TestConditions(t *testing.T) {
	c := compiler(t)
	tests := []struct {
		cond string
		want bool
	}{
		{`request.service == "coffer"`, true},
		{`request.method == "GET" && request.path.startsWith("/v1/secrets/")`, true},
		{`request.path.matchesPath("/v1/secrets/*")`, true},
		{`request.path.matchesPath("/v1/projects/**")`, false},
		{`request.time > timestamp("2026-01-01T00:00:00Z")`, true},
		{`timeOfDayBetween(request.time, "09:00", "17:00", "UTC")`, true},
		{`timeOfDayBetween(request.time, "11:00", "17:00", "UTC")`, false},
		{`timeOfDayBetween(request.time, "22:00", "11:00", "UTC")`, true}, // over midnight
		{`timeOfDayBetween(request.time, "09:00", "10:00", "Asia/Tokyo")`, false},
		{`weekday(request.time, "UTC") == "wednesday"`, true},
		{`weekday(request.time, "UTC") in ["saturday", "sunday"]`, false},
		{`subject.user == "web" && subject.user_id == "u1" && subject.user_kind == "workload"`, true},
		{`subject.project == "alpha" && subject.project_id == "p1"`, true},
		{`"reader" in subject.roles && !("admin" in subject.roles)`, true},
		{`subject.credential_id == "c1" && subject.credential_name == "web-token"`, true},
		{`subject.token_kind == "access-token" && subject.session_type == "clientless"`, true},
		{`"a" in subject.policies`, true},
		{`peer.channel == "unix" && peer.uid == 1500 && peer.gid == 1500 && peer.cid == -1`, true},
		{`peer.vm == "" && peer.unit == ""`, true},
	}
	for _, tt := range tests {
		t.Run(tt.cond, func(t *testing.T) {
			p := mustCompile(t, c, "p", Rule{Effect: Allow, Condition: tt.cond})
			d := Decide([]*Policy{p}, input(), false)
			if d.Allowed != tt.want {
				t.Errorf("%s: allowed %v (%s), want %v", tt.cond, d.Allowed, d.Reason, tt.want)
			}
		})
	}
}

// Deny overrides allow; every policy with allow rules must allow on its
// own; no policies, or policies of deny rules only that do not hold,
// allow. Adding a policy never lets more through.
func TestDecide(t *testing.T) {
	c := compiler(t)
	allowGet := mustCompile(t, c, "allow-get", Rule{Effect: Allow, Condition: `request.method == "GET"`})
	allowPut := mustCompile(t, c, "allow-put", Rule{Effect: Allow, Condition: `request.method == "PUT"`})
	allowAll := mustCompile(t, c, "allow-all", Rule{Effect: Allow, Condition: `true`})
	denyNight := mustCompile(t, c, "deny-night", Rule{Effect: Deny, Condition: `!timeOfDayBetween(request.time, "08:00", "20:00", "UTC")`})
	denySecrets := mustCompile(t, c, "deny-secrets",
		Rule{Effect: Deny, Condition: `request.method == "DELETE"`},
		Rule{Effect: Deny, Condition: `request.path.matchesPath("/v1/secrets/**")`})
	tests := []struct {
		name     string
		policies []*Policy
		allowed  bool
		reason   string
	}{
		{"none", nil, true, ""},
		{"a deny that does not hold", []*Policy{denyNight}, true, "no policy rule denies"},
		{"an allow that holds", []*Policy{allowGet}, true, "no policy rule denies; policy allow-get rule 1 allows"},
		{"an allow that does not hold", []*Policy{allowPut}, false, "policy allow-put: none of its allow rules holds"},
		{"each policy must allow: one does not", []*Policy{allowGet, allowPut}, false, "policy allow-put: none of its allow rules holds"},
		{"a permissive policy added does not widen", []*Policy{allowPut, allowAll}, false, "policy allow-put: none of its allow rules holds"},
		{"deny overrides allow", []*Policy{allowGet, denySecrets}, false, "policy deny-secrets rule 2 denies"},
		{"deny before allow", []*Policy{denySecrets, allowGet}, false, "policy deny-secrets rule 2 denies"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := Decide(tt.policies, input(), false)
			if d.Allowed != tt.allowed || (tt.reason != "" && d.Reason != tt.reason) {
				t.Errorf("got allowed %v (%q), want %v (%q)", d.Allowed, d.Reason, tt.allowed, tt.reason)
			}
		})
	}
	d := Decide([]*Policy{allowGet, denySecrets, denyNight}, input(), true)
	if strings.Join(d.Matched, ",") != "deny-secrets#2,allow-get#1" || d.Allowed {
		t.Errorf("explained: %+v", d)
	}
}

// A condition that fails to evaluate counts against the request: it holds
// for a deny rule and not for an allow rule.
func TestEvaluationErrorsFailClosed(t *testing.T) {
	c := compiler(t)
	badZone := `weekday(request.time, "Mars/Olympus") == "monday"`
	deny := mustCompile(t, c, "d", Rule{Effect: Deny, Condition: badZone})
	if d := Decide([]*Policy{deny}, input(), false); d.Allowed {
		t.Errorf("a deny rule that errs let the request through: %+v", d)
	}
	allow := mustCompile(t, c, "a", Rule{Effect: Allow, Condition: badZone})
	if d := Decide([]*Policy{allow}, input(), false); d.Allowed {
		t.Errorf("an allow rule that errs allowed: %+v", d)
	}
}

// Saving refuses what cannot run or would cost too much, naming the rule
// and the position.
func TestCompileErrors(t *testing.T) {
	c := compiler(t)
	tests := []struct {
		name string
		doc  Document
		want string
	}{
		{"no rules", Document{}, "at least one rule"},
		{"bad effect", Document{Rules: []Rule{{Effect: "maybe", Condition: "true"}}}, "rule 1: effect must be"},
		{"empty condition", Document{Rules: []Rule{{Effect: Deny, Condition: " "}}}, "rule 1: condition is empty"},
		{"syntax", Document{Rules: []Rule{{Effect: Allow, Condition: "true"}, {Effect: Deny, Condition: "request.method =="}}}, "rule 2, line 1 column"},
		{"unknown field", Document{Rules: []Rule{{Effect: Deny, Condition: `request.mthod == "GET"`}}}, "rule 1, line 1 column"},
		{"not bool", Document{Rules: []Rule{{Effect: Deny, Condition: `request.method`}}}, "rule 1: the condition is of type string, not bool"},
		{"bad pattern", Document{Rules: []Rule{{Effect: Deny, Condition: `request.path.matchesPath("no-slash")`}}}, `rule 1: path pattern "no-slash"`},
		{"too costly", Document{Rules: []Rule{{Effect: Deny, Condition: `subject.roles.exists(a, subject.roles.exists(b, subject.roles.exists(c, a + b + c == request.path)))`}}}, "over the limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Compile("p", tt.doc)
			if err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, ErrInvalid) {
				t.Errorf("got %v, want an invalid-policy error containing %q", err, tt.want)
			}
		})
	}
}

// Documents are JSON or YAML, strictly.
func TestParseDocument(t *testing.T) {
	tests := []struct {
		name, in string
		want     string // "" ok
	}{
		{"json", `{"description":"d","rules":[{"effect":"deny","condition":"request.method == \"DELETE\""}]}`, ""},
		{"yaml", "description: d\nrules:\n  - effect: allow\n    condition: 'request.method == \"GET\"'\n", ""},
		{"json unknown field", `{"rules":[{"effect":"deny","condition":"true"}],"x":1}`, "unknown field"},
		{"yaml unknown field", "rules:\n  - effect: deny\n    condition: 'true'\n    when: now\n", "not found"},
		{"json trailing", `{"rules":[{"effect":"deny","condition":"true"}]} {}`, "data after"},
		{"empty", "  ", "empty"},
		{"too large", "rules: " + strings.Repeat("x", MaxDocumentBytes), "larger than"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseDocument([]byte(tt.in))
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("unexpected error %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			}
		})
	}
}

func BenchmarkDecide(b *testing.B) {
	c := compiler(b)
	ps := []*Policy{
		mustCompile(b, c, "p1", Rule{Effect: Deny, Condition: `request.method == "DELETE"`}, Rule{Effect: Allow, Condition: `request.path.matchesPath("/v1/**")`}),
		mustCompile(b, c, "p2", Rule{Effect: Deny, Condition: `!timeOfDayBetween(request.time, "06:00", "22:00", "UTC")`}, Rule{Effect: Deny, Condition: `peer.uid == 0`}),
		mustCompile(b, c, "p3", Rule{Effect: Deny, Condition: `"admin" in subject.roles && subject.token_kind == "access-token"`}, Rule{Effect: Allow, Condition: `subject.project == "alpha"`}),
	}
	in := input()
	b.ReportAllocs()
	for b.Loop() {
		if d := Decide(ps, in, false); !d.Allowed {
			b.Fatal(d.Reason)
		}
	}
}

// An input past the sizes the costs were estimated for is evaluated under
// the runtime cost limit: a condition whose cost grows with the path
// stops, and the stop fails closed (a deny holds, an allow does not).
func TestInputsPastTheBoundsAreCostLimited(t *testing.T) {
	c := compiler(t)
	deny := mustCompile(t, c, "d", Rule{Effect: Deny, Condition: `request.path.contains("zz")`})
	allow := mustCompile(t, c, "a", Rule{Effect: Allow, Condition: `!request.path.contains("zz")`})
	in := input()
	in.Request.Path = "/" + strings.Repeat("a", maxStringSize-1)
	if !in.withinBounds() {
		t.Fatal("a path of maxStringSize bytes is out of bounds")
	}
	if d := Decide([]*Policy{deny}, in, false); !d.Allowed {
		t.Errorf("within the bounds, no zz: %+v", d)
	}
	if d := Decide([]*Policy{allow}, in, false); !d.Allowed {
		t.Errorf("within the bounds, no zz: %+v", d)
	}
	in.Request.Path = "/" + strings.Repeat("a", 1<<20)
	if d := Decide([]*Policy{deny}, in, false); d.Allowed {
		t.Errorf("a 1 MiB path ran the deny rule to its end: %+v", d)
	}
	if d := Decide([]*Policy{allow}, in, false); d.Allowed {
		t.Errorf("a 1 MiB path ran the allow rule to its end: %+v", d)
	}
}

// withinBounds looks at every string and list of the input: a field
// added to Request, Subject or Peer without it would let an unbounded
// value through the untracked program.
func TestWithinBoundsSeesEveryField(t *testing.T) {
	long := strings.Repeat("x", maxStringSize+1)
	for _, part := range []any{&Request{}, &Subject{}, &Peer{}} {
		typ := reflect.TypeOf(part).Elem()
		for i := range typ.NumField() {
			f := typ.Field(i)
			in := input()
			v := reflect.ValueOf(in).Elem().FieldByName(typ.Name()).Field(i)
			switch f.Type.Kind() {
			case reflect.String:
				v.SetString(long)
			case reflect.Slice:
				v.Set(reflect.ValueOf(make([]string, maxListSize+1)))
			default:
				continue
			}
			if in.withinBounds() {
				t.Errorf("%s.%s past its bound is within bounds", typ.Name(), f.Name)
			}
		}
	}
}
