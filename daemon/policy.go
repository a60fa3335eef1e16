package daemon

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/policy"
)

// Policies narrow what roles and access rules allow (package policy
// evaluates them). A policy belongs to a project, or is global (made by a
// system admin). It applies to a request when it is attached to:
//   - the credential whose session makes the request (copied to the
//     session; or written inline on the credential),
//   - the request's user (a project policy only to the user's requests in
//     its project),
//   - the request's project.
//
// Attachments hold policy ids (resolved from names when attached), so a
// policy in use cannot be deleted (409) and a name always means the policy
// it meant when attached.

const (
	tablePolicies = "policies"
	indexPolicy   = "policy"
	// globalScope is the project part of a global policy's name index.
	globalScope = "*"

	CodeInvalidPolicy = "invalid_policy"
	CodePolicyInUse   = "policy_in_use"

	maxAttached = 32
)

type policyRecord struct {
	ID          string        `json:"id"`
	ProjectID   string        `json:"project_id,omitempty"` // "" for a global policy
	Name        string        `json:"name"`
	Description string        `json:"description,omitempty"`
	Rules       []policy.Rule `json:"rules"`
	CreatedAt   time.Time     `json:"created_at"`
	UpdatedAt   time.Time     `json:"updated_at"`
}

func policyScope(projectID string) string {
	if projectID == "" {
		return globalScope
	}
	return projectID
}

func (r policyRecord) indexes() []kv.Index {
	return []kv.Index{
		{Name: indexProjectName, Value: policyScope(r.ProjectID) + "/" + r.Name, Unique: true},
		{Name: indexProject, Value: policyScope(r.ProjectID)},
	}
}

func (r policyRecord) document() policy.Document {
	return policy.Document{Description: r.Description, Rules: r.Rules}
}

// Policy is the projection of a policy.
type Policy struct {
	ID          string
	Name        string
	ProjectID   string // "" for a global policy
	Project     string
	Description string
	Rules       []policy.Rule
	CreatedAt   time.Time
	UpdatedAt   time.Time
	// UsedBy counts and names (ids, at most 100 each) what it is
	// attached to: where to look before deleting it.
	UsedBy PolicyUse
}

// PolicyUse is what a policy is attached to.
type PolicyUse struct {
	Credentials []string
	Users       []string
	Projects    []string
}

func (u PolicyUse) total() int { return len(u.Credentials) + len(u.Users) + len(u.Projects) }

// policyCompiler makes the daemon's CEL environment, with the access
// rules' path syntax for matchesPath.
func newPolicyCompiler() (*policy.Compiler, error) {
	return policy.NewCompiler(policy.Options{PathPattern: func(pattern string) (func(string) bool, error) {
		c, err := CompileRule(AccessRule{Service: "policy", Method: "GET", Path: pattern})
		if err != nil {
			return nil, errors.New(strings.TrimPrefix(MessageOf(err), "invalid access rule: "))
		}
		return c.matchPath, nil
	}})
}

// CheckPolicy compiles a document as the daemon would when it is saved
// (coffer policy check), and says what is wrong with it.
func CheckPolicy(d policy.Document) error {
	c, err := newPolicyCompiler()
	if err != nil {
		return err
	}
	_, err = (&Service{policyCompiler: c}).compilePolicy("document", d)
	return err
}

// compilePolicy compiles a document, turning its errors into 400
// invalid_policy naming the rule and the position.
func (s *Service) compilePolicy(name string, d policy.Document) (*policy.Policy, error) {
	p, err := s.policyCompiler.Compile(name, d)
	if err != nil {
		var pe *policy.Error
		if errors.As(err, &pe) {
			return nil, Invalid(CodeInvalidPolicy, "policy %s: %s", name, pe.Error())
		}
		return nil, Invalid(CodeInvalidPolicy, "policy %s: %v", name, err)
	}
	return p, nil
}

// PolicyInput creates or replaces a policy.
type PolicyInput struct {
	Name     string
	Document policy.Document
}

// policyGrant says in which scope the grant acts on policies: its project,
// or the global scope for ActManagePolicies/ActReadPolicies without one.
func (g Grant) policyProject() string { return g.project.ID }

