package daemon

import (
	"encoding/json"
	"errors"
	"regexp"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// refRuleRegexp is an independent reference for path matching: the pattern
// translated to an anchored regexp. p must be a valid pattern.
func refRuleRegexp(p string) *regexp.Regexp {
	var b strings.Builder
	b.WriteString(`^`)
	for i := 0; i < len(p); {
		switch {
		case strings.HasPrefix(p[i:], "**"):
			b.WriteString(`(?s:.*)`)
			i += 2
		case p[i] == '*':
			b.WriteString(`[^/]+`)
			i++
		case p[i] == '{':
			b.WriteString(`[^/]+`)
			i += strings.IndexByte(p[i:], '}') + 1
		default:
			b.WriteString(regexp.QuoteMeta(p[i : i+1]))
			i++
		}
	}
	b.WriteString(`$`)
	return regexp.MustCompile(b.String())
}

func refRuleMatch(pattern, path string) bool {
	if path == "" || path[0] != '/' || strings.IndexByte(path, 0) >= 0 {
		return false
	}
	return refRuleRegexp(pattern).MatchString(path)
}

func mustCompileRule(t testing.TB, r AccessRule) *CompiledRule {
	t.Helper()
	c, err := CompileRule(r)
	if err != nil {
		t.Fatalf("CompileRule(%+v): %v", r, err)
	}
	return c
}

func TestMatchRulePath(t *testing.T) {
	cases := []struct {
		pattern, path string
		want          bool
	}{
		// exact
		{"/", "/", true},
		{"/", "//", false},
		{"/", "", false},
		{"/a", "/a", true},
		{"/a", "/ab", false},
		{"/a", "/A", false},
		{"/a/b", "/a/b", true},
		{"/a/b", "/a/b/", false},
		// trailing slashes are exact
		{"/a/", "/a/", true},
		{"/a/", "/a", false},
		{"/a", "/a/", false},
		{"/a/*/", "/a/b/", true},
		{"/a/*/", "/a/b", false},
		{"/a/*", "/a/b/", false},
		// * : one non-empty segment
		{"/a/*", "/a/b", true},
		{"/a/*", "/a/bcd", true},
		{"/a/*", "/a/", false},
		{"/a/*", "/a", false},
		{"/a/*", "/a/b/c", false},
		{"/*", "/x", true},
		{"/*", "/", false},
		{"/*", "//", false},
		{"/a/*/c", "/a/b/c", true},
		{"/a/*/c", "/a//c", false}, // empty segment does not match *
		{"/a/*/c", "/a/b/d/c", false},
		{"/a/*/c", "/a/b/c/", false},
		{"/*/*", "/a/b", true},
		{"/*/*", "/a/", false},
		{"/*/*", "//b", false},
		// * within a segment
		{"/files/*.txt", "/files/a.txt", true},
		{"/files/*.txt", "/files/.txt", false},
		{"/files/*.txt", "/files/a.b.txt", true},
		{"/files/*.txt", "/files/a/b.txt", false},
		{"/files/*.txt", "/files/a.txtx", false},
		{"/v*", "/v1", true},
		{"/v*", "/v", false},
		{"/*a*", "/aaa", true},
		{"/*a*", "/ba", false},
		{"/*a*", "/bab", true},
		{"/**{x}", "/", false},
		{"/*{x}", "/a", false},
		{"/*{x}", "/ab", true},
		// {name}
		{"/p/{id}", "/p/123", true},
		{"/p/{id}", "/p/", false},
		{"/p/{id}", "/p/1/2", false},
		{"/p/{id}/s/{sid}", "/p/1/s/2", true},
		{"/p/{id}/s/{sid}", "/p/1/s/", false},
		{"/p/{_x9}-{Y}", "/p/a-b", true},
		{"/p/{_x9}-{Y}", "/p/a-b-c", true},
		{"/p/{_x9}-{Y}", "/p/-b", false},
		{"/p/{_x9}-{Y}", "/p/a-", false},
		{"/p/{id}/{id}", "/p/1/2", true}, // names are labels only
		// ** at the end
		{"/a/**", "/a/", true},
		{"/a/**", "/a/b", true},
		{"/a/**", "/a/b/c", true},
		{"/a/**", "/a//", true},
		{"/a/**", "/a", false},
		{"/a/**", "/ab", false},
		{"/a/**", "/b/a/", false},
		{"/a**", "/a", true},
		{"/a**", "/abc/d", true},
		// /** vs /
		{"/**", "/", true},
		{"/**", "//", true},
		{"/**", "/anything/at/all", true},
		{"/**", "", false},
		{"/**", "a", false},
		// ** at the start
		{"/**/x", "//x", true},
		{"/**/x", "/a/x", true},
		{"/**/x", "/a/b/c/x", true},
		{"/**/x", "/x", false},
		{"/**/x", "/a/xx", false},
		{"/**.json", "/a/b.json", true},
		{"/**.json", "/.json", true},
		{"/**.json", "/a/b.jsonx", false},
		// ** in the middle
		{"/a/**/z", "/a/z", false},
		{"/a/**/z", "/a//z", true},
		{"/a/**/z", "/a/b/z", true},
		{"/a/**/z", "/a/b/c/z", true},
		{"/a/**/z", "/a/b/c/z/", false},
		{"/a/**/z", "/a/z/z", true},
		{"/a/**z", "/a/z", true},
		{"/a/**/*/z", "/a/b/z", false}, // needs "/a/", then "/" before the segment
		{"/a/**/*/z", "/a//b/z", true},
		{"/a/**/*/z", "/a//z", false},
		{"/a/**/*/z", "/a/b/c/d/z", true},
		{"/a/**/b/**/c", "/a/b/c", false},
		{"/a/**/b/**/c", "/a//b//c", true},
		{"/a/**/b/**/c", "/a/x/b/y/b/z/c", true},
		{"/a/**/b/**/c", "/a/x/b/y/c/d", false},
		{"/**/**", "/", false},
		{"/**/**", "//", true},
		{"/**a**", "/xay", true},
		{"/**a**", "/xyz", false},
		// literal dots and regexp metacharacters
		{"/a.b", "/a.b", true},
		{"/a.b", "/axb", false},
		{"/a+", "/a+", true},
		{"/a+", "/aa", false},
		{"/(a)", "/(a)", true},
		{"/(a)", "/a", false},
		{"/[ab]", "/[ab]", true},
		{"/[ab]", "/a", false},
		{"/a?", "/a?", true},
		{"/a?", "/a", false},
		{"/a?b=1", "/a?b=1", true},
		{"/$x", "/$x", true},
		{"/^x", "/^x", true},
		{"/a|b", "/a|b", true},
		{"/a|b", "/a", false},
		{"/a|b", "/b", false},
		{`/a\d`, `/a\d`, true},
		{`/a\d`, "/a1", false},
		{"/.*", "/.x", true},
		{"/.*", "/.", false},
		{"/.*", "/.a", true},
		{"/.*", "/ab", false},
		{"/%2F", "/%2F", true},
		{"/%2F", "/%2f", false},
		{"/é/*", "/é/ü", true},
		{"/a b", "/a b", true},
		// no cleaning, no decoding
		{"/a/**", "/a/../b", true},
		{"/a/b", "/a/./b", false},
		{"/a/b", "/a//b", false},
		{"/a/*", "/a/%2F", true},
		// bad request paths never match
		{"/**", "/a\x00b", false},
		{"/*", "/\x00", false},
		{"/a/**", "a/b", false},
		{"/a", "a", false},
	}
	for _, tc := range cases {
		c := mustCompileRule(t, AccessRule{Service: "svc", Method: "GET", Path: tc.pattern})
		if got := c.Match("svc", "GET", tc.path); got != tc.want {
			t.Errorf("%q matching %q = %v, want %v", tc.pattern, tc.path, got, tc.want)
		}
		if ref := refRuleMatch(tc.pattern, tc.path); ref != tc.want {
			t.Errorf("reference regexp disagrees with the table: %q matching %q = %v", tc.pattern, tc.path, ref)
		}
	}
}

func TestMatchRuleServiceAndMethod(t *testing.T) {
	c := mustCompileRule(t, AccessRule{Service: "my-svc.v2", Method: "POST", Path: "/x"})
	cases := []struct {
		service, method string
		want            bool
	}{
		{"my-svc.v2", "POST", true},
		{"my-svc.v2", "post", false},
		{"my-svc.v2", "Post", false},
		{"my-svc.v2", "GET", false},
		{"my-svc.v2", "PUT", false},
		{"my-svc.v2", "", false},
		{"MY-SVC.V2", "POST", false},
		{"my-svc", "POST", false},
		{"my-svc.v2 ", "POST", false},
		{"my-svc.v22", "POST", false},
		{"", "POST", false},
	}
	for _, tc := range cases {
		if got := c.Match(tc.service, tc.method, "/x"); got != tc.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tc.service, tc.method, got, tc.want)
		}
	}
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"} {
		c := mustCompileRule(t, AccessRule{Service: "s", Method: m, Path: "/"})
		if !c.Match("s", m, "/") {
			t.Errorf("method %s does not match itself", m)
		}
	}
}

