package policy

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"cel.dev/cel-go/cel"
	"cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/cost"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/ext"
)

// Request is what is asked: a call of a service (coffer's own API is
// service "coffer").
type Request struct {
	Service string    `cel:"service"`
	Method  string    `cel:"method"`
	Path    string    `cel:"path"`
	Time    time.Time `cel:"time"`
}

// Subject is who asks, as the daemon resolved it.
type Subject struct {
	User           string   `cel:"user"` // name
	UserID         string   `cel:"user_id"`
	UserKind       string   `cel:"user_kind"` // human or workload
	Project        string   `cel:"project"`   // name
	ProjectID      string   `cel:"project_id"`
	Roles          []string `cel:"roles"`
	CredentialID   string   `cel:"credential_id"`
	CredentialName string   `cel:"credential_name"`
	TokenKind      string   `cel:"token_kind"`   // login, access-token, oauth2; "" without a token
	SessionType    string   `cel:"session_type"` // client or clientless; "" without a token
	Policies       []string `cel:"policies"`     // names of the policies that apply
}

// Peer is the connection the request came on, as the kernel told it.
type Peer struct {
	Channel string `cel:"channel"` // unix, vsock, hybrid-vsock, loadcredential
	UID     int64  `cel:"uid"`     // -1 when the channel carries none
	GID     int64  `cel:"gid"`     // -1 likewise
	CID     int64  `cel:"cid"`     // vsock context id; -1 elsewhere
	VM      string `cel:"vm"`      // hybrid vsock VM name
	Unit    string `cel:"unit"`    // the systemd unit asking on the LoadCredential= socket
}

// Input is everything a condition may look at.
type Input struct {
	Request Request
	Subject Subject
	Peer    Peer
}

// Cost bounds: a condition whose estimated cost (strings of at most
// maxStringSize bytes, lists of at most maxListSize items) is over
// MaxCost is refused when saved, and an evaluation is stopped past it.
const (
	MaxCost       = 1000
	maxStringSize = 4096
	maxListSize   = 64
)

// Options configure a Compiler.
type Options struct {
	// PathPattern compiles a path pattern in the access rules' syntax
	// (`*`, `{name}`, `**`) into a matcher; the daemon supplies it, so
	// that one syntax means the same in both places.
	PathPattern func(pattern string) (func(path string) bool, error)
}

// Compiler compiles conditions in coffer's CEL environment. It is safe for
// concurrent use.
type Compiler struct {
	env      *cel.Env
	patterns sync.Map // pattern -> func(string) bool, or error
	nPattern int      // entries in patterns, bounded (guarded by pmu)
	pmu      sync.Mutex
	opts     Options
}

// maxPatterns bounds the compiled path patterns kept (patterns are
// literals of saved policies; one computed at run time is compiled each
// time past the bound).
const maxPatterns = 4096

// NewCompiler builds the CEL environment.
func NewCompiler(opts Options) (*Compiler, error) {
	if opts.PathPattern == nil {
		return nil, fmt.Errorf("policy: no path pattern compiler")
	}
	c := &Compiler{opts: opts}
	env, err := cel.NewEnv(
		ext.NativeTypes(reflect.TypeFor[Request](), reflect.TypeFor[Subject](), reflect.TypeFor[Peer](), ext.ParseStructTags(true)),
		cel.Variable("request", cel.ObjectType("policy.Request")),
		cel.Variable("subject", cel.ObjectType("policy.Subject")),
		cel.Variable("peer", cel.ObjectType("policy.Peer")),
		cel.Function("matchesPath",
			cel.MemberOverload("string_matches_path", []*cel.Type{cel.StringType, cel.StringType}, cel.BoolType,
				cel.BinaryBinding(c.matchesPath))),
		cel.Function("timeOfDayBetween",
			cel.Overload("time_of_day_between", []*cel.Type{cel.TimestampType, cel.StringType, cel.StringType, cel.StringType}, cel.BoolType,
				cel.FunctionBinding(timeOfDayBetween))),
		cel.Function("weekday",
			cel.Overload("weekday_in_zone", []*cel.Type{cel.TimestampType, cel.StringType}, cel.StringType,
				cel.BinaryBinding(weekday))),
	)
	if err != nil {
		return nil, fmt.Errorf("policy: CEL environment: %w", err)
	}
	c.env = env
	return c, nil
}

