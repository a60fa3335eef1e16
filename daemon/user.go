package daemon

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableUsers = "users"
	indexUID   = "uid"
	indexCID   = "cid"
	indexVM    = "vm"

	// User kinds.
	UserHuman    = "human"
	UserWorkload = "workload"

	// DefaultAccessTokenTTL is the lifetime of sessions a user creates
	// unless its access_token_ttl says otherwise.
	DefaultAccessTokenTTL = time.Hour
	// MaxAccessTokenTTL bounds access_token_ttl.
	MaxAccessTokenTTL = 30 * 24 * time.Hour

	// Bindings per user are few; a bound keeps records small.
	maxBindings = 32
)

type userRecord struct {
	ID             string        `json:"id"`
	Name           string        `json:"name"`
	Kind           string        `json:"kind"`
	Disabled       bool          `json:"disabled,omitempty"`
	UnixUIDs       []uint32      `json:"unix_uids,omitempty"`
	VsockCIDs      []uint32      `json:"vsock_cids,omitempty"`
	VMNames        []string      `json:"vm_names,omitempty"`
	AccessTokenTTL time.Duration `json:"access_token_ttl"`
	CreatedAt      time.Time     `json:"created_at"`
	UpdatedAt      time.Time     `json:"updated_at"`
	// PolicyIDs are the policies that apply to every request of the user
	// (a project's policy, in that project only): policy.go.
	PolicyIDs []string `json:"policy_ids,omitempty"`
}

func (u userRecord) indexes() []kv.Index {
	ix := []kv.Index{{Name: indexName, Value: u.Name, Unique: true}}
	for _, uid := range u.UnixUIDs {
		ix = append(ix, kv.Index{Name: indexUID, Value: strconv.FormatUint(uint64(uid), 10), Unique: true})
	}
	for _, cid := range u.VsockCIDs {
		ix = append(ix, kv.Index{Name: indexCID, Value: strconv.FormatUint(uint64(cid), 10), Unique: true})
	}
	for _, vm := range u.VMNames {
		ix = append(ix, kv.Index{Name: indexVM, Value: vm, Unique: true})
	}
	return append(ix, policyIndexes(u.PolicyIDs)...)
}

// User is the projection of a user.
type User struct {
	ID             string
	Name           string
	Kind           string
	Disabled       bool
	UnixUIDs       []uint32
	VsockCIDs      []uint32
	VMNames        []string
	AccessTokenTTL time.Duration
	Roles          []ProjectRole
	Policies       []string // attached: global by name, a project's as PROJECT/NAME
	CreatedAt      time.Time
	UpdatedAt      time.Time
}

// UserInput creates a user.
type UserInput struct {
	Name           string
	Kind           string
	Disabled       bool
	UnixUIDs       []uint32
	VsockCIDs      []uint32
	VMNames        []string
	AccessTokenTTL time.Duration
	Policies       []string // a global policy by name, a project's as PROJECT/NAME
}

// UserPatch changes a user; nil fields stay as they are.
type UserPatch struct {
	Disabled       *bool
	UnixUIDs       *[]uint32
	VsockCIDs      *[]uint32
	VMNames        *[]string
	AccessTokenTTL *time.Duration
	Policies       *[]string
}

const CodeInvalidUser = "invalid_user"

func (s *Service) checkBindings(uids, cids []uint32, vms []string) error {
	if len(uids) > maxBindings || len(cids) > maxBindings || len(vms) > maxBindings {
		return Invalid(CodeInvalidUser, "at most %d unix uids, vsock cids and VM names each per user", maxBindings)
	}
	for _, vm := range vms {
		if !validName(vm) {
			return Invalid(CodeInvalidUser, "VM name %q: use 1-64 of a-z 0-9 . _ -", vm)
		}
	}
	if len(slices.Compact(slices.Sorted(slices.Values(vms)))) != len(vms) {
		return Invalid(CodeInvalidUser, "a VM name is listed twice")
	}
	for _, uid := range uids {
		if uid == 0 {
			return Invalid(CodeInvalidUser, "uid 0 is a system admin and cannot be bound to a user")
		}
	}
	for _, cid := range cids {
		// 0 (hypervisor), 1 (local loopback) and 2 (host) are not guests.
		if cid <= 2 && !s.cfg.AllowReservedCIDs {
			return Invalid(CodeInvalidUser, "vsock cid %d is reserved (0 hypervisor, 1 loopback, 2 host) and cannot name a guest", cid)
		}
		if cid == 0xFFFFFFFF {
			return Invalid(CodeInvalidUser, "vsock cid %d is VMADDR_CID_ANY", cid)
		}
	}
	if hasDup(uids) || hasDup(cids) {
		return Invalid(CodeInvalidUser, "a uid or cid is listed twice")
	}
	return nil
}

func hasDup(xs []uint32) bool {
	c := slices.Clone(xs)
	slices.Sort(c)
	return len(slices.Compact(c)) != len(xs)
}