func TestCompileRuleRejects(t *testing.T) {
	ok := AccessRule{Service: "svc", Method: "GET", Path: "/a"}
	with := func(f func(*AccessRule)) AccessRule { r := ok; f(&r); return r }
	path := func(p string) AccessRule { return with(func(r *AccessRule) { r.Path = p }) }
	cases := []struct {
		name string
		rule AccessRule
		want string // substring of the message
	}{
		{"empty service", with(func(r *AccessRule) { r.Service = "" }), "service"},
		{"upper-case service", with(func(r *AccessRule) { r.Service = "Svc" }), "service"},
		{"service with slash", with(func(r *AccessRule) { r.Service = "a/b" }), "service"},
		{"service ending in dash", with(func(r *AccessRule) { r.Service = "svc-" }), "service"},
		{"service too long", with(func(r *AccessRule) { r.Service = strings.Repeat("a", 65) }), "service"},
		{"empty method", with(func(r *AccessRule) { r.Method = "" }), "method"},
		{"lower-case method", with(func(r *AccessRule) { r.Method = "get" }), "method"},
		{"unknown method", with(func(r *AccessRule) { r.Method = "OPTIONS" }), "method"},
		{"wildcard method", with(func(r *AccessRule) { r.Method = "*" }), "method"},
		{"empty path", path(""), "must not be empty"},
		{"relative path", path("a/b"), "must start with '/'"},
		{"wildcard first", path("*/a"), "must start with '/'"},
		{"placeholder first", path("{a}"), "must start with '/'"},
		{"space first", path(" /a"), "must start with '/'"},
		{"too long", path("/" + strings.Repeat("a", MaxAccessRulePath)), "limit is 512"},
		{"three stars", path("/***"), "3 '*' in a row"},
		{"four stars", path("/a/****/b"), "4 '*' in a row"},
		{"unclosed brace", path("/a/{id"), "unclosed '{'"},
		{"unclosed brace at end", path("/a/{"), "unclosed '{'"},
		{"empty placeholder", path("/a/{}"), "empty placeholder"},
		{"nested brace", path("/a/{a{b}}"), "invalid placeholder name"},
		{"digit first name", path("/a/{1id}"), "invalid placeholder name"},
		{"dash in name", path("/a/{a-b}"), "invalid placeholder name"},
		{"slash in name", path("/a/{a/b}"), "invalid placeholder name"},
		{"space in name", path("/a/{ id }"), "invalid placeholder name"},
		{"star in name", path("/a/{*}"), "invalid placeholder name"},
		{"stray close", path("/a}"), "'}' without '{'"},
		{"stray close after placeholder", path("/{a}}"), "'}' without '{'"},
		{"NUL", path("/a\x00"), "control characters"},
		{"newline", path("/a\nb"), "control characters"},
		{"tab", path("/a\tb"), "control characters"},
		{"DEL", path("/a\x7f"), "control characters"},
		{"C1 control", path("/a\u0085"), "control characters"},
		{"invalid UTF-8", path("/a\xff"), "valid UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c, err := CompileRule(tc.rule)
			if err == nil {
				t.Fatalf("CompileRule(%+v) = %+v, want an error", tc.rule, c)
			}
			if c != nil {
				t.Errorf("CompileRule returned a rule with its error")
			}
			if !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("error %v is not ErrInvalidArgument", err)
			}
			if code := CodeOf(err); code != CodeInvalidAccessRule {
				t.Errorf("code = %q, want %q", code, CodeInvalidAccessRule)
			}
			if msg := MessageOf(err); !strings.Contains(msg, tc.want) {
				t.Errorf("message %q does not contain %q", msg, tc.want)
			}
			if strings.ContainsAny(MessageOf(err), "\x00\n\t\x7f") {
				t.Errorf("message %q carries raw control characters", MessageOf(err))
			}
		})
	}
}

