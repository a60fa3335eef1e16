package daemon

// Access rules (DESIGN §3, issue #3 "Access rules").
//
// A rule is {service, method, path}. A request (service, method, path) is
// allowed by a rule when:
//
//   - service equals the rule's service exactly (names are lower-case, see
//     validName);
//   - method equals the rule's method exactly (one of GET HEAD POST PUT PATCH
//     DELETE, upper-case; "get" never matches) — except for service
//     "kubernetes", whose methods are Kubernetes verbs in lower case (get,
//     list, watch, create...: k8s_review.go);
//   - path matches the rule's path pattern as a whole.
//
// Path patterns start with '/'. In a pattern:
//
//   - '*' and '{name}' (name = [A-Za-z_][A-Za-z0-9_]*) each match one
//     non-empty run of bytes without '/' (one segment, or part of one:
//     "/files/*.txt" matches "/files/a.txt");
//   - '**' matches any run of bytes, '/' included, and also the empty string
//     ("/a/**" matches "/a/" and "/a/b/c" but not "/a"; "/**" matches "/"
//     and every path);
//   - every other byte is literal: '.', '+', '?', '(', '$' ... stand for
//     themselves, and trailing slashes are exact ("/a/" does not match "/a").
//
// Request paths are matched byte for byte exactly as given: callers pass the
// raw request path (URL.EscapedPath or RawPath, without the query), and the
// matcher neither cleans it nor percent-decodes it. A ".." segment is just
// two literal dots: "/a/**" matches "/a/../b", so services that resolve dot
// segments must send the path they will actually serve, cleaned, or deny such
// paths themselves. A request path that is empty, does not start with '/' or
// contains a NUL byte never matches.
//
// A credential with no rules (nil) is unrestricted by rules; one with an
// empty list of rules is allowed nothing. RuleSet keeps that distinction: a
// nil *RuleSet allows everything, an empty one nothing.

