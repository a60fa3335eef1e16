package daemon

import (
	"context"
	"errors"
	"fmt"
	"os/user"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// Action is what a request wants to do. Each action needs one relation on
// one resource; Authorize decides it in one place.
type Action int

const (
	ActReadStatus         Action = iota + 1 // anyone
	ActManageProjects                       // create, list, delete projects: system admin
	ActReadProject                          // read a project, list its secrets, roles, credentials: reader+
	ActManageProject                        // create (or import) secrets in a project: admin of the project
	ActReadSecret                           // read one secret's metadata: reader+ of its project
	ActManageSecret                         // rotate, revoke, delete a secret: admin of its project
	ActManageUsers                          // create and list users: system admin
	ActReadUser                             // read a user: system admin, or the user itself
	ActManageUser                           // change or delete a user: system admin
	ActCreateCredential                     // member+ of the project (admin for another user)
	ActReadCredential                       // reader+ of its project, or its owner
	ActManageCredential                     // rotate, revoke, delete: admin of its project, or its owner
	ActListOwnCredentials                   // any user: its own credentials
	ActListSessions                         // any user (its own); system admin (all)
	ActManageSession                        // revoke: system admin, admin of its project, or its owner
	ActManageRules                          // create, delete saved access rules: member+ anywhere
	ActBackup                               // take a backup of the whole store: system admin
	ActManageKeys                           // list, rotate and remove HSM keys: system admin
	ActReadImportKey                        // read the HSM import key: system admin or admin of any project
	ActManageRoles                          // give, change, take away roles on a project: admin of the project
	ActManageBindings                       // bind a secret to a consumer, unbind it: admin of its project
	ActReadRules                            // list saved access rules: member+ anywhere
	ActReadPolicies                         // read a project's policies: reader+; global ones: any user
	ActManagePolicies                       // create, change, delete, attach policies: admin of the project; global: system admin
	ActReadMetrics                          // read the Prometheus metrics: system admin, or a Unix caller in the metrics group (no token)
	ActReadHealth                           // read whether the HSM, store and audit log answer: anyone
	ActReadSelf                             // read who the daemon takes the caller to be: anyone
)

// actionInfo is what Authorize needs to know of an action beyond its
// relation: its name, and whether it is a management write — a change to
// who may do what (projects, users, roles, credentials, bindings, access
// rules, keys). A token that is not unrestricted makes none of them,
// whatever its roles; this table is the one place that says which.
type actionInfo struct {
	name       string
	event      string // the audit log's name for a denial of it
	management bool
}

var actions = map[Action]actionInfo{
	ActReadStatus:         {"read status", "status.read", false},
	ActManageProjects:     {"manage projects", "project.manage", true},
	ActReadProject:        {"read project", "project.read", false},
	ActManageProject:      {"create secrets", "secret.create", false},
	ActReadSecret:         {"read secret", "secret.read", false},
	ActManageSecret:       {"manage secret", "secret.manage", false},
	ActManageUsers:        {"manage users", "user.manage", true},
	ActReadUser:           {"read user", "user.read", false},
	ActManageUser:         {"manage user", "user.manage", true},
	ActCreateCredential:   {"create credential", "credential.create", true},
	ActReadCredential:     {"read credential", "credential.read", false},
	ActManageCredential:   {"manage credential", "credential.manage", true},
	ActListOwnCredentials: {"list own credentials", "credential.list", false},
	ActListSessions:       {"list sessions", "session.list", false},
	ActManageSession:      {"manage session", "session.revoke", false},
	ActManageRules:        {"manage access rules", "access_rule.manage", true},
	ActBackup:             {"back up the store", "store.backup", true},
	ActManageKeys:         {"manage HSM keys", "hsm.manage", true},
	ActReadImportKey:      {"read the import key", "hsm.import_key", false},
	ActManageRoles:        {"manage roles", "role.manage", true},
	ActManageBindings:     {"manage bindings", "binding.manage", true},
	ActReadRules:          {"read access rules", "access_rule.list", false},
	ActReadPolicies:       {"read policies", "policy.read", false},
	ActManagePolicies:     {"manage policies", "policy.manage", true},
	ActReadMetrics:        {"read metrics", "metrics.read", false},
	ActReadHealth:         {"read health", "health.read", false},
	ActReadSelf:           {"read who you are", "self.read", false},
}

// management reports whether a is a management write.
func (a Action) management() bool { return actions[a].management }

func (a Action) String() string {
	if i, ok := actions[a]; ok {
		return i.name
	}
	return "action(" + strconv.Itoa(int(a)) + ")"
}

// Role is a relation of a principal to a project. Each role implies the ones
// below it.
type Role int

const (
	RoleNone Role = iota
	RoleReader
	RoleMember
	RoleAdmin
)

// Resource names what an action is about, and the HTTP call that asks (for
// access rules with service "coffer").
type Resource struct {
	Project    string // name or id
	Secret     string // id
	User       string // name or id
	Credential string // id
	Session    string // id

	Method string
	Path   string
}

// auditTarget is what the audit log says a denial was about: the route
// (from ctx), and the references as the request gave them (bounded, never
// a token).
func (r Resource) auditTarget(ctx context.Context) map[string]string {
	t := routeTarget(ctx)
	if t == nil {
		t = map[string]string{}
	}
	for k, v := range map[string]string{"project": r.Project, "secret": r.Secret, "user": r.User,
		"credential": r.Credential, "session": r.Session} {
		if v != "" {
			t[k] = auditValue(v)
		}
	}
	return t
}

// Grant is the outcome of a successful Authorize: the principal, the action
// and the resolved resource. Service methods that act on a resource take a
// Grant, so nothing can act without having been authorized first. The zero
// Grant allows nothing.
type Grant struct {
	principal    Principal
	action       Action
	admin        bool   // the caller is a system admin
	userID       string // the caller's user, if any
	role         Role   // the caller's effective role on project
	project      projectRecord
	secretID     string
	secret       secretRecord // as read when authorizing
	tokenProject string       // a token caller's project: lists stay inside it
	token        *TokenIdentity
	user         *userRecord // the caller's user, if any (for its policies)
	credentialID string
	sessionID    string
	// seesCounts: the caller may see how many records there are (status
	// counts): a system admin or a metrics reader, never a token.
	seesCounts bool
}

// Principal returns who was authorized.
func (g Grant) Principal() Principal { return g.principal }

func (g Grant) require(a Action) error {
	if g.action != a {
		return Forbidden("not authorized to %s", a)
	}
	return nil
}

// caller is who a principal turns out to be: a system admin, a user (by
// binding or by token), or nobody.
type caller struct {
	admin bool
	user  *userRecord
	token *TokenIdentity
}

// owns reports whether an object of userID in projectID is the caller's
// own: its user's, and (for a token) in the token's project — a token never
// reaches beyond its project, not even to its user's other objects.
func (c caller) owns(userID, projectID string) bool {
	if c.user == nil || c.user.ID != userID {
		return false
	}
	return c.token == nil || c.token.ProjectID == projectID
}

func (c caller) userID() string {
	if c.user != nil {
		return c.user.ID
	}
	return ""
}

// resolveCaller finds the user behind a principal. A bearer token wins over
// the connection's own identity; a disabled bound user is nobody.
func (s *Service) resolveCaller(tx *kv.Txn, p Principal) (caller, error) {
	if p.Token != nil {
		now := s.now()
		if b := p.Token.cache; b != nil && b.gen == s.idGen.Load() && (b.until.IsZero() || now.Before(b.until)) {
			u := *b.user // checked live (not disabled) at this generation
			return caller{user: &u, token: p.Token}, nil
		}
		// Something the token depends on may have changed since it was
		// checked (a watch waits minutes on one authentication): the token
		// must still be usable, else the caller is nobody.
		if live, err := s.tokenLive(tx, p.Token, now); err != nil || !live {
			return caller{}, err
		}
		var u userRecord
		if err := tx.Get(tableUsers, p.Token.UserID, &u); err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				return caller{}, nil
			}
			return caller{}, err
		}
		if u.Disabled {
			return caller{}, nil
		}
		return caller{user: &u, token: p.Token}, nil
	}
	if s.isSystemAdmin(p) {
		return caller{admin: true}, nil
	}
	var index, value string
	switch {
	case p.Channel == ChannelUnix && p.HasCred:
		index, value = indexUID, strconv.FormatUint(uint64(p.UID), 10)
	case p.Channel == ChannelVsock:
		index, value = indexCID, strconv.FormatUint(uint64(p.CID), 10)
	case p.Channel == ChannelHybridVsock && p.VM != "":
		index, value = indexVM, p.VM
	default:
		return caller{}, nil
	}
	id, err := tx.Lookup(tableUsers, index, value)
	if errors.Is(err, kv.ErrNotFound) {
		return caller{}, nil
	}
	if err != nil {
		return caller{}, err
	}
	var u userRecord
	if err := tx.Get(tableUsers, id, &u); err != nil {
		return caller{}, ignoreNotFound(err)
	}
	if u.Disabled {
		return caller{}, nil
	}
	return caller{user: &u}, nil
}