// CreatePolicy saves a new policy in the grant's project (or, for a
// system admin's grant without a project, a global one).
func (s *Service) CreatePolicy(ctx context.Context, g Grant, in PolicyInput) (Policy, error) {
	return s.putPolicy(ctx, g, in, true)
}

// UpdatePolicy replaces the description and rules of a policy.
func (s *Service) UpdatePolicy(ctx context.Context, g Grant, in PolicyInput) (Policy, error) {
	return s.putPolicy(ctx, g, in, false)
}

func (s *Service) putPolicy(ctx context.Context, g Grant, in PolicyInput, create bool) (Policy, error) {
	if err := g.require(ActManagePolicies); err != nil {
		return Policy{}, err
	}
	if err := checkName("policy", in.Name); err != nil {
		return Policy{}, err
	}
	if _, err := s.compilePolicy(in.Name, in.Document); err != nil {
		return Policy{}, err
	}
	action := "policy.update"
	if create {
		action = "policy.create"
	}
	now := s.now()
	var out Policy
	err := s.update(ctx, g.principal, action, func(tx *kv.Txn, c *change) error {
		rec, err := findPolicy(tx, g.policyProject(), in.Name, false)
		switch {
		case create && err == nil:
			return newErr(ErrAlreadyExists, CodeAlreadyExists, "policy %s already exists", in.Name)
		case create && errors.Is(err, ErrNotFound):
			rec = policyRecord{ID: newID(), ProjectID: g.policyProject(), Name: in.Name, CreatedAt: now}
		case err != nil:
			return err
		}
		c.set("policy", rec.ID, "project", rec.ProjectID)
		rec.Description, rec.Rules, rec.UpdatedAt = in.Document.Description, in.Document.Rules, now
		if err := tx.Put(tablePolicies, rec.ID, rec, rec.indexes()...); err != nil {
			return err
		}
		out, err = s.policyView(tx, rec, g.project.Name)
		if rec.ProjectID == "" && !g.admin {
			// What a global policy is attached to spans every tenant:
			// only a system admin sees it.
			out.UsedBy = PolicyUse{}
		}
		return err
	})
	return out, storeErr(err)
}

// GetPolicy returns a policy of the grant's project (or a global one).
func (s *Service) GetPolicy(ctx context.Context, g Grant, name string) (Policy, error) {
	if g.action != ActReadPolicies && g.action != ActManagePolicies {
		return Policy{}, Forbidden("not authorized to %s", ActReadPolicies)
	}
	var out Policy
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		rec, err := findPolicy(tx, g.policyProject(), name, false)
		if err != nil {
			return err
		}
		out, err = s.policyView(tx, rec, g.project.Name)
		if rec.ProjectID == "" && !g.admin {
			// What a global policy is attached to spans every tenant:
			// only a system admin sees it.
			out.UsedBy = PolicyUse{}
		}
		return err
	})
	return out, storeErr(err)
}

// ListPolicies lists the policies of the grant's project (or the global
// ones), by name.
func (s *Service) ListPolicies(ctx context.Context, g Grant) ([]Policy, error) {
	if g.action != ActReadPolicies && g.action != ActManagePolicies {
		return nil, Forbidden("not authorized to %s", ActReadPolicies)
	}
	var out []Policy
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tablePolicies, kv.Query{Index: indexProject, Value: policyScope(g.policyProject())}, func(_ string, decode func(any) error) error {
			var rec policyRecord
			if err := decode(&rec); err != nil {
				return err
			}
			out = append(out, Policy{ID: rec.ID, Name: rec.Name, ProjectID: rec.ProjectID, Project: g.project.Name,
				Description: rec.Description, Rules: rec.Rules, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt})
			return nil
		})
	})
	slices.SortFunc(out, func(a, b Policy) int { return strings.Compare(a.Name, b.Name) })
	return out, storeErr(err)
}

