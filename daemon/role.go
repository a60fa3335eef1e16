package daemon

import (
	"context"
	"errors"
	"strconv"

	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableRoles = "roles"
	indexUser  = "user"
)

var roleNames = map[Role]string{RoleReader: "reader", RoleMember: "member", RoleAdmin: "admin"}

func (r Role) String() string {
	if n, ok := roleNames[r]; ok {
		return n
	}
	return "none"
}

const CodeInvalidRole = "invalid_role"

// ParseRole parses reader, member or admin.
func ParseRole(s string) (Role, error) {
	for r, n := range roleNames {
		if n == s {
			return r, nil
		}
	}
	return RoleNone, Invalid(CodeInvalidRole, "unknown role %q: use reader, member or admin", s)
}

// implied returns the role names r implies: admin implies member and
// reader, member implies reader.
func (r Role) implied() []string {
	var out []string
	for x := RoleReader; x <= r; x++ {
		out = append(out, x.String())
	}
	return out
}

// maxRole returns the highest role named in names (RoleNone for none).
func maxRole(names []string) Role {
	m := RoleNone
	for _, n := range names {
		if r, err := ParseRole(n); err == nil && r > m {
			m = r
		}
	}
	return m
}

// roleRecord is one user's role on one project. Its id is
// "<user id>:<project id>": a user holds at most one role per project, and
// each role implies the ones below it.
type roleRecord struct {
	UserID    string `json:"user_id"`
	ProjectID string `json:"project_id"`
	Role      string `json:"role"`
}

func roleID(userID, projectID string) string { return userID + ":" + projectID }

func (r roleRecord) indexes() []kv.Index {
	return []kv.Index{{Name: indexUser, Value: r.UserID}, {Name: indexProject, Value: r.ProjectID}}
}

// ProjectRole is a user's role on a project.
type ProjectRole struct {
	ProjectID string
	Project   string
	UserID    string
	User      string
	Role      string
}

func roleOf(tx *kv.Txn, userID, projectID string) (Role, error) {
	var rec roleRecord
	err := tx.Get(tableRoles, roleID(userID, projectID), &rec)
	if errors.Is(err, kv.ErrNotFound) {
		return RoleNone, nil
	}
	if err != nil {
		return RoleNone, err
	}
	r, _ := ParseRole(rec.Role)
	return r, nil
}

func userRoles(tx *kv.Txn, userID string) ([]ProjectRole, error) {
	var out []ProjectRole
	err := tx.List(tableRoles, kv.Query{Index: indexUser, Value: userID}, func(_ string, decode func(any) error) error {
		var rec roleRecord
		if err := decode(&rec); err != nil {
			return err
		}
		var p projectRecord
		if err := tx.Get(tableProjects, rec.ProjectID, &p); errors.Is(err, kv.ErrNotFound) {
			return nil // its project is being deleted
		} else if err != nil {
			return err
		}
		out = append(out, ProjectRole{ProjectID: p.ID, Project: p.Name, UserID: userID, Role: rec.Role})
		return nil
	})
	return out, err
}

func projectRoles(tx *kv.Txn, projectID string) ([]roleRecord, error) {
	var out []roleRecord
	err := tx.List(tableRoles, kv.Query{Index: indexProject, Value: projectID}, func(_ string, decode func(any) error) error {
		var rec roleRecord
		if err := decode(&rec); err != nil {
			return err
		}
		out = append(out, rec)
		return nil
	})
	return out, err
}

// admitted finds the user userRef for a role change on the grant's project
// and returns the role it holds there. Admission is the system admin's:
// for anyone else a user that holds no role on the project is invisible,
// answered exactly as a user that does not exist, so that a project admin
// can neither admit users nor learn which names exist outside its
// project.
func admitted(tx *kv.Txn, g Grant, userRef string) (userRecord, Role, error) {
	user, err := findUser(tx, userRef)
	if err != nil {
		return user, RoleNone, err
	}
	held, err := roleOf(tx, user.ID, g.project.ID)
	if err != nil {
		return user, RoleNone, err
	}
	if held == RoleNone && !g.admin {
		return user, RoleNone, userNotFound(userRef)
	}
	return user, held, nil
}

