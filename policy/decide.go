package policy

import (
	"fmt"

	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"
	"cel.dev/cel-go/interpreter"
)

// Decision is what the policies that apply to a request say.
type Decision struct {
	Allowed bool
	// Reason names the policy and the rule that decided (1-based), or why
	// none did.
	Reason string
	Policy string
	Rule   int
	// Matched lists every rule whose condition held, as "policy#rule"
	// (for explanations).
	Matched []string
	// Policies names the policies decided with, in order (filled by the
	// caller that gathered them).
	Policies []string
}

// Decide evaluates policies for in. Policies only narrow, and every
// policy on its own: a deny rule that holds refuses; a policy that has
// allow rules refuses unless one of them holds. With no policies, or none
// that refuses, the answer is allowed. (So attaching a policy can never
// let through what was refused without it: two policies of allow rules
// must each allow.) A condition that fails to evaluate (a bad time zone, a
// cost over the limit) counts as holding for a deny rule and not for an
// allow rule: an error never lets more through. With explain, every rule
// is evaluated and Matched lists those that held.
func Decide(policies []*Policy, in *Input, explain bool) Decision {
	if len(policies) == 0 {
		return Decision{Allowed: true}
	}
	act := &activation{in: in, adapter: policies[0].adapter, bounded: in.withinBounds()}
	var d Decision
	refused := false
	// Deny rules first: a deny that holds decides.
	for _, p := range policies {
		for i, r := range p.rules {
			if !r.deny || !eval(r, act) {
				continue
			}
			if explain {
				d.Matched = append(d.Matched, fmt.Sprintf("%s#%d", p.Name, i+1))
			}
			if !refused {
				refused = true
				d.Policy, d.Rule = p.Name, i+1
				d.Reason = fmt.Sprintf("policy %s rule %d denies", p.Name, i+1)
			}
			if !explain {
				return d
			}
		}
	}
	// Then each policy with allow rules must allow.
	allowBy, allowRule := "", 0
	for _, p := range policies {
		if !p.allow {
			continue
		}
		held := false
		for i, r := range p.rules {
			if r.deny || (held && !explain) || !eval(r, act) {
				continue
			}
			if explain {
				d.Matched = append(d.Matched, fmt.Sprintf("%s#%d", p.Name, i+1))
			}
			if !held {
				held, allowBy, allowRule = true, p.Name, i+1
			}
		}
		if !held && !refused {
			refused = true
			d.Policy, d.Rule = p.Name, 0
			d.Reason = fmt.Sprintf("policy %s: none of its allow rules holds", p.Name)
			if !explain {
				return d
			}
		}
	}
	if refused {
		return d
	}
	d.Allowed = true
	if allowBy == "" {
		d.Reason = "no policy rule denies"
	} else {
		d.Policy, d.Rule = allowBy, allowRule
		d.Reason = fmt.Sprintf("no policy rule denies; policy %s rule %d allows", allowBy, allowRule)
	}
	return d
}

func eval(r rule, act *activation) bool {
	prg := r.limited
	if act.bounded {
		prg = r.fast
	}
	out, _, err := prg.Eval(act)
	if err != nil {
		return r.deny
	}
	b, ok := out.(types.Bool)
	if !ok {
		return r.deny
	}
	return bool(b)
}

// activation hands the input to CEL without building a map per
// evaluation; each variable is made a CEL value once per decision, not
// once per rule.
type activation struct {
	in                  *Input
	adapter             types.Adapter
	bounded             bool
	request, subj, peer ref.Val
}

func (a *activation) ResolveName(name string) (any, bool) {
	switch name {
	case "request":
		if a.request == nil {
			a.request = a.adapter.NativeToValue(&a.in.Request)
		}
		return a.request, true
	case "subject":
		if a.subj == nil {
			a.subj = a.adapter.NativeToValue(&a.in.Subject)
		}
		return a.subj, true
	case "peer":
		if a.peer == nil {
			a.peer = a.adapter.NativeToValue(&a.in.Peer)
		}
		return a.peer, true
	}
	return nil, false
}

// withinBounds says whether every string and list of in is within the
// sizes the conditions' costs were estimated for.
func (in *Input) withinBounds() bool {
	for _, s := range []string{in.Request.Service, in.Request.Method, in.Request.Path,
		in.Subject.User, in.Subject.UserID, in.Subject.UserKind, in.Subject.Project, in.Subject.ProjectID,
		in.Subject.CredentialID, in.Subject.CredentialName, in.Subject.TokenKind, in.Subject.SessionType,
		in.Peer.Channel, in.Peer.VM, in.Peer.Unit} {
		if len(s) > maxStringSize {
			return false
		}
	}
	for _, l := range [][]string{in.Subject.Roles, in.Subject.Policies} {
		if len(l) > maxListSize {
			return false
		}
		for _, s := range l {
			if len(s) > maxStringSize {
				return false
			}
		}
	}
	return true
}

func (a *activation) Parent() interpreter.Activation { return nil }