// DeletePolicy deletes a policy that nothing is attached to; one in use is
// 409 policy_in_use, naming what uses it (GetPolicy lists them).
func (s *Service) DeletePolicy(ctx context.Context, g Grant, name string) error {
	if err := g.require(ActManagePolicies); err != nil {
		return err
	}
	err := s.update(ctx, g.principal, "policy.delete", func(tx *kv.Txn, c *change) error {
		rec, err := findPolicy(tx, g.policyProject(), name, false)
		if err != nil {
			return err
		}
		c.set("policy", rec.ID, "project", rec.ProjectID)
		use, err := policyUse(tx, rec.ID)
		if err != nil {
			return err
		}
		if use.total() > 0 {
			return Conflict(CodePolicyInUse, "policy %s is attached to %d credentials, %d users and %d projects: detach it first (coffer policy get %s lists them)",
				name, len(use.Credentials), len(use.Users), len(use.Projects), name)
		}
		return tx.Delete(tablePolicies, rec.ID)
	})
	return storeErr(err)
}

func (s *Service) policyView(tx *kv.Txn, rec policyRecord, project string) (Policy, error) {
	use, err := policyUse(tx, rec.ID)
	if err != nil {
		return Policy{}, err
	}
	return Policy{ID: rec.ID, Name: rec.Name, ProjectID: rec.ProjectID, Project: project, Description: rec.Description,
		Rules: rec.Rules, CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, UsedBy: use}, nil
}

// policyUse lists (at most 100 of each) what policy id is attached to.
func policyUse(tx *kv.Txn, id string) (PolicyUse, error) {
	var use PolicyUse
	for _, t := range []struct {
		table string
		out   *[]string
	}{{tableCredentials, &use.Credentials}, {tableUsers, &use.Users}, {tableProjects, &use.Projects}} {
		err := tx.List(t.table, kv.Query{Index: indexPolicy, Value: id, Limit: 100}, func(rid string, _ func(any) error) error {
			*t.out = append(*t.out, rid)
			return nil
		})
		if err != nil {
			return use, err
		}
	}
	return use, nil
}

// findPolicy finds the policy name in projectID's scope ("" global); with
// fallback, a name not in the project is looked up among the global ones.
func findPolicy(tx *kv.Txn, projectID, name string, fallback bool) (policyRecord, error) {
	var rec policyRecord
	if !validName(name) {
		return rec, NotFound("policy %q not found", name)
	}
	id, err := tx.LookupUnique(tablePolicies, indexProjectName, policyScope(projectID)+"/"+name)
	if errors.Is(err, kv.ErrNotFound) && fallback && projectID != "" {
		id, err = tx.LookupUnique(tablePolicies, indexProjectName, globalScope+"/"+name)
	}
	if errors.Is(err, kv.ErrNotFound) {
		return rec, NotFound("policy %q not found", name)
	}
	if err != nil {
		return rec, err
	}
	if err := tx.Get(tablePolicies, id, &rec); err != nil {
		return rec, notFoundAs(err, "policy %q not found", name)
	}
	return rec, nil
}