func TestCompileRuleAccepts(t *testing.T) {
	for _, p := range []string{
		"/", "/**", "/*", "/{id}", "/a/**/b", "/**{x}", "/*{x}**", "/{_}", "/{A_1}",
		"/a.b+c(d)[e]?f$g^h|i\\j", "/a b/%20/~", "/é/ü/日本",
		"/" + strings.Repeat("a", MaxAccessRulePath-1),
	} {
		r := AccessRule{ID: "r1", Service: "0", Method: "DELETE", Path: p}
		c, err := CompileRule(r)
		if err != nil {
			t.Errorf("CompileRule(%q): %v", p, err)
			continue
		}
		if c.Rule() != r {
			t.Errorf("Rule() = %+v, want %+v", c.Rule(), r)
		}
	}
}

func TestMatchRuleLongPaths(t *testing.T) {
	long := "/a/" + strings.Repeat("b/", 600) + "c" // beyond the stack bitset
	for _, tc := range []struct {
		pattern, path string
		want          bool
	}{
		{"/a/**", long, true},
		{"/a/**/c", long, true},
		{"/a/**/*/c", long, true},
		{"/a/**/d", long, false},
		{"/**/b/**", long, true},
		{"/*/**", long, true},
		{"/a/*", long, false},
		{"/a/*", "/a/" + strings.Repeat("x", 5000), true},
		{"/a/*x", "/a/" + strings.Repeat("x", 5000), true},
		{"/a/*y", "/a/" + strings.Repeat("x", 5000), false},
	} {
		c := mustCompileRule(t, AccessRule{Service: "s", Method: "GET", Path: tc.pattern})
		if got := c.Match("s", "GET", tc.path); got != tc.want {
			t.Errorf("%q matching a %d-byte path = %v, want %v", tc.pattern, len(tc.path), got, tc.want)
		}
		if ref := refRuleMatch(tc.pattern, tc.path); ref != tc.want {
			t.Errorf("reference disagrees: %q matching a %d-byte path = %v", tc.pattern, len(tc.path), ref)
		}
	}
}