// userNotFound is the one answer for a user that does not exist and for
// one the caller may not see.
func userNotFound(ref string) error { return NotFound("user %q not found", ref) }

// SetRole gives a user a role on the grant's project, replacing the role it
// held there. Only a system admin admits a user (gives it its first role
// on the project); a project admin changes roles of users already
// admitted. Lowering a role deletes the user's credentials in the project
// whose roles are no longer a subset of what it holds.
func (s *Service) SetRole(ctx context.Context, g Grant, userRef, role string) (ProjectRole, error) {
	if err := g.require(ActManageRoles); err != nil {
		return ProjectRole{}, err
	}
	r, err := ParseRole(role)
	if err != nil {
		return ProjectRole{}, err
	}
	var user userRecord
	err = s.update(ctx, g.principal, "role.grant", func(tx *kv.Txn, c *change) error {
		var err error
		c.set("project", g.project.ID, "role", r.String())
		if _, err := liveProject(tx, g.project.ID); err != nil {
			return err
		}
		if user, _, err = admitted(tx, g, userRef); err != nil {
			return err
		}
		c.set("user", user.ID)
		rec := roleRecord{UserID: user.ID, ProjectID: g.project.ID, Role: r.String()}
		if err := tx.Put(tableRoles, roleID(user.ID, g.project.ID), rec, rec.indexes()...); err != nil {
			return err
		}
		dropped, err := s.dropCredentialsBeyond(tx, user.ID, g.project.ID, r)
		c.set("credentials_deleted", strconv.Itoa(dropped))
		return err
	})
	if err != nil {
		return ProjectRole{}, storeErr(err)
	}
	return ProjectRole{ProjectID: g.project.ID, Project: g.project.Name, UserID: user.ID, User: user.Name, Role: r.String()}, nil
}

// RemoveRole takes a role away from a user on the grant's project and
// deletes the user's credentials and bindings there: the user is no
// longer admitted, and nothing of the project reaches it any more.
// Removing a role the user does not hold is not_found.
func (s *Service) RemoveRole(ctx context.Context, g Grant, userRef, role string) error {
	if err := g.require(ActManageRoles); err != nil {
		return err
	}
	r, err := ParseRole(role)
	if err != nil {
		return err
	}
	err = s.update(ctx, g.principal, "role.revoke", func(tx *kv.Txn, c *change) error {
		c.set("project", g.project.ID, "role", r.String())
		user, held, err := admitted(tx, g, userRef)
		if err != nil {
			return err
		}
		c.set("user", user.ID)
		if held != r {
			return NotFound("user %q does not hold role %s on this project", userRef, r)
		}
		if err := tx.Delete(tableRoles, roleID(user.ID, g.project.ID)); err != nil {
			return err
		}
		dropped, err := s.dropCredentialsBeyond(tx, user.ID, g.project.ID, RoleNone)
		if err != nil {
			return err
		}
		c.set("credentials_deleted", strconv.Itoa(dropped))
		return deleteUserBindingsIn(tx, user.ID, g.project.ID)
	})
	return storeErr(err)
}

// ListRoles lists the role assignments on the grant's project.
func (s *Service) ListRoles(ctx context.Context, g Grant) ([]ProjectRole, error) {
	if g.action != ActReadProject && g.action != ActManageProject {
		return nil, Forbidden("not authorized to %s", ActReadProject)
	}
	var out []ProjectRole
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		recs, err := projectRoles(tx, g.project.ID)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			var u userRecord
			if err := tx.Get(tableUsers, rec.UserID, &u); err != nil {
				return err
			}
			out = append(out, ProjectRole{ProjectID: g.project.ID, Project: g.project.Name, UserID: u.ID, User: u.Name, Role: rec.Role})
		}
		return nil
	})
	return out, storeErr(err)
}