// resolvePolicies turns names into policy ids for an attachment in
// projectID's scope (a project's own policy, else a global one); unknown
// names are 400 invalid_policy.
func resolvePolicies(tx *kv.Txn, projectID string, names []string) ([]string, error) {
	if len(names) > maxAttached {
		return nil, Invalid(CodeInvalidPolicy, "at most %d policies", maxAttached)
	}
	var ids []string
	for _, n := range names {
		rec, err := findPolicy(tx, projectID, n, true)
		if errors.Is(err, ErrNotFound) {
			return nil, Invalid(CodeInvalidPolicy, "no policy named %q here (policies are per project, or global)", n)
		}
		if err != nil {
			return nil, err
		}
		ids = append(ids, rec.ID)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// userPolicyRef is how a user names the policies attached to it: a global
// policy by its name, a project's as PROJECT/NAME.
func resolveUserPolicies(s *Service, tx *kv.Txn, refs []string) ([]string, error) {
	if len(refs) > maxAttached {
		return nil, Invalid(CodeInvalidPolicy, "at most %d policies", maxAttached)
	}
	var ids []string
	for _, ref := range refs {
		proj, name, scoped := strings.Cut(ref, "/")
		projectID := ""
		if scoped {
			p, err := s.findProjectIn(tx, proj)
			if errors.Is(err, ErrNotFound) {
				return nil, Invalid(CodeInvalidPolicy, "policy %q: no project %q", ref, proj)
			}
			if err != nil {
				return nil, err
			}
			projectID = p.ID
		} else {
			name = proj
		}
		rec, err := findPolicy(tx, projectID, name, false)
		if errors.Is(err, ErrNotFound) {
			return nil, Invalid(CodeInvalidPolicy, "no policy %q (a global policy by name, a project's as PROJECT/NAME)", ref)
		}
		if err != nil {
			return nil, err
		}
		ids = append(ids, rec.ID)
	}
	slices.Sort(ids)
	return slices.Compact(ids), nil
}

// policyIndexes are the index entries of a record's attached policies.
func policyIndexes(ids []string) []kv.Index {
	ix := make([]kv.Index, 0, len(ids))
	for _, id := range ids {
		ix = append(ix, kv.Index{Name: indexPolicy, Value: id})
	}
	return ix
}

// compiledPolicies keeps compiled policies by id, each used while the
// policies generation it was read at is current (every commit that
// replaces or deletes a policy bumps it: caches.go), and inline policies
// by the hash of their document.
type compiledPolicies struct {
	mu     sync.RWMutex
	byID   map[string]compiledEntry
	inline map[[32]byte]*policy.Policy
}

type compiledEntry struct {
	p         *policy.Policy
	projectID string
	gen       uint64
}

const compiledPoliciesSize = 4096

// compiled returns policy id compiled, reading it when not cached at gen.
// A policy gone (deleted meanwhile) is nil.
func (s *Service) compiled(tx *kv.Txn, id string, gen uint64) (*policy.Policy, string, error) {
	c := &s.policies
	c.mu.RLock()
	e, ok := c.byID[id]
	c.mu.RUnlock()
	if ok && e.gen == gen {
		return e.p, e.projectID, nil
	}
	if tx == nil {
		return nil, "", errPolicyMiss
	}
	var rec policyRecord
	if err := tx.Get(tablePolicies, id, &rec); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil, "", nil
		}
		return nil, "", err
	}
	p, err := s.policyCompiler.Compile(rec.Name, rec.document())
	if err != nil {
		// Saved policies compiled when saved: only a changed
		// environment gets here. Fail closed: a policy that denies.
		s.log.Error("a saved policy does not compile; it denies until fixed", "policy", rec.ID, "err", err)
		p = s.denyAll(rec.Name)
	}
	c.mu.Lock()
	if c.byID == nil || len(c.byID) >= compiledPoliciesSize {
		c.byID = make(map[string]compiledEntry)
	}
	c.byID[id] = compiledEntry{p: p, projectID: rec.ProjectID, gen: gen}
	c.mu.Unlock()
	return p, rec.ProjectID, nil
}

// compiledInline returns a credential's inline policy compiled. One that
// no longer compiles (only a changed environment gets there: it compiled
// when written) denies everything: fail closed.
func (s *Service) compiledInline(d policy.Document) *policy.Policy {
	b, _ := json.Marshal(d) // a Document always marshals
	k := sha256.Sum256(b)
	c := &s.policies
	c.mu.RLock()
	p, ok := c.inline[k]
	c.mu.RUnlock()
	if ok {
		return p
	}
	p, err := s.compilePolicy("inline", d)
	if err != nil {
		s.log.Error("a credential's inline policy does not compile; it denies until replaced", "err", err)
		p = s.denyAll("inline")
	}
	c.mu.Lock()
	if c.inline == nil || len(c.inline) >= compiledPoliciesSize {
		c.inline = make(map[[32]byte]*policy.Policy)
	}
	c.inline[k] = p
	c.mu.Unlock()
	return p
}

// denyAll is the policy that stands for one that cannot be compiled.
func (s *Service) denyAll(name string) *policy.Policy {
	p, err := s.policyCompiler.Compile(name, policy.Document{Rules: []policy.Rule{{Effect: policy.Deny, Condition: "true"}}})
	if err != nil {
		panic("policy: the deny-all policy does not compile: " + err.Error())
	}
	return p
}