import (
	"math/bits"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// CodeInvalidAccessRule is the wire code of an access rule that does not
// validate.
const CodeInvalidAccessRule = "invalid_access_rule"

// MaxAccessRulePath is the longest path pattern a rule may have, in bytes.
const MaxAccessRulePath = 512

// accessRuleMethods are the methods a rule may name.
var accessRuleMethods = [...]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

// AccessRule is one rule as stored and sent on the wire. ID is assigned by
// whoever stores the rule; it is not interpreted here.
type AccessRule struct {
	ID      string `json:"id,omitempty"`
	Service string `json:"service"`
	Method  string `json:"method"`
	Path    string `json:"path"`
}

type ruleTokKind uint8

const (
	ruleTokLit ruleTokKind = iota // literal bytes
	ruleTokSeg                    // '*' or '{name}': one or more bytes other than '/'
	ruleTokAny                    // '**': zero or more bytes
)

type ruleTok struct {
	kind ruleTokKind
	lit  string // for ruleTokLit
}

// CompiledRule is a validated rule with its path matcher.
type CompiledRule struct {
	rule AccessRule

	exact bool // the pattern has no wildcards: match by equality

	// For patterns with wildcards: the literal the pattern starts with (it
	// always starts with '/'), the literal it ends with (may be ""), the
	// tokens in between, and the shortest path that can match.
	prefix, suffix string
	mid            []ruleTok
	minLen         int
}

func invalidRule(format string, args ...any) error {
	return Invalid(CodeInvalidAccessRule, format, args...)
}

// CompileRule validates r and builds its matcher. Errors are
// Invalid(CodeInvalidAccessRule, ...) and name the field and the problem.
func CompileRule(r AccessRule) (*CompiledRule, error) {
	if !validName(r.Service) {
		return nil, invalidRule("access rule service %q is invalid: use 1-64 of a-z 0-9 . _ - starting and ending with a letter or digit", r.Service)
	}
	if r.Service == K8sService && !validK8sVerb(r.Method) {
		return nil, invalidRule("access rule method %q is invalid for service %s: use a Kubernetes verb in lower case (get, list, watch, create, update, patch, delete, deletecollection...)", r.Method, K8sService)
	}
	if r.Service != K8sService && !validRuleMethod(r.Method) {
		return nil, invalidRule("access rule method %q is invalid: use one of %s", r.Method, strings.Join(accessRuleMethods[:], " "))
	}
	toks, err := parseRulePath(r.Path)
	if err != nil {
		return nil, err
	}
	c := &CompiledRule{rule: r}
	if len(toks) == 1 { // a single literal: the pattern starts with '/'
		c.exact = true
		return c, nil
	}
	c.prefix = toks[0].lit // toks[0] is a literal: the pattern starts with '/'
	toks = toks[1:]
	if last := toks[len(toks)-1]; last.kind == ruleTokLit {
		c.suffix = last.lit
		toks = toks[:len(toks)-1]
	}
	c.mid = toks
	c.minLen = len(c.prefix) + len(c.suffix)
	for _, t := range toks {
		switch t.kind {
		case ruleTokLit:
			c.minLen += len(t.lit)
		case ruleTokSeg:
			c.minLen++
		}
	}
	return c, nil
}

// validK8sVerb accepts a Kubernetes verb: 1-32 lower-case letters (the
// verbs of rules with service "kubernetes", k8s_review.go).
func validK8sVerb(v string) bool {
	if v == "" || len(v) > 32 {
		return false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < 'a' || v[i] > 'z' {
			return false
		}
	}
	return true
}

func validRuleMethod(m string) bool {
	for _, v := range accessRuleMethods {
		if m == v {
			return true
		}
	}
	return false
}

func validRulePlaceholder(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// parseRulePath validates a path pattern and splits it into tokens. The
// first token is always a literal starting with '/'; literals are never
// adjacent and never empty.
func parseRulePath(p string) ([]ruleTok, error) {
	switch {
	case p == "":
		return nil, invalidRule("access rule path must not be empty")
	case len(p) > MaxAccessRulePath:
		return nil, invalidRule("access rule path is %d bytes long; the limit is %d", len(p), MaxAccessRulePath)
	case p[0] != '/':
		return nil, invalidRule("access rule path %q must start with '/'", p)
	case !utf8.ValidString(p):
		return nil, invalidRule("access rule path %q must be valid UTF-8", p)
	case strings.ContainsFunc(p, unicode.IsControl):
		return nil, invalidRule("access rule path %q must not contain control characters", p)
	}
	var toks []ruleTok
	litStart := 0
	flush := func(end int) {
		if end > litStart {
			toks = append(toks, ruleTok{kind: ruleTokLit, lit: p[litStart:end]})
		}
	}
	for i := 0; i < len(p); {
		switch p[i] {
		case '*':
			n := 1
			for i+n < len(p) && p[i+n] == '*' {
				n++
			}
			if n > 2 {
				return nil, invalidRule("access rule path %q has %d '*' in a row at byte %d: use * for one segment or ** for any number", p, n, i)
			}
			flush(i)
			kind := ruleTokSeg
			if n == 2 {
				kind = ruleTokAny
			}
			toks = append(toks, ruleTok{kind: kind})
			i += n
			litStart = i
		case '{':
			j := strings.IndexByte(p[i+1:], '}')
			if j < 0 {
				return nil, invalidRule("access rule path %q has an unclosed '{' at byte %d", p, i)
			}
			name := p[i+1 : i+1+j]
			if name == "" {
				return nil, invalidRule("access rule path %q has an empty placeholder {} at byte %d", p, i)
			}
			if !validRulePlaceholder(name) {
				return nil, invalidRule("access rule path %q has an invalid placeholder name %q at byte %d: use a letter or '_' then letters, digits or '_'", p, name, i)
			}
			flush(i)
			toks = append(toks, ruleTok{kind: ruleTokSeg})
			i += j + 2
			litStart = i
		case '}':
			return nil, invalidRule("access rule path %q has a '}' without '{' at byte %d", p, i)
		default:
			i++
		}
	}
	flush(len(p))
	return toks, nil
}

// Rule returns the rule c was compiled from.
func (c *CompiledRule) Rule() AccessRule { return c.rule }

// Match reports whether a request for service, method and the raw path is
// allowed by c. See the comment at the top of this file for the
// semantics.
func (c *CompiledRule) Match(service, method, path string) bool {
	return method == c.rule.Method && service == c.rule.Service && c.matchPath(path)
}

func (c *CompiledRule) matchPath(path string) bool {
	if path == "" || path[0] != '/' || strings.IndexByte(path, 0) >= 0 {
		return false
	}
	if c.exact {
		return path == c.rule.Path
	}
	if len(path) < c.minLen || !strings.HasPrefix(path, c.prefix) || !strings.HasSuffix(path, c.suffix) {
		return false
	}
	// minLen >= len(prefix)+len(suffix), so the two do not overlap.
	return matchRuleToks(c.mid, path[len(c.prefix):len(path)-len(c.suffix)])
}

// ruleBufWords is how many 64-bit words of position set live on the stack;
// longer paths allocate.
const ruleBufWords = 8

// matchRuleToks reports whether toks match all of s. It tracks the set of
// positions in s reachable after each token (a bitset of len(s)+1 bits), so
// it runs in O(len(toks) * len(s)) whatever the pattern: no backtracking.
func matchRuleToks(toks []ruleTok, s string) bool {
	n := len(s)
	words := (n + 1 + 63) / 64
	var buf [2 * ruleBufWords]uint64
	var cur, next []uint64
	if words <= ruleBufWords {
		cur, next = buf[:words], buf[ruleBufWords:ruleBufWords+words]
	} else {
		cur, next = make([]uint64, words), make([]uint64, words)
	}
	cur[0] = 1 // position 0
	for _, t := range toks {
		clear(next)
		switch t.kind {
		case ruleTokLit:
			l, any := len(t.lit), false
		lit:
			for w, word := range cur {
				for word != 0 {
					p := w*64 + bits.TrailingZeros64(word)
					word &= word - 1
					if p+l > n {
						break lit // positions only grow
					}
					if s[p:p+l] == t.lit {
						q := p + l
						next[q>>6] |= 1 << (q & 63)
						any = true
					}
				}
			}
			if !any {
				return false
			}
		case ruleTokSeg:
			// From p, one segment reaches p+1 .. the next '/' (or the end).
			segEnd, any := -1, false
			for w, word := range cur {
				for word != 0 {
					p := w*64 + bits.TrailingZeros64(word)
					word &= word - 1
					if p >= n || s[p] == '/' || p < segEnd {
						continue // no byte to take, or already covered
					}
					q := strings.IndexByte(s[p:], '/')
					if q < 0 {
						q = n
					} else {
						q += p
					}
					setRuleBits(next, p+1, q)
					segEnd, any = q, true
				}
			}
			if !any {
				return false
			}
		case ruleTokAny:
			// From the first reachable position, everything after is reachable.
			first := -1
			for w, word := range cur {
				if word != 0 {
					first = w*64 + bits.TrailingZeros64(word)
					break
				}
			}
			if first < 0 {
				return false
			}
			setRuleBits(next, first, n)
		}
		cur, next = next, cur
	}
	return cur[n>>6]&(1<<(n&63)) != 0
}

// setRuleBits sets bits lo..hi inclusive (lo <= hi).
func setRuleBits(bs []uint64, lo, hi int) {
	lw, hw := lo>>6, hi>>6
	lm := ^uint64(0) << (lo & 63)
	hm := ^uint64(0) >> (63 - hi&63)
	if lw == hw {
		bs[lw] |= lm & hm
		return
	}
	bs[lw] |= lm
	for w := lw + 1; w < hw; w++ {
		bs[w] = ^uint64(0)
	}
	bs[hw] |= hm
}

// RuleSet is the set of access rules a credential (and its sessions)
// carries. A nil *RuleSet means no rules: unrestricted by rules (roles still
// apply). A non-nil RuleSet with no rules allows nothing.
type RuleSet struct {
	rules   []*CompiledRule
	reasons []string // the "matched rule ..." reason of each rule, built once
}

// CompileRules compiles the rules of a credential. rs == nil gives a nil
// set (unrestricted); a non-nil empty rs gives a set that allows nothing.
// An error names the index of the first invalid rule.
func CompileRules(rs []AccessRule) (*RuleSet, error) {
	if rs == nil {
		return nil, nil
	}
	s := &RuleSet{rules: make([]*CompiledRule, len(rs)), reasons: make([]string, len(rs))}
	for i, r := range rs {
		c, err := CompileRule(r)
		if err != nil {
			return nil, invalidRule("access_rules[%d]: %s", i, MessageOf(err))
		}
		s.rules[i] = c
		if r.ID != "" {
			s.reasons[i] = "matched rule " + ruleReasonValue(r.ID)
		} else {
			s.reasons[i] = "matched rule #" + strconv.Itoa(i)
		}
	}
	return s, nil
}

// Unrestricted reports whether s carries no rules at all (s is nil), so
// that only roles restrict the credential.
func (s *RuleSet) Unrestricted() bool { return s == nil }

// Len returns the number of rules in s (0 for nil).
func (s *RuleSet) Len() int {
	if s == nil {
		return 0
	}
	return len(s.rules)
}

// Rules returns the rules of s in order: nil for a nil set, a non-nil empty
// slice for a deny-all set, so that a JSON round trip keeps the difference
// (null versus []).
func (s *RuleSet) Rules() []AccessRule {
	if s == nil {
		return nil
	}
	out := make([]AccessRule, len(s.rules))
	for i, c := range s.rules {
		out[i] = c.rule
	}
	return out
}

// Allows reports whether a request for service, method and the raw path is
// allowed by s, with a short human reason:
//
//	"no access rules"                 s is nil
//	"matched rule <id>"               the first matching rule has an id
//	"matched rule #<i>"               ... or else its 0-based index
//	"no rule matches GET /x on svc"   nothing matched (or s is empty)
//
// The reason quotes request values that are not plain printable text.
func (s *RuleSet) Allows(service, method, path string) (bool, string) {
	if s == nil {
		return true, "no access rules"
	}
	for i, c := range s.rules {
		if c.Match(service, method, path) {
			return true, s.reasons[i]
		}
	}
	return false, "no rule matches " + ruleReasonValue(method) + " " + ruleReasonValue(path) + " on " + ruleReasonValue(service)
}

// maxRuleReasonValue bounds how much of one request value a reason repeats.
const maxRuleReasonValue = 200

// ruleReasonValue renders a caller-supplied value for a reason: as is when it is
// short printable text without spaces, else Go-quoted; cut when long.
func ruleReasonValue(v string) string {
	if v != "" && len(v) <= maxRuleReasonValue && rulePlainASCII(v) {
		return v
	}
	cut := false
	if len(v) > maxRuleReasonValue {
		v, cut = strings.ToValidUTF8(v[:maxRuleReasonValue], ""), true
	}
	plain := v != "" && utf8.ValidString(v) && !strings.ContainsFunc(v, func(r rune) bool {
		return !unicode.IsPrint(r) || r == ' ' || r == '"'
	})
	if !plain {
		v = strconv.Quote(v)
	}
	if cut {
		v += "..."
	}
	return v
}

// rulePlainASCII reports whether v is only printable ASCII other than space and
// '"'.
func rulePlainASCII(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c >= 0x7f || c == '"' {
			return false
		}
	}
	return true
}