// roleOn returns the caller's effective role on a project: a system admin
// is admin everywhere; a user has the role it holds; a token has the lesser
// of its own roles and what its user holds now, and only on its project.
func (s *Service) roleOn(tx *kv.Txn, c caller, projectID string) (Role, error) {
	if c.admin {
		return RoleAdmin, nil
	}
	if c.user == nil {
		return RoleNone, nil
	}
	if c.token != nil {
		if c.token.ProjectID != projectID {
			return RoleNone, nil
		}
		if b := c.token.cache; b != nil && b.gen == s.idGen.Load() {
			return min(b.held, maxRole(c.token.Roles)), nil
		}
	}
	held, err := roleOf(tx, c.user.ID, projectID)
	if err != nil {
		return RoleNone, err
	}
	if c.token != nil {
		if c.token.ProjectID != projectID {
			return RoleNone, nil
		}
		return min(held, maxRole(c.token.Roles)), nil
	}
	return held, nil
}

// Authorize decides whether p may perform a on r, before any request body is
// read. It denies by default and logs each denial with its reason. A
// project that does not exist is forbidden (403), like one the caller has
// no relation to, so that existence is not revealed; a missing object is
// not_found only for callers who could see it anyway.
func (s *Service) Authorize(ctx context.Context, p Principal, a Action, r Resource) (Grant, error) {
	var g Grant
	var denied string
	byPolicy := false
	// Loaded before the transaction's snapshot: a record read in it is
	// cached under a generation no newer than the snapshot.
	secGen, polGen := s.secGen.Load(), s.polGen.Load()
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		g, denied, err = s.decide(tx, p, a, r, secGen)
		if err != nil || denied != "" {
			return err
		}
		denied, err = s.policiesAllow(tx, g, r, polGen)
		byPolicy = denied != ""
		return err
	})
	if err != nil {
		return Grant{}, storeErr(err)
	}
	if denied != "" {
		// The audit log records every denial (repeated ones coalesced); a
		// line per denial in the daemon log would be a flood's echo.
		s.log.Debug("denied", "principal", p.String(), "action", a.String(), "reason", denied)
		s.recordDenial(p, actions[a].event, CodeForbidden, denied, r.auditTarget(ctx))
		if byPolicy {
			// The caller is subject to the policy: which one refused is
			// its to know (and to take up with who attached it).
			return Grant{}, Forbidden("not allowed to %s: %s", a, denied)
		}
		return Grant{}, Forbidden("not allowed to %s", a)
	}
	return g, nil
}