// policyRequest is one decision's question.
type policyRequest struct {
	caller    caller
	principal Principal
	projectID string // the project the request acts in; "" none
	project   *projectRecord
	service   string
	method    string
	path      string
	unit      string // LoadCredential=: the unit asking
}

// errPolicyMiss: decidePolicies without a transaction found a policy
// not compiled at the current generation.
var errPolicyMiss = errors.New("policy not cached")

// decidePolicies gathers the policies that apply to q and decides.
// System admins (not users) are not subject to policies. gen is the
// policies generation loaded before tx began. With tx nil it reads
// nothing: a policy not cached at gen is errPolicyMiss (then call again
// in a transaction).
func (s *Service) decidePolicies(tx *kv.Txn, q policyRequest, gen uint64, explain bool) (policy.Decision, error) {
	ids, inline := s.attachedPolicies(q)
	if len(ids) == 0 && len(inline) == 0 {
		return policy.Decision{Allowed: true}, nil
	}
	n := len(ids) + len(inline)
	ps := make([]*policy.Policy, 0, n)
	names := make([]string, 0, n)
	for _, id := range ids {
		p, scope, err := s.compiled(tx, id, gen)
		if err != nil {
			return policy.Decision{}, err
		}
		if p == nil || (scope != "" && scope != q.projectID) {
			continue // gone, or another project's (a user's policy applies in its project only)
		}
		ps = append(ps, p)
		names = append(names, p.Name)
	}
	for i, d := range inline {
		var p *policy.Policy
		if t := q.caller.token; t != nil && len(t.inline) == len(inline) {
			p = t.inline[i]
		} else {
			p = s.compiledInline(d)
		}
		ps = append(ps, p)
		names = append(names, "inline")
	}
	if len(ps) == 0 {
		return policy.Decision{Allowed: true}, nil
	}
	in := s.policyInput(q, names)
	d := policy.Decide(ps, &in, explain)
	d.Policies = names
	return d, nil
}

// attachedPolicies lists the policy ids attached to q's credential (as
// copied to its session), user and project, and the inline policy.
func (s *Service) attachedPolicies(q policyRequest) ([]string, []policy.Document) {
	var ids []string
	var inline []policy.Document
	if t := q.caller.token; t != nil {
		ids = append(ids, t.PolicyIDs...)
		inline = t.InlinePolicies
	}
	if u := q.caller.user; u != nil {
		ids = append(ids, u.PolicyIDs...)
	}
	if q.project != nil {
		ids = append(ids, q.project.PolicyIDs...)
	}
	if len(ids) > 1 {
		slices.Sort(ids)
		ids = slices.Compact(ids)
	}
	return ids, inline
}

func (s *Service) policyInput(q policyRequest, names []string) policy.Input {
	in := policy.Input{
		Request: policy.Request{Service: q.service, Method: q.method, Path: q.path, Time: s.now()},
		Peer:    policy.Peer{Channel: string(q.principal.Channel), UID: -1, GID: -1, CID: -1, VM: q.principal.VM, Unit: q.unit},
	}
	in.Subject.Policies = names
	if q.principal.HasCred {
		in.Peer.UID, in.Peer.GID = int64(q.principal.UID), int64(q.principal.GID)
	}
	if q.principal.Channel == ChannelVsock {
		in.Peer.CID = int64(q.principal.CID)
	}
	if u := q.caller.user; u != nil {
		in.Subject.User, in.Subject.UserID, in.Subject.UserKind = u.Name, u.ID, u.Kind
	}
	if q.project != nil {
		in.Subject.Project, in.Subject.ProjectID = q.project.Name, q.project.ID
	}
	if t := q.caller.token; t != nil {
		in.Subject.Roles, in.Subject.CredentialID, in.Subject.TokenKind = t.Roles, t.CredentialID, t.Kind
		in.Subject.SessionType, in.Subject.CredentialName = t.SessionType, t.CredentialName
	}
	return in
}

// policyDenied is the reason Authorize logs and records for a policy's
// refusal.
func policyDenied(d policy.Decision) string {
	if d.Policy != "" {
		return d.Reason
	}
	return "policies: " + d.Reason
}