// Patterns that make a backtracking matcher explode must stay linear.
func TestMatchRuleNoBacktracking(t *testing.T) {
	pattern := "/" + strings.Repeat("*a", 60) + "b"
	pattern2 := "/" + strings.Repeat("**a", 60) + "b"
	path := "/" + strings.Repeat("a", 100000)
	start := time.Now()
	for _, p := range []string{pattern, pattern2} {
		c := mustCompileRule(t, AccessRule{Service: "s", Method: "GET", Path: p})
		if c.Match("s", "GET", path) {
			t.Errorf("%q matched", p)
		}
		if !c.Match("s", "GET", path+"b") {
			t.Errorf("%q did not match", p)
		}
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("pathological patterns took %v", d)
	}
}

func TestRuleSetNilVsEmpty(t *testing.T) {
	unrestricted, err := CompileRules(nil)
	if err != nil || unrestricted != nil {
		t.Fatalf("CompileRules(nil) = %v, %v; want nil, nil", unrestricted, err)
	}
	if !unrestricted.Unrestricted() || unrestricted.Len() != 0 || unrestricted.Rules() != nil {
		t.Errorf("nil set: Unrestricted %v, Len %d, Rules %#v", unrestricted.Unrestricted(), unrestricted.Len(), unrestricted.Rules())
	}
	if ok, reason := unrestricted.Allows("any", "GET", "/anything"); !ok || reason != "no access rules" {
		t.Errorf("nil set Allows = %v, %q", ok, reason)
	}
	var zero *RuleSet
	if ok, _ := zero.Allows("x", "BREW", "not-a-path"); !ok {
		t.Errorf("a nil *RuleSet denied")
	}

	denyAll, err := CompileRules([]AccessRule{})
	if err != nil || denyAll == nil {
		t.Fatalf("CompileRules([]) = %v, %v; want a non-nil set", denyAll, err)
	}
	if denyAll.Unrestricted() || denyAll.Len() != 0 {
		t.Errorf("empty set: Unrestricted %v, Len %d", denyAll.Unrestricted(), denyAll.Len())
	}
	if rs := denyAll.Rules(); rs == nil || len(rs) != 0 {
		t.Errorf("empty set Rules() = %#v, want a non-nil empty slice", rs)
	}
	if ok, reason := denyAll.Allows("svc", "GET", "/x"); ok || reason != "no rule matches GET /x on svc" {
		t.Errorf("empty set Allows = %v, %q", ok, reason)
	}

	// The difference survives JSON.
	for _, tc := range []struct {
		set  *RuleSet
		want string
	}{{unrestricted, "null"}, {denyAll, "[]"}} {
		b, err := json.Marshal(tc.set.Rules())
		if err != nil || string(b) != tc.want {
			t.Errorf("json = %s, %v; want %s", b, err, tc.want)
		}
		var back []AccessRule
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		set, err := CompileRules(back)
		if err != nil || set.Unrestricted() != tc.set.Unrestricted() {
			t.Errorf("round trip of %s: %v, %v", b, set, err)
		}
	}
}