func checkTTL(d time.Duration) error {
	if d < time.Minute || d > MaxAccessTokenTTL {
		return Invalid(CodeInvalidUser, "access_token_ttl must be between 1m and %s", MaxAccessTokenTTL)
	}
	return nil
}

// bindingClash turns a unique-index clash on a user into a clear error.
func bindingClash(err error) error {
	if errors.Is(err, kv.ErrExists) {
		return newErr(ErrAlreadyExists, CodeAlreadyExists, "the user name, a uid, a vsock cid or a VM name is already taken by another user")
	}
	return err
}

// CreateUser creates a user.
func (s *Service) CreateUser(ctx context.Context, g Grant, in UserInput) (User, error) {
	if err := g.require(ActManageUsers); err != nil {
		return User{}, err
	}
	if err := checkName("user", in.Name); err != nil {
		return User{}, err
	}
	switch in.Kind {
	case "":
		in.Kind = UserWorkload
	case UserHuman, UserWorkload:
	default:
		return User{}, Invalid(CodeInvalidUser, "kind must be %s or %s", UserHuman, UserWorkload)
	}
	if in.AccessTokenTTL == 0 {
		in.AccessTokenTTL = DefaultAccessTokenTTL
	}
	if err := checkTTL(in.AccessTokenTTL); err != nil {
		return User{}, err
	}
	if err := s.checkBindings(in.UnixUIDs, in.VsockCIDs, in.VMNames); err != nil {
		return User{}, err
	}
	now := s.now()
	rec := userRecord{
		ID: newID(), Name: in.Name, Kind: in.Kind, Disabled: in.Disabled,
		UnixUIDs: in.UnixUIDs, VsockCIDs: in.VsockCIDs, VMNames: in.VMNames, AccessTokenTTL: in.AccessTokenTTL,
		CreatedAt: now, UpdatedAt: now,
	}
	var view User
	err := s.update(ctx, g.principal, "user.create", func(tx *kv.Txn, c *change) error {
		c.set("user", rec.ID)
		var err error
		if rec.PolicyIDs, err = resolveUserPolicies(s, tx, in.Policies); err != nil {
			return err
		}
		if err := bindingClash(tx.Put(tableUsers, rec.ID, rec, rec.indexes()...)); err != nil {
			return err
		}
		view, err = s.userView(tx, rec, nil)
		return err
	})
	if err != nil {
		return User{}, storeErr(err)
	}
	return view, nil
}

func (r userRecord) view(roles []ProjectRole) User {
	return User{
		ID: r.ID, Name: r.Name, Kind: r.Kind, Disabled: r.Disabled, UnixUIDs: r.UnixUIDs,
		VsockCIDs: r.VsockCIDs, VMNames: r.VMNames, AccessTokenTTL: r.AccessTokenTTL, Roles: roles,
		CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt,
	}
}

// findUser resolves a user by name or id inside a transaction.
func findUser(tx *kv.Txn, ref string) (userRecord, error) {
	var rec userRecord
	if !validName(ref) && !validID(ref) {
		return rec, NotFound("user %q not found", ref)
	}
	id := ref
	if !validID(ref) {
		var err error
		if id, err = tx.Lookup(tableUsers, indexName, ref); err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				return rec, NotFound("user %q not found", ref)
			}
			return rec, err
		}
	}
	if err := tx.Get(tableUsers, id, &rec); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return rec, NotFound("user %q not found", ref)
		}
		return rec, err
	}
	return rec, nil
}

// GetUser returns the grant's user with its roles.
func (s *Service) GetUser(ctx context.Context, g Grant) (User, error) {
	if err := g.require(ActReadUser); err != nil {
		return User{}, err
	}
	var out User
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		out, err = s.userSeenBy(tx, g, g.userID)
		return err
	})
	return out, storeErr(err)
}

// userSeenBy is user id as g's caller may see it: whole, or for a token
// nothing beyond the token's project — not its user's roles elsewhere,
// nor its host bindings, nor its policies of other projects.
func (s *Service) userSeenBy(tx *kv.Txn, g Grant, id string) (User, error) {
	rec, err := findUser(tx, id)
	if err != nil {
		return User{}, err
	}
	roles, err := userRoles(tx, rec.ID)
	if err != nil {
		return User{}, err
	}
	if g.token != nil {
		roles = slices.DeleteFunc(roles, func(r ProjectRole) bool { return r.ProjectID != g.token.ProjectID })
		rec.UnixUIDs, rec.VsockCIDs, rec.VMNames = nil, nil, nil
		rec.PolicyIDs = slices.DeleteFunc(slices.Clone(rec.PolicyIDs), func(id string) bool {
			var p policyRecord
			err := tx.Get(tablePolicies, id, &p)
			return err != nil || (p.ProjectID != "" && p.ProjectID != g.token.ProjectID)
		})
	}
	return s.userView(tx, rec, roles)
}