// decide is Authorize inside a read transaction. It returns the grant, or
// the reason for a denial, or an error (not_found for what the caller may
// know exists).
func (s *Service) decide(tx *kv.Txn, p Principal, a Action, r Resource, secGen uint64) (Grant, string, error) {
	c, err := s.resolveCaller(tx, p)
	if err != nil {
		return Grant{}, "", err
	}
	g := Grant{principal: p, action: a, admin: c.admin, userID: c.userID(), token: c.token, user: c.user}
	if c.token != nil && c.token.Rules != nil {
		if ok, why := c.token.Rules.Allows("coffer", r.Method, r.Path); !ok {
			return Grant{}, "access rules: " + why, nil
		}
	}
	if c.token != nil && !c.token.Unrestricted && a.management() {
		return Grant{}, "a token that is not unrestricted makes no management writes", nil
	}
	onProject := func(ref string, need Role) (string, error) {
		proj, err := s.projectFor(tx, c, ref)
		if errors.Is(err, ErrNotFound) {
			return "no such project", nil
		}
		if err != nil {
			return "", err
		}
		g.project = proj
		if g.role, err = s.roleOn(tx, c, proj.ID); err != nil {
			return "", err
		}
		if g.role < need {
			return fmt.Sprintf("holds %s on project %s, needs %s", g.role, proj.ID, need), nil
		}
		return "", nil
	}
	switch a {
	case ActReadStatus:
		g.seesCounts = s.isMetricsReader(p)
		return g, "", nil
	case ActReadHealth:
		return g, "", nil
	case ActReadSelf:
		g.seesCounts = s.isMetricsReader(p) // reported as such
		return g, "", nil
	case ActReadMetrics:
		if !s.isMetricsReader(p) {
			return Grant{}, "not a system admin nor in the metrics group", nil
		}
		return g, "", nil
	case ActManageProjects, ActManageUsers, ActBackup, ActManageKeys:
		if !c.admin {
			return Grant{}, "not a system admin", nil
		}
		return g, "", nil
	case ActReadProject, ActManageProject, ActManageRoles:
		need := RoleReader
		if a != ActReadProject {
			need = RoleAdmin
		}
		why, err := onProject(r.Project, need)
		return g, why, err
	case ActCreateCredential:
		why, err := onProject(r.Project, RoleMember)
		return g, why, err
	case ActReadSecret, ActManageSecret, ActManageBindings:
		if !validID(r.Secret) {
			return s.missing(c, g, "secret", r.Secret)
		}
		rec, err := s.secretFor(tx, r.Secret, a, secGen)
		if errors.Is(err, kv.ErrNotFound) {
			return s.missing(c, g, "secret", r.Secret)
		} else if err != nil {
			return Grant{}, "", err
		}
		need := RoleReader
		if a != ActReadSecret {
			need = RoleAdmin
		}
		g.secretID, g.secret = rec.ID, rec
		why, err := onProject(rec.ProjectID, need)
		return g, why, err
	case ActReadUser, ActManageUser:
		u, err := findUser(tx, r.User)
		if errors.Is(err, ErrNotFound) {
			return s.missing(c, g, "user", r.User)
		}
		if err != nil {
			return Grant{}, "", err
		}
		g.userID = u.ID
		if c.admin || (a == ActReadUser && c.userID() == u.ID) {
			return g, "", nil
		}
		return Grant{}, "not a system admin nor the user itself", nil
	case ActReadCredential, ActManageCredential:
		if !validID(r.Credential) {
			return s.missing(c, g, "credential", r.Credential)
		}
		var rec credentialRecord
		if err := tx.Get(tableCredentials, r.Credential, &rec); errors.Is(err, kv.ErrNotFound) {
			return s.missing(c, g, "credential", r.Credential)
		} else if err != nil {
			return Grant{}, "", err
		}
		g.credentialID = rec.ID
		need := RoleReader
		if a == ActManageCredential {
			need = RoleAdmin
		}
		why, err := onProject(rec.ProjectID, need)
		if why != "" && err == nil && c.owns(rec.UserID, rec.ProjectID) {
			why = "" // the owner may always read and manage its own
		}
		return g, why, err
	case ActListOwnCredentials, ActListSessions:
		if !c.admin && c.user == nil {
			return Grant{}, "anonymous", nil
		}
		if c.token != nil {
			g.tokenProject = c.token.ProjectID // a token sees its own project only
		}
		return g, "", nil
	case ActManageSession:
		if !validID(r.Session) {
			return s.missing(c, g, "session", r.Session)
		}
		var rec sessionRecord
		if err := tx.Get(tableSessions, r.Session, &rec); errors.Is(err, kv.ErrNotFound) {
			return s.missing(c, g, "session", r.Session)
		} else if err != nil {
			return Grant{}, "", err
		}
		g.sessionID = rec.ID
		if rec.Kind == SessionAccessToken && c.token != nil && !c.token.Unrestricted {
			// Revoking an access token's session revokes the credential.
			return Grant{}, "a credential token may not change credentials unless it is unrestricted", nil
		}
		if c.owns(rec.UserID, rec.ProjectID) {
			return g, "", nil
		}
		why, err := onProject(rec.ProjectID, RoleAdmin)
		return g, why, err
	case ActReadImportKey:
		// Those may see the import key who may import with it: system
		// admins and admins of a project.
		return s.decideAnyProject(tx, c, g, RoleAdmin)
	case ActManageRules, ActReadRules:
		return s.decideAnyProject(tx, c, g, RoleMember)
	case ActReadPolicies, ActManagePolicies:
		if r.Project == "" { // the global policies
			switch {
			case c.admin:
				return g, "", nil
			case a == ActReadPolicies && c.user != nil:
				return g, "", nil
			}
			return Grant{}, "global policies are the system admins'", nil
		}
		need := RoleReader
		if a == ActManagePolicies {
			need = RoleAdmin
		}
		why, err := onProject(r.Project, need)
		return g, why, err
	}
	return Grant{}, "unknown action", nil
}

