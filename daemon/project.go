package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableProjects = "projects"
	indexName     = "name"

	// DefaultProject always exists.
	DefaultProject = "default"
)

type projectRecord struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
	// PolicyIDs are the policies that apply to every request in the
	// project (policy.go).
	PolicyIDs []string `json:"policy_ids,omitempty"`
	// Deleting is set while a deletion checks that the project is empty;
	// creations in the project refuse then (see DeleteProject).
	Deleting bool `json:"deleting,omitempty"`
}

// Project is the projection of a project.
type Project struct {
	ID        string
	Name      string
	CreatedAt time.Time
	Policies  []string // names of the policies attached
}

func (r projectRecord) view() Project {
	return Project{ID: r.ID, Name: r.Name, CreatedAt: r.CreatedAt}
}

func (r projectRecord) indexes() []kv.Index {
	return append([]kv.Index{{Name: indexName, Value: r.Name, Unique: true}}, policyIndexes(r.PolicyIDs)...)
}

// liveProject reads a project inside a write transaction, for a creation
// in it: the read makes the creation conflict with a concurrent deletion,
// and a project being deleted refuses new things.
func liveProject(tx *kv.Txn, id string) (projectRecord, error) {
	var p projectRecord
	if err := tx.Get(tableProjects, id, &p); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return p, Forbidden("the project does not exist any more")
		}
		return p, err
	}
	if p.Deleting {
		return p, Forbidden("project %q is being deleted", p.Name)
	}
	return p, nil
}

func (s *Service) ensureDefaultProject(ctx context.Context) error {
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		_, err := tx.Lookup(tableProjects, indexName, DefaultProject)
		return err
	})
	if !errors.Is(err, kv.ErrNotFound) {
		return storeErr(err)
	}
	err = s.update(ctx, systemPrincipal, "project.create", func(tx *kv.Txn, c *change) error {
		rec := projectRecord{ID: newID(), Name: DefaultProject, CreatedAt: s.now()}
		c.set("project", rec.ID)
		return tx.Put(tableProjects, rec.ID, rec, rec.indexes()...)
	})
	return storeErr(err)
}

// findProject resolves a project by name or id.
func (s *Service) findProject(ctx context.Context, ref string) (projectRecord, error) {
	var rec projectRecord
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		rec, err = s.findProjectIn(tx, ref)
		return err
	})
	return rec, storeErr(err)
}

// findProjectIn resolves a project by name or id inside a transaction.
func (s *Service) findProjectIn(tx *kv.Txn, ref string) (projectRecord, error) {
	var rec projectRecord
	// validID first: it is cheap, and authorization passes project IDs.
	isID := validID(ref)
	if !isID && !validName(ref) {
		return rec, NotFound("project %q not found", ref)
	}
	id := ref
	if !isID {
		var err error
		if id, err = tx.Lookup(tableProjects, indexName, ref); err != nil {
			if errors.Is(err, kv.ErrNotFound) {
				return rec, NotFound("project %q not found", ref)
			}
			return rec, err
		}
	}
	if err := tx.Get(tableProjects, id, &rec); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return rec, NotFound("project %q not found", ref)
		}
		return rec, err
	}
	return rec, nil
}

// CreateProject creates a project named name.
func (s *Service) CreateProject(ctx context.Context, g Grant, name string) (Project, error) {
	if err := g.require(ActManageProjects); err != nil {
		return Project{}, err
	}
	if err := checkName("project", name); err != nil {
		return Project{}, err
	}
	rec := projectRecord{ID: newID(), Name: name, CreatedAt: s.now()}
	err := s.update(ctx, g.principal, "project.create", func(tx *kv.Txn, c *change) error {
		err := tx.Put(tableProjects, rec.ID, rec, rec.indexes()...)
		if errors.Is(err, kv.ErrExists) {
			return newErr(ErrAlreadyExists, CodeAlreadyExists, "project %q already exists", name)
		}
		c.set("project", rec.ID)
		return err
	})
	if err != nil {
		return Project{}, storeErr(err)
	}
	return rec.view(), nil
}

// GetProject returns the project the grant was given for.
func (s *Service) GetProject(ctx context.Context, g Grant) (Project, error) {
	if g.action != ActReadProject && g.action != ActManageProject {
		return Project{}, Forbidden("not authorized to %s", ActReadProject)
	}
	var out Project
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		out = g.project.view()
		out.Policies, err = policyRefs(tx, s, g.project.PolicyIDs, g.project.ID)
		return err
	})
	return out, storeErr(err)
}

// ListProjects lists projects in creation order.
func (s *Service) ListProjects(ctx context.Context, g Grant, page Page) ([]Project, string, error) {
	if err := g.require(ActManageProjects); err != nil {
		return nil, "", err
	}
	var out []Project
	next, err := s.list(ctx, tableProjects, kv.Query{}, page, func(decode func(any) error) error {
		var rec projectRecord
		if err := decode(&rec); err != nil {
			return err
		}
		out = append(out, rec.view())
		return nil
	})
	return out, next, err
}