// policiesAllow applies the policies of a granted request to coffer's own
// API (service "coffer"): it returns why they refuse, or "". A system
// admin is no user and has none.
func (s *Service) policiesAllow(tx *kv.Txn, g Grant, r Resource, gen uint64) (string, error) {
	if g.admin || g.user == nil {
		return "", nil
	}
	c := caller{user: g.user, token: g.token}
	q := policyRequest{caller: c, principal: g.principal, service: "coffer", method: r.Method, path: r.Path}
	switch {
	case g.project.ID != "":
		q.projectID, q.project = g.project.ID, &g.project
	case g.token != nil:
		proj, err := s.projectFor(tx, c, g.token.ProjectID)
		if errors.Is(err, ErrNotFound) {
			return "", nil // the token's project is gone: so is the token
		}
		if err != nil {
			return "", err
		}
		q.projectID, q.project = proj.ID, &proj
	}
	if ids, inline := s.attachedPolicies(q); len(ids) == 0 && len(inline) == 0 {
		return "", nil // the common case: nothing to evaluate
	}
	d, err := s.decidePolicies(tx, q, gen, false)
	if err != nil || d.Allowed {
		return "", err
	}
	return policyDenied(d), nil
}

// policyRefs names policy ids as an attachment shows them: a policy of
// project home by its name, any other project's as PROJECT/NAME, a global
// one by its name. A policy gone is left out.
func policyRefs(tx *kv.Txn, s *Service, ids []string, home string) ([]string, error) {
	var out []string
	for _, id := range ids {
		var rec policyRecord
		if err := tx.Get(tablePolicies, id, &rec); err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				continue
			}
			return nil, err
		}
		if rec.ProjectID == "" || rec.ProjectID == home {
			out = append(out, rec.Name)
			continue
		}
		var p projectRecord
		if err := tx.Get(tableProjects, rec.ProjectID, &p); err != nil {
			return nil, ignoreNotFound(err)
		}
		out = append(out, p.Name+"/"+rec.Name)
	}
	slices.Sort(out)
	return out, nil
}

// SetProjectPolicies attaches policies (the project's own, or global ones,
// by name) to every request in the grant's project, replacing those it
// had. An empty list detaches them all.
func (s *Service) SetProjectPolicies(ctx context.Context, g Grant, names []string) (Project, error) {
	if err := g.require(ActManagePolicies); err != nil {
		return Project{}, err
	}
	if g.project.ID == "" {
		return Project{}, Invalid(CodeInvalidPolicy, "policies are attached to a project")
	}
	var out Project
	err := s.update(ctx, g.principal, "project.policies", func(tx *kv.Txn, c *change) error {
		c.set("project", g.project.ID)
		var p projectRecord
		if err := tx.Get(tableProjects, g.project.ID, &p); err != nil {
			return notFoundAs(err, "project %s not found", g.project.Name)
		}
		ids, err := resolvePolicies(tx, p.ID, names)
		if err != nil {
			return err
		}
		p.PolicyIDs = ids
		if err := tx.Put(tableProjects, p.ID, p, p.indexes()...); err != nil {
			return err
		}
		out = p.view()
		out.Policies, err = policyRefs(tx, s, p.PolicyIDs, p.ID)
		return err
	})
	return out, storeErr(err)
}

// deliveryPolicies applies the policies of a delivery: the caller's (its
// credential's, its user's) and the secret's project's; for a
// LoadCredential= request (no user), the project's, with the unit as the
// peer. It returns why they refuse, or "". Generations are loaded before
// tx began.
func (s *Service) deliveryPolicies(tx *kv.Txn, c caller, p Principal, projectID, unit, path string, idGen, polGen uint64) (string, error) {
	var proj projectRecord
	if err := s.getProject(tx, projectID, &proj, idGen); err != nil {
		return "", ignoreNotFound(err)
	}
	q := policyRequest{caller: c, principal: p, projectID: projectID, project: &proj, service: "coffer", method: "GET", path: path, unit: unit}
	if ids, inline := s.attachedPolicies(q); len(ids) == 0 && len(inline) == 0 {
		return "", nil
	}
	d, err := s.decidePolicies(tx, q, polGen, false)
	if err != nil || d.Allowed {
		return "", err
	}
	return policyDenied(d), nil
}
