package policy

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzParseDocument: any bytes give a document that Check accepts or an
// error of the ErrInvalid class; never a panic. A document accepted
// survives a round trip through JSON unchanged.
func FuzzParseDocument(f *testing.F) {
	for _, s := range []string{
		`{"rules":[{"effect":"deny","condition":"request.method == 'DELETE'"}]}`,
		"description: x\nrules:\n- effect: allow\n  condition: subject.user == \"alice\"\n",
		`{"rules":[]}`, "rules: [", "{", "- a\n- b", `{"rules":[{"effect":"allow"}],"x":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		d, err := ParseDocument(data)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error outside ErrInvalid: %v", err)
			}
			return
		}
		if err := d.Check(); err != nil {
			t.Fatalf("parsed but Check refuses: %v", err)
		}
		b, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		again, err := ParseDocument(b)
		if err != nil {
			t.Fatalf("round trip refused: %v", err)
		}
		if len(again.Rules) != len(d.Rules) || again.Description != d.Description {
			t.Fatalf("round trip changed the document")
		}
	})
}

// FuzzCompileAndDecide: any condition compiles or is refused with an
// error of the ErrInvalid class; one that compiles evaluates within the
// cost limit and decides without a panic.
func FuzzCompileAndDecide(f *testing.F) {
	for _, s := range []string{
		`request.method == "GET"`, `request.path.matchesPath("/v1/**")`,
		`timeOfDayBetween(request.time, "09:00", "17:00", "Europe/Paris")`,
		`weekday(request.time, "UTC") in [1, 2, 3]`, `subject.roles.exists(r, r == "admin")`,
		`"a".repeat(100000)`, `[1,2,3].map(x, [x, x]).size() > 1`, `peer.uid == 1000 && peer.channel == "unix"`,
	} {
		f.Add(s)
	}
	c := compiler(f)
	f.Fuzz(func(t *testing.T, cond string) {
		for _, effect := range []string{Allow, Deny} {
			p, err := c.Compile("fuzz", Document{Rules: []Rule{{Effect: effect, Condition: cond}}})
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("error outside ErrInvalid: %v", err)
				}
				return
			}
			d := Decide([]*Policy{p}, input(), true)
			if effect == Deny && d.Allowed && len(d.Matched) > 0 {
				t.Fatalf("a deny rule held and the request was allowed: %+v", d)
			}
		}
	})
}