// Policy is a compiled policy, ready to evaluate.
type Policy struct {
	Name    string
	rules   []rule
	allow   bool          // has at least one allow rule
	adapter types.Adapter // makes the input CEL values
}

// rule is one compiled condition, twice: fast runs without a cost
// tracker, for inputs within the bounds the cost was estimated for (the
// estimate is then an upper bound of the actual cost, so tracking it is
// pure overhead); limited stops at MaxCost, for inputs past them.
type rule struct {
	deny    bool
	fast    cel.Program
	limited cel.Program
}

// Compile type-checks and compiles every condition of d. Its errors are
// *Error, naming the rule and where in its condition the problem is.
func (c *Compiler) Compile(name string, d Document) (*Policy, error) {
	if err := d.Check(); err != nil {
		return nil, err
	}
	p := &Policy{Name: name, adapter: c.env.CELTypeAdapter()}
	for i, r := range d.Rules {
		fast, limited, err := c.compileCondition(i+1, r.Condition)
		if err != nil {
			return nil, err
		}
		p.rules = append(p.rules, rule{deny: r.Effect == Deny, fast: fast, limited: limited})
		p.allow = p.allow || r.Effect == Allow
	}
	return p, nil
}

func (c *Compiler) compileCondition(n int, cond string) (fast, limited cel.Program, err error) {
	checked, iss := c.env.Compile(cond)
	if iss != nil && iss.Err() != nil {
		e := &Error{Rule: n, Reason: "the condition does not compile"}
		if errs := iss.Errors(); len(errs) > 0 {
			e.Reason = errs[0].Message
			if loc := errs[0].Location; loc != nil && loc.Line() > 0 {
				e.Line, e.Column = loc.Line(), loc.Column()+1
			}
		}
		return nil, nil, e
	}
	if !checked.OutputType().IsExactType(types.BoolType) {
		return nil, nil, invalid(n, "the condition is of type %s, not bool", checked.OutputType())
	}
	if err := c.checkPatterns(n, checked); err != nil {
		return nil, nil, err
	}
	est, err := c.env.EstimateCost(checked, sizeBound{})
	if err != nil {
		return nil, nil, invalid(n, "cannot estimate the condition's cost: %v", err)
	}
	if est.Max > MaxCost {
		return nil, nil, invalid(n, "the condition may cost up to %d, over the limit of %d: make it simpler", est.Max, MaxCost)
	}
	if fast, err = c.env.Program(checked, cel.EvalOptions(cel.OptOptimize)); err == nil {
		limited, err = c.env.Program(checked, cel.CostLimit(MaxCost), cel.EvalOptions(cel.OptOptimize))
	}
	if err != nil {
		return nil, nil, invalid(n, "the condition does not compile: %v", err)
	}
	return fast, limited, nil
}

// checkPatterns compiles the literal patterns given to matchesPath, so a
// bad one is refused when the policy is saved.
func (c *Compiler) checkPatterns(n int, checked *cel.Ast) error {
	for _, e := range ast.MatchDescendants(ast.NavigateAST(checked.NativeRep()), ast.FunctionMatcher("matchesPath")) {
		args := e.AsCall().Args()
		if len(args) != 1 || args[0].Kind() != ast.LiteralKind {
			continue
		}
		s, ok := args[0].AsLiteral().(types.String)
		if !ok {
			continue
		}
		if _, err := c.opts.PathPattern(string(s)); err != nil {
			return invalid(n, "path pattern %q: %v", string(s), err)
		}
	}
	return nil
}

// sizeBound tells the cost estimator how large inputs may be.
type sizeBound struct{}

func (sizeBound) EstimateSize(n cost.AstNode) *cost.SizeEstimate {
	switch n.Type().Kind() {
	case types.StringKind, types.BytesKind:
		return &cost.SizeEstimate{Min: 0, Max: maxStringSize}
	case types.ListKind:
		return &cost.SizeEstimate{Min: 0, Max: maxListSize}
	}
	return nil
}