// userView is the projection of a user with its roles and the names of
// its policies.
func (s *Service) userView(tx *kv.Txn, rec userRecord, roles []ProjectRole) (User, error) {
	v := rec.view(roles)
	names, err := policyRefs(tx, s, rec.PolicyIDs, "")
	v.Policies = names
	return v, err
}

// ListUsers lists users in creation order; with project set, only those
// holding a role there.
func (s *Service) ListUsers(ctx context.Context, g Grant, project string, page Page) ([]User, string, error) {
	if err := g.require(ActManageUsers); err != nil {
		return nil, "", err
	}
	if project == "" {
		var out []User
		next, err := s.list(ctx, tableUsers, kv.Query{}, page, func(decode func(any) error) error {
			var rec userRecord
			if err := decode(&rec); err != nil {
				return err
			}
			out = append(out, rec.view(nil))
			return nil
		})
		return out, next, err
	}
	proj, err := s.findProject(ctx, project)
	if err != nil {
		return nil, "", err
	}
	page, err = page.check()
	if err != nil {
		return nil, "", err
	}
	var out []User
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		assignments, err := projectRoles(tx, proj.ID)
		if err != nil {
			return err
		}
		for _, a := range assignments {
			var rec userRecord
			if err := tx.Get(tableUsers, a.UserID, &rec); err != nil {
				return err
			}
			out = append(out, rec.view([]ProjectRole{{ProjectID: proj.ID, Project: proj.Name, Role: a.Role}}))
		}
		return nil
	})
	if err != nil {
		return nil, "", storeErr(err)
	}
	// Assignments are few per project; page in memory by user id.
	slices.SortFunc(out, func(a, b User) int { return compareStrings(a.ID, b.ID) })
	i := 0
	if page.After != "" {
		i, _ = slices.BinarySearchFunc(out, page.After, func(u User, id string) int { return compareStrings(u.ID, id) })
		if i < len(out) && out[i].ID == page.After {
			i++
		}
	}
	out = out[i:]
	if len(out) > page.Limit {
		return out[:page.Limit], out[page.Limit-1].ID, nil
	}
	return out, "", nil
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// PatchUser changes a user's disabled flag, bindings or session TTL.
func (s *Service) PatchUser(ctx context.Context, g Grant, p UserPatch) (User, error) {
	if err := g.require(ActManageUser); err != nil {
		return User{}, err
	}
	if p.AccessTokenTTL != nil {
		if err := checkTTL(*p.AccessTokenTTL); err != nil {
			return User{}, err
		}
	}
	var rec userRecord
	var view User
	err := s.update(ctx, g.principal, "user.update", func(tx *kv.Txn, c *change) error {
		var err error
		if rec, err = findUser(tx, g.userID); err != nil {
			return err
		}
		c.set("user", rec.ID)
		if p.Disabled != nil {
			c.set("disabled", strconv.FormatBool(*p.Disabled))
			rec.Disabled = *p.Disabled
		}
		if p.UnixUIDs != nil {
			rec.UnixUIDs = *p.UnixUIDs
		}
		if p.VsockCIDs != nil {
			rec.VsockCIDs = *p.VsockCIDs
		}
		if p.VMNames != nil {
			rec.VMNames = *p.VMNames
		}
		if p.AccessTokenTTL != nil {
			rec.AccessTokenTTL = *p.AccessTokenTTL
		}
		if p.Policies != nil {
			if rec.PolicyIDs, err = resolveUserPolicies(s, tx, *p.Policies); err != nil {
				return err
			}
			c.set("policies", strconv.Itoa(len(rec.PolicyIDs)))
		}
		if err := s.checkBindings(rec.UnixUIDs, rec.VsockCIDs, rec.VMNames); err != nil {
			return err
		}
		rec.UpdatedAt = s.now()
		if err := bindingClash(tx.Put(tableUsers, rec.ID, rec, rec.indexes()...)); err != nil {
			return err
		}
		view, err = s.userView(tx, rec, nil)
		return err
	})
	if err != nil {
		return User{}, storeErr(err)
	}
	return view, nil
}

// DeleteUser deletes a user with its roles, credentials and sessions.
func (s *Service) DeleteUser(ctx context.Context, g Grant) error {
	if err := g.require(ActManageUser); err != nil {
		return err
	}
	// One transaction: updates run one after another (kv's committer), so
	// nothing can be made for the user between.
	err := s.update(ctx, g.principal, "user.delete", func(tx *kv.Txn, c *change) error {
		rec, err := findUser(tx, g.userID)
		if err != nil {
			return err
		}
		c.set("user", rec.ID)
		if err := deleteUserDependents(tx, rec.ID, s.now()); err != nil {
			return err
		}
		return tx.Delete(tableUsers, rec.ID)
	})
	return storeErr(err)
}
