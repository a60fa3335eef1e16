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
	ActReadStatus     Action = iota + 1 // anyone
	ActManageProjects                   // create, list, delete projects: system admin
	ActReadProject                      // read a project and list its secrets: reader+
	ActManageProject                    // create secrets in a project: admin of the project
	ActReadSecret                       // read one secret's metadata: reader+ of its project
	ActManageSecret                     // rotate, revoke, delete a secret: admin of its project
)

var actionNames = map[Action]string{
	ActReadStatus:     "read status",
	ActManageProjects: "manage projects",
	ActReadProject:    "read project",
	ActManageProject:  "manage project",
	ActReadSecret:     "read secret",
	ActManageSecret:   "manage secret",
}

func (a Action) String() string {
	if n, ok := actionNames[a]; ok {
		return n
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

// Resource names what an action is about: a project (by name or id) or a
// secret (by id).
type Resource struct {
	Project string
	Secret  string
}

// Grant is the outcome of a successful Authorize: the principal, the action
// and the resolved resource. Service methods that act on a resource take a
// Grant, so nothing can act without having been authorized first. The zero
// Grant allows nothing.
type Grant struct {
	principal Principal
	action    Action
	project   projectRecord
	secretID  string
}

// Principal returns who was authorized.
func (g Grant) Principal() Principal { return g.principal }

func (g Grant) require(a Action) error {
	if g.action != a {
		return Forbidden("not authorized to %s", a)
	}
	return nil
}

// Authorize decides whether p may perform a on r, before any request body is
// read. It denies by default. A project that does not exist is forbidden
// (403), like one the caller has no relation to, so that existence is not
// revealed; a missing secret is not_found only for callers who could see it
// anyway (system admins).
func (s *Service) Authorize(ctx context.Context, p Principal, a Action, r Resource) (Grant, error) {
	g := Grant{principal: p, action: a}
	admin := s.isSystemAdmin(p)
	deny := func(reason string) (Grant, error) {
		s.log.Info("denied", "principal", p.String(), "action", a.String(), "project", r.Project, "secret", r.Secret, "reason", reason)
		return Grant{}, Forbidden("not allowed to %s", a)
	}
	switch a {
	case ActReadStatus:
		return g, nil
	case ActManageProjects:
		if !admin {
			return deny("not a system admin")
		}
		return g, nil
	case ActReadProject, ActManageProject:
		proj, err := s.findProject(ctx, r.Project)
		if errors.Is(err, ErrNotFound) {
			if admin {
				s.log.Info("denied", "principal", p.String(), "action", a.String(), "project", r.Project, "reason", "no such project")
				return Grant{}, Forbidden("project %q does not exist", r.Project)
			}
			return deny("no such project")
		}
		if err != nil {
			return Grant{}, err
		}
		if s.roleOn(p, proj.ID) < needRole(a) {
			return deny("no relation on project")
		}
		g.project = proj
		return g, nil
	case ActReadSecret, ActManageSecret:
		var rec secretRecord
		var proj projectRecord
		if !validID(r.Secret) {
			if admin {
				return Grant{}, NotFound("secret %q not found", r.Secret)
			}
			return deny("no such secret")
		}
		err := s.store.View(ctx, func(tx *kv.Txn) error {
			if err := tx.Get(tableSecrets, r.Secret, &rec); err != nil {
				return err
			}
			return tx.Get(tableProjects, rec.ProjectID, &proj)
		})
		if errors.Is(err, kv.ErrNotFound) {
			if admin {
				return Grant{}, NotFound("secret %s not found", r.Secret)
			}
			return deny("no such secret")
		}
		if err != nil {
			return Grant{}, storeErr(err)
		}
		if s.roleOn(p, proj.ID) < needRole(a) {
			return deny("no relation on the secret's project")
		}
		g.project, g.secretID = proj, rec.ID
		return g, nil
	}
	return deny("unknown action")
}

func needRole(a Action) Role {
	switch a {
	case ActReadProject, ActReadSecret:
		return RoleReader
	default:
		return RoleAdmin
	}
}

// roleOn returns p's relation to a project. System admins are admins of
// every project; users and their roles arrive with the credentials work.
func (s *Service) roleOn(p Principal, projectID string) Role {
	if s.isSystemAdmin(p) {
		return RoleAdmin
	}
	return RoleNone
}

// isSystemAdmin reports whether p is a system admin: a Unix-socket caller
// with uid 0, in the configured admin group, or (in dev mode only) running
// as the daemon's own uid.
func (s *Service) isSystemAdmin(p Principal) bool {
	if p.Channel != ChannelUnix || !p.HasCred {
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