// decideAnyProject lets in system admins and callers holding at least need
// in some project; a token, in its own project.
func (s *Service) decideAnyProject(tx *kv.Txn, c caller, g Grant, need Role) (Grant, string, error) {
	if c.admin {
		return g, "", nil
	}
	if c.user == nil {
		return Grant{}, "anonymous", nil
	}
	if c.token != nil {
		role, err := s.roleOn(tx, c, c.token.ProjectID)
		if err != nil || role >= need {
			return g, "", err
		}
		return Grant{}, "the token's roles are below " + need.String(), nil
	}
	roles, err := userRoles(tx, c.user.ID)
	if err != nil {
		return Grant{}, "", err
	}
	for _, pr := range roles {
		if r, _ := ParseRole(pr.Role); r >= need {
			return g, "", nil
		}
	}
	return Grant{}, "no " + need.String() + " role in any project", nil
}

// projectFor finds the project ref (name or id) for decide. A token
// caller's own project comes from its cached bearer resolution while the
// identity generation is current (a project deletion bumps it).
func (s *Service) projectFor(tx *kv.Txn, c caller, ref string) (projectRecord, error) {
	if c.token != nil && ref == c.token.ProjectID {
		if b := c.token.cache; b != nil && b.gen == s.idGen.Load() && b.project.ID == ref {
			return *b.project, nil
		}
	}
	return s.findProjectIn(tx, ref)
}

