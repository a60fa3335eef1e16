package daemon

import "testing"

func TestRuleSetsShareEqualRules(t *testing.T) {
	var c ruleSets
	a := []AccessRule{{Service: "inv", Method: "GET", Path: "/v1/items/*"}, {ID: "r2", Service: "inv", Method: "POST", Path: "/v1/items"}}
	b := []AccessRule{{Service: "inv", Method: "GET", Path: "/v1/items/*"}, {ID: "r2", Service: "inv", Method: "POST", Path: "/v1/items"}}
	s1, err := c.compile(a)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := c.compile(b)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Fatal("equal rules were compiled twice")
	}
	if ok, _ := s1.Allows("inv", "GET", "/v1/items/7"); !ok {
		t.Fatal("the shared set refuses what its rules allow")
	}
	if ok, _ := s1.Allows("inv", "DELETE", "/v1/items/7"); ok {
		t.Fatal("the shared set does not decide as its rules say")
	}

	// Sets that differ only in how their text splits into fields, or in
	// order, are different sets.
	others := [][]AccessRule{
		{{ID: "r", Service: "2inv", Method: "GET", Path: "/v1/items/*"}, {Service: "inv", Method: "POST", Path: "/v1/items"}},
		{{Service: "inv", Method: "GET", Path: "/v1/items/*"}, {ID: "r2", Service: "inv", Method: "POST", Path: "/v1/items/"}},
		{{ID: "r2", Service: "inv", Method: "POST", Path: "/v1/items"}, {Service: "inv", Method: "GET", Path: "/v1/items/*"}},
		{{Service: "inv", Method: "GET", Path: "/v1/items/*"}},
		{},
	}
	for i, o := range others {
		got, err := c.compile(o)
		if err != nil {
			t.Fatalf("other %d: %v", i, err)
		}
		if got == s1 {
			t.Fatalf("other %d shares the set of different rules", i)
		}
		if got.Len() != len(o) {
			t.Fatalf("other %d: %d rules, want %d", i, got.Len(), len(o))
		}
	}

	if set, err := c.compile(nil); set != nil || err != nil {
		t.Fatalf("nil rules: %v %v, want a nil (unrestricted) set", set, err)
	}
	empty, _ := c.compile([]AccessRule{})
	if empty == nil {
		t.Fatal("an empty rule list must allow nothing, not be unrestricted")
	}
	if ok, _ := empty.Allows("inv", "GET", "/v1/items/1"); ok {
		t.Fatal("an empty rule list allowed a call")
	}
	bad := []AccessRule{{Service: "inv", Method: "GET", Path: "no-slash"}}
	for range 2 {
		if _, err := c.compile(bad); CodeOf(err) != CodeInvalidAccessRule {
			t.Fatalf("invalid rule: %v, want %s every time", err, CodeInvalidAccessRule)
		}
	}
}

func TestRuleSetsShareEqualLists(t *testing.T) {
	var c ruleSets
	l1 := c.list([]string{"reader", "writer"})
	l2 := c.list([]string{"reader", "writer"})
	if &l1[0] != &l2[0] {
		t.Fatal("equal lists are not shared")
	}
	if l3 := c.list([]string{"readerwriter"}); len(l3) != 1 || l3[0] != "readerwriter" {
		t.Fatalf("a list of other values came back as %q", l3)
	}
	if c.list(nil) != nil {
		t.Fatal("nil list not kept nil")
	}
	if e := c.list([]string{}); e == nil || len(e) != 0 {
		t.Fatal("an empty list not kept empty")
	}
}