func (sizeBound) EstimateCallCost(function, overloadID string, target *cost.AstNode, args []cost.AstNode) *cost.CallEstimate {
	switch overloadID {
	case "string_matches_path":
		return cost.NewCallEstimate(cost.Estimate{Min: 1, Max: maxStringSize / 64}, nil)
	case "time_of_day_between", "weekday_in_zone":
		return cost.NewCallEstimate(cost.Estimate{Min: 1, Max: 4}, nil)
	}
	return nil
}

// matchesPath is path.matchesPath(pattern).
func (c *Compiler) matchesPath(path, pattern ref.Val) ref.Val {
	p, ok1 := path.(types.String)
	pat, ok2 := pattern.(types.String)
	if !ok1 || !ok2 {
		return types.MaybeNoSuchOverloadErr(path)
	}
	m, err := c.pattern(string(pat))
	if err != nil {
		return types.NewErr("path pattern: %v", err)
	}
	return types.Bool(m(string(p)))
}

func (c *Compiler) pattern(s string) (func(string) bool, error) {
	if v, ok := c.patterns.Load(s); ok {
		if m, ok := v.(func(string) bool); ok {
			return m, nil
		}
		return nil, v.(error)
	}
	m, err := c.opts.PathPattern(s)
	c.pmu.Lock()
	if c.nPattern < maxPatterns {
		c.nPattern++
		if err != nil {
			c.patterns.Store(s, err)
		} else {
			c.patterns.Store(s, m)
		}
	}
	c.pmu.Unlock()
	return m, err
}

// zones caches loaded time zones (few: those named by policies).
var zones sync.Map

func zone(name string) (*time.Location, error) {
	if v, ok := zones.Load(name); ok {
		return v.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, err
	}
	zones.Store(name, loc)
	return loc, nil
}

// timeOfDayBetween is timeOfDayBetween(t, "09:00", "17:30", "Europe/Paris"):
// whether t's time of day in that zone is at or after from and before to
// (to before from spans midnight).
func timeOfDayBetween(args ...ref.Val) ref.Val {
	if len(args) != 4 {
		return types.NewErr("timeOfDayBetween takes a time, two HH:MM and a time zone")
	}
	t, ok := args[0].Value().(time.Time)
	from, ok1 := args[1].(types.String)
	to, ok2 := args[2].(types.String)
	tz, ok3 := args[3].(types.String)
	if !ok || !ok1 || !ok2 || !ok3 {
		return types.NewErr("timeOfDayBetween takes a time, two HH:MM and a time zone")
	}
	loc, err := zone(string(tz))
	if err != nil {
		return types.NewErr("time zone %q: %v", string(tz), err)
	}
	f, err1 := minuteOfDay(string(from))
	u, err2 := minuteOfDay(string(to))
	if err1 != nil || err2 != nil {
		return types.NewErr("timeOfDayBetween: times are HH:MM (00:00 to 24:00)")
	}
	lt := t.In(loc)
	m := lt.Hour()*60 + lt.Minute()
	if f <= u {
		return types.Bool(m >= f && m < u)
	}
	return types.Bool(m >= f || m < u)
}

var errNotHHMM = errors.New("not HH:MM")

// minuteOfDay reads "HH:MM" (00:00 to 24:00) as minutes since midnight.
func minuteOfDay(s string) (int, error) {
	if len(s) != 5 || s[2] != ':' {
		return 0, errNotHHMM
	}
	digit := func(b byte) (int, bool) { return int(b - '0'), b >= '0' && b <= '9' }
	h1, ok1 := digit(s[0])
	h2, ok2 := digit(s[1])
	m1, ok3 := digit(s[3])
	m2, ok4 := digit(s[4])
	hh, mm := h1*10+h2, m1*10+m2
	if !ok1 || !ok2 || !ok3 || !ok4 || hh > 24 || mm > 59 || (hh == 24 && mm != 0) {
		return 0, errNotHHMM
	}
	return hh*60 + mm, nil
}

// weekday is weekday(t, "Europe/Paris"): "monday" to "sunday".
func weekday(t, tz ref.Val) ref.Val {
	tv, ok := t.Value().(time.Time)
	z, ok2 := tz.(types.String)
	if !ok || !ok2 {
		return types.NewErr("weekday takes a time and a time zone")
	}
	loc, err := zone(string(z))
	if err != nil {
		return types.NewErr("time zone %q: %v", string(z), err)
	}
	return types.String(strings.ToLower(tv.In(loc).Weekday().String()))
}