// secretFor reads the metadata record of secret id for decide. Reads are
// served from the secret cache while the secrets generation is current;
// a change (ActManageSecret) always reads the store. gen is the secrets
// generation loaded before tx began.
func (s *Service) secretFor(tx *kv.Txn, id string, a Action, gen uint64) (secretRecord, error) {
	if a != ActReadSecret {
		var rec secretRecord
		err := tx.Get(tableSecrets, id, &rec)
		return rec, err
	}
	if rec, ok := s.secrets.get(id, gen); ok {
		return rec, nil
	}
	var rec secretRecord
	if err := tx.Get(tableSecrets, id, &rec); err != nil {
		return rec, err
	}
	s.secrets.put(rec, gen)
	return rec, nil
}

// missing answers for an object that does not exist: not_found to a system
// admin (who could list it anyway), a denial to everyone else.
func (s *Service) missing(c caller, g Grant, kind, ref string) (Grant, string, error) {
	if c.admin {
		return Grant{}, "", NotFound("%s %q not found", kind, ref)
	}
	return Grant{}, "no such " + kind, nil
}

// isSystemAdmin reports whether p is a system admin: a Unix-socket caller
// with uid 0, in the configured admin group, or (in dev mode only) running
// as the daemon's own uid. A bearer token is never a system admin.
func (s *Service) isSystemAdmin(p Principal) bool {
	if p.Token != nil || p.Channel != ChannelUnix || !p.HasCred {
		return false
	}
	if p.UID == 0 || (s.cfg.Dev && p.UID == s.selfUID) {
		return true
	}
	if s.adminGID == nil {
		return false
	}
	if p.GID == *s.adminGID {
		return true
	}
	return s.groups.contains(p.UID, *s.adminGID)
}