func TestRuleSetAllows(t *testing.T) {
	rules := []AccessRule{
		{ID: "r-get", Service: "coffer", Method: "GET", Path: "/v1/projects/{id}"},
		{Service: "coffer", Method: "POST", Path: "/v1/projects/*/secrets/**"},
		{ID: "r-static", Service: "web", Method: "GET", Path: "/static/**"},
		{Service: "web", Method: "GET", Path: "/static/**"}, // shadowed by r-static
	}
	set, err := CompileRules(rules)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 4 || set.Unrestricted() {
		t.Fatalf("Len %d, Unrestricted %v", set.Len(), set.Unrestricted())
	}
	got := set.Rules()
	for i := range rules {
		if got[i] != rules[i] {
			t.Errorf("Rules()[%d] = %+v, want %+v", i, got[i], rules[i])
		}
	}
	got[0].Path = "/mutated"
	if set.Rules()[0].Path != rules[0].Path {
		t.Errorf("Rules() exposes the set's internals")
	}
	cases := []struct {
		service, method, path string
		ok                    bool
		reason                string
	}{
		{"coffer", "GET", "/v1/projects/p1", true, "matched rule r-get"},
		{"coffer", "POST", "/v1/projects/p1/secrets/", true, "matched rule #1"},
		{"coffer", "POST", "/v1/projects/p1/secrets/s/rotate", true, "matched rule #1"},
		{"web", "GET", "/static/app.js", true, "matched rule r-static"},
		{"coffer", "GET", "/v1/projects/p1/secrets", false, "no rule matches GET /v1/projects/p1/secrets on coffer"},
		{"coffer", "POST", "/v1/projects//secrets/x", false, "no rule matches POST /v1/projects//secrets/x on coffer"},
		{"coffer", "DELETE", "/v1/projects/p1", false, "no rule matches DELETE /v1/projects/p1 on coffer"},
		{"web", "GET", "/static", false, "no rule matches GET /static on web"},
		{"other", "GET", "/static/x", false, "no rule matches GET /static/x on other"},
		{"web", "GET", "/static/a\nb", true, "matched rule r-static"},
		// request values that are not plain text are quoted in the reason
		{"web", "GET", "/x\ny", false, `no rule matches GET "/x\ny" on web`},
		{"web", "GET", "/a b", false, `no rule matches GET "/a b" on web`},
		{"web", "GET", "", false, `no rule matches GET "" on web`},
		{"web", "get", "/x", false, "no rule matches get /x on web"},
		{"", "GET", "/x", false, `no rule matches GET /x on ""`},
		{"web", "GET", "/\x00", false, `no rule matches GET "/\x00" on web`},
	}
	for _, tc := range cases {
		ok, reason := set.Allows(tc.service, tc.method, tc.path)
		if ok != tc.ok || reason != tc.reason {
			t.Errorf("Allows(%q, %q, %q) = %v, %q; want %v, %q", tc.service, tc.method, tc.path, ok, reason, tc.ok, tc.reason)
		}
	}

	// Long request values are cut in the reason.
	_, reason := set.Allows("web", "GET", "/"+strings.Repeat("x", 10000))
	if len(reason) > 300 || !strings.HasSuffix(reason, "... on web") {
		t.Errorf("reason for a long path is %d bytes: %.80q...", len(reason), reason)
	}
}

func TestCompileRulesNamesTheBadRule(t *testing.T) {
	_, err := CompileRules([]AccessRule{
		{Service: "s", Method: "GET", Path: "/ok"},
		{Service: "s", Method: "GET", Path: "/bad/{"},
	})
	if CodeOf(err) != CodeInvalidAccessRule || !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("err = %v (code %q)", err, CodeOf(err))
	}
	if msg := MessageOf(err); !strings.HasPrefix(msg, "access_rules[1]: ") || !strings.Contains(msg, "unclosed '{'") {
		t.Errorf("message = %q", msg)
	}
}