// DeleteProject deletes an empty project other than the default one.
func (s *Service) DeleteProject(ctx context.Context, g Grant, ref string) error {
	if err := g.require(ActManageProjects); err != nil {
		return err
	}
	// One transaction: updates run one after another (kv's committer), so
	// no secret can be created in the project between the count and the
	// deletion.
	err := s.update(ctx, g.principal, "project.delete", func(tx *kv.Txn, c *change) error {
		rec, err := s.findProjectIn(tx, ref)
		if err != nil {
			return err
		}
		c.set("project", rec.ID)
		if rec.Name == DefaultProject {
			return Conflict(CodeConflict, "the default project cannot be deleted")
		}
		n, err := tx.Count(tableSecrets, kv.Query{Index: indexProject, Value: rec.ID})
		if err != nil {
			return err
		}
		if n > 0 {
			return Conflict(CodeProjectNotEmpty, "project %q still has %d secrets: delete them first", rec.Name, n)
		}
		if err := deleteProjectDependents(tx, rec.ID, s.now()); err != nil {
			return err
		}
		return tx.Delete(tableProjects, rec.ID)
	})
	return storeErr(err)
}

// Page selects one page of a list: at most Limit items after the id After.
type Page struct {
	Limit int
	After string
}

const (
	defaultPageLimit = 100
	maxPageLimit     = 1000
)

func (p Page) check() (Page, error) {
	switch {
	case p.Limit < 0 || p.Limit > maxPageLimit:
		return p, Invalid(CodeInvalidArgument, "limit must be between 1 and %d", maxPageLimit)
	case p.After != "" && !validID(p.After):
		return p, Invalid(CodeInvalidArgument, "after must be an id from a previous page")
	}
	if p.Limit == 0 {
		p.Limit = defaultPageLimit
	}
	return p, nil
}

// list reads one page of a table whose records the caller may all see,
// and returns the id to continue after, or "" when this was the last page.
func (s *Service) list(ctx context.Context, table string, q kv.Query, page Page, each func(decode func(any) error) error) (string, error) {
	page, err := page.check()
	if err != nil {
		return "", err
	}
	q.After, q.Limit = page.After, page.Limit+1
	var last string
	more := false
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		n := 0
		return tx.List(table, q, func(id string, decode func(any) error) error {
			if n++; n > page.Limit {
				more = true
				return nil
			}
			last = id
			return each(decode)
		})
	})
	if err != nil || !more {
		return "", storeErr(err)
	}
	return last, nil
}

// listPage reads one page of the records q selects, for lists that show
// the caller only some of them: each returns a record's projection and
// whether the caller may see it. A page holds up to page.Limit shown
// records, and the cursor is the id of the last of them — never the id of
// a record the caller was not shown.
func listPage[T any](tx *kv.Txn, table string, q kv.Query, page Page, each func(id string, decode func(any) error) (T, bool, error)) ([]T, string, error) {
	page, err := page.check()
	if err != nil {
		return nil, "", err
	}
	q.After, q.Limit = page.After, 0
	var out []T
	last, more := "", false
	err = tx.List(table, q, func(id string, decode func(any) error) error {
		v, ok, err := each(id, decode)
		if err != nil || !ok {
			return err
		}
		if len(out) == page.Limit {
			more = true
			return errPageFull
		}
		out, last = append(out, v), id
		return nil
	})
	if errors.Is(err, errPageFull) {
		err = nil
	}
	if err != nil {
		return nil, "", err
	}
	if !more {
		last = ""
	}
	return out, last, nil
}

// errPageFull stops a list scan once a page and one more shown record
// are read.
var errPageFull = errors.New("page full")

// deleteProjectDependents deletes a project's role assignments and its
// credentials with their tokens and sessions.
func deleteProjectDependents(tx *kv.Txn, projectID string, now time.Time) error {
	roles, err := projectRoles(tx, projectID)
	if err != nil {
		return err
	}
	for _, r := range roles {
		id := roleID(r.UserID, r.ProjectID)
		if err := tx.Delete(tableRoles, id); err != nil {
			return err
		}
	}
	var creds []credentialRecord
	err = tx.List(tableCredentials, kv.Query{Index: indexProject, Value: projectID}, func(_ string, decode func(any) error) error {
		var rec credentialRecord
		if err := decode(&rec); err != nil {
			return err
		}
		creds = append(creds, rec)
		return nil
	})
	if err != nil {
		return err
	}
	for _, c := range creds {
		if err := deleteCredential(tx, c, now); err != nil {
			return err
		}
	}
	return deleteSessionsBy(tx, indexProject, projectID, now)
}