// groupCache remembers the supplementary groups of uids for a short while,
// so an admin-group check does not read /etc/group on every request.
type groupCache struct {
	mu      sync.Mutex
	entries map[uint32]groupEntry
	ttl     time.Duration
	lookup  func(uid uint32) ([]uint32, error)
}

type groupEntry struct {
	gids []uint32
	at   time.Time
}

func newGroupCache() *groupCache {
	return &groupCache{entries: map[uint32]groupEntry{}, ttl: 30 * time.Second, lookup: lookupGroups}
}

func (c *groupCache) contains(uid, gid uint32) bool {
	c.mu.Lock()
	e, ok := c.entries[uid]
	c.mu.Unlock()
	if !ok || time.Since(e.at) > c.ttl {
		gids, err := c.lookup(uid)
		if err != nil {
			gids = nil
		}
		e = groupEntry{gids: gids, at: time.Now()}
		c.mu.Lock()
		c.entries[uid] = e
		c.mu.Unlock()
	}
	return slices.Contains(e.gids, gid)
}

func lookupGroups(uid uint32) ([]uint32, error) {
	u, err := user.LookupId(strconv.FormatUint(uint64(uid), 10))
	if err != nil {
		return nil, fmt.Errorf("look up uid %d: %w", uid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("look up groups of uid %d: %w", uid, err)
	}
	var out []uint32
	for _, id := range ids {
		if n, err := strconv.ParseUint(id, 10, 32); err == nil {
			out = append(out, uint32(n))
		}
	}
	return out, nil
}

// tokenLive says whether the bearer id was authenticated from is still
// usable at now: its token (an opaque token's record, a JWT's exp), its
// session and the session an exchange came from, and its credential, as
// resolveBearer checks them. The user is the caller's to check.
func (s *Service) tokenLive(tx *kv.Txn, id *TokenIdentity, now time.Time) (bool, error) {
	dead := func(err error) (bool, error) {
		if errors.Is(err, kv.ErrNotFound) {
			return false, nil
		}
		return false, err
	}
	if b := id.cache; b != nil {
		if !b.until.IsZero() && !now.Before(b.until) {
			return false, nil
		}
		if b.tokenID != "" {
			var tok tokenRecord
			if err := tx.Get(tableTokens, b.tokenID, &tok); err != nil {
				return dead(err)
			}
			if tok.NotAfter != nil && !now.Before(*tok.NotAfter) {
				return false, nil
			}
		}
	}
	var sess sessionRecord
	if err := tx.Get(tableSessions, id.SessionID, &sess); err != nil {
		return dead(err)
	}
	if sess.expired(now) {
		return false, nil
	}
	if sess.Parent != "" {
		if _, err := exchangeSubjectLive(tx, sess, now); err != nil {
			var bad *errBadToken
			if errors.As(err, &bad) {
				return false, nil
			}
			return false, err
		}
	}
	var cred credentialState
	if err := tx.Get(tableCredentials, sess.CredentialID, &cred); err != nil {
		return dead(err)
	}
	if cred.RevokedAt != nil || (cred.Type == CredAccessToken && cred.ExpiresAt != nil && !now.Before(*cred.ExpiresAt)) {
		return false, nil
	}
	return true, nil
}