func FuzzCompileRule(f *testing.F) {
	for _, s := range []string{
		"/", "/a", "/a/*", "/a/**", "/{id}", "/**/x", "/a.b", "/a/{", "/***", "/}", "",
		"a", "/{a{b}}", "/a\x00", "/é", "/(a)+?", "/*a*a*b",
	} {
		f.Add(s, "/a/b")
	}
	f.Fuzz(func(t *testing.T, pattern, path string) {
		c, err := CompileRule(AccessRule{Service: "s", Method: "GET", Path: pattern})
		if err != nil {
			if c != nil || CodeOf(err) != CodeInvalidAccessRule {
				t.Fatalf("CompileRule(%q) = %v, %v", pattern, c, err)
			}
			return
		}
		if len(pattern) > MaxAccessRulePath || pattern[0] != '/' {
			t.Fatalf("CompileRule accepted %q", pattern)
		}
		if !strings.ContainsAny(pattern, "*{") {
			// No wildcards: it matches exactly its own path.
			if !c.Match("s", "GET", pattern) {
				t.Fatalf("%q does not match itself", pattern)
			}
			if pattern != path && c.Match("s", "GET", path) {
				t.Fatalf("%q matches %q", pattern, path)
			}
			for _, other := range []string{pattern + "/", pattern + "x", pattern[:len(pattern)-1]} {
				if c.Match("s", "GET", other) {
					t.Fatalf("%q matches %q", pattern, other)
				}
			}
		}
		if got := c.Match("s", "GET", path); utf8.ValidString(path) && got != refRuleMatch(pattern, path) {
			t.Fatalf("%q matching %q = %v; the reference says %v", pattern, path, got, !got)
		}
		if c.Match("t", "GET", path) || c.Match("s", "get", path) {
			t.Fatalf("service or method not matched exactly")
		}
	})
}

func FuzzMatch(f *testing.F) {
	patterns := []string{
		"/", "/**", "/a/*", "/a/**", "/a/*/c", "/a/**/z", "/**/x", "/p/{id}/s/{sid}",
		"/files/*.txt", "/*a*", "/a.b", "/**a**", "/a/**/*/z",
	}
	var compiled []*CompiledRule
	var refs []*regexp.Regexp
	for _, p := range patterns {
		compiled = append(compiled, mustCompileRule(f, AccessRule{Service: "s", Method: "GET", Path: p}))
		refs = append(refs, refRuleRegexp(p))
	}
	for _, s := range []string{"/", "", "//", "/a/b/c", "/a//c", "/a\x00", "a/b", "/a/b.txt", "/\xff/x"} {
		f.Add(s)
	}
	set, err := CompileRules([]AccessRule{
		{Service: "s", Method: "GET", Path: "/a/*/c"},
		{Service: "s", Method: "GET", Path: "/**/x"},
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, path string) {
		for i, c := range compiled {
			got := c.Match("s", "GET", path)
			bad := path == "" || path[0] != '/' || strings.IndexByte(path, 0) >= 0
			if utf8.ValidString(path) && got != (!bad && refs[i].MatchString(path)) {
				t.Fatalf("%q matching %q = %v; the reference says %v", patterns[i], path, got, !got)
			}
			if got && bad {
				t.Fatalf("%q matched the bad request path %q", patterns[i], path)
			}
		}
		ok, reason := set.Allows("s", "GET", path)
		if reason == "" || strings.ContainsAny(reason, "\x00\n\r") {
			t.Fatalf("Allows(%q) = %v, %q", path, ok, reason)
		}
	})
}

func BenchmarkRuleSetAllows(b *testing.B) {
	set, err := CompileRules([]AccessRule{
		{ID: "r1", Service: "coffer", Method: "GET", Path: "/v1/projects/{project}/secrets/{secret}"},
		{ID: "r2", Service: "coffer", Method: "POST", Path: "/v1/projects/*/secrets/**"},
		{ID: "r3", Service: "web", Method: "GET", Path: "/static/**/*.js"},
	})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name, service, method, path string
		want                        bool
	}{
		{"first", "coffer", "GET", "/v1/projects/default/secrets/db-password", true},
		{"second", "coffer", "POST", "/v1/projects/default/secrets/db-password/rotate", true},
		{"third", "web", "GET", "/static/js/vendor/app.min.js", true},
		{"none", "web", "GET", "/static/js/vendor/app.min.css", false},
		{"none-method", "coffer", "DELETE", "/v1/projects/default/secrets/x", false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ok, _ := set.Allows(bc.service, bc.method, bc.path); ok != bc.want {
					b.Fatalf("Allows = %v", ok)
				}
			}
		})
	}
}
