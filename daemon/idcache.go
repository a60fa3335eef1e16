package daemon

import (
	"sync"

	"github.com/coffer-hsm/coffer/kv"
)

// idRecords keeps the user, project and role records that bearer
// resolutions share (many tokens of one user in one project), so that
// resolving a token that is not in the bearer cache reads only its own
// records: token, session and credential. Entries are tagged with the
// identity generation loaded before the read, and used only while it is
// current, under the same rule as the bearer cache: every write that
// changes or removes one of these records bumps the generation once it has
// committed (caches.go). Only found records are kept.
type idRecords struct {
	users    genMap[userRecord]
	projects genMap[projectRecord]
	roles    genMap[Role] // by roleID(user, project)
	// k8sCreds are the credentials of Kubernetes user names, by
	// lowercased token id (k8sCredential): what a SubjectAccessReview
	// reads before its decision.
	k8sCreds genMap[k8sUserCred]
}

const idRecordsSize = 10_000

// genMap is a bounded map of values read at a generation. Entries are
// replaced, never changed, so a pointer from ref stays valid and unchanged.
type genMap[V any] struct {
	mu sync.RWMutex
	m  map[string]*genEntry[V]
}

type genEntry[V any] struct {
	v   V
	gen uint64
}

// ref returns the entry of k read at gen, shared: callers must not modify
// it. Nil if there is none.
func (c *genMap[V]) ref(k string, gen uint64) *V {
	c.mu.RLock()
	e, ok := c.m[k]
	c.mu.RUnlock()
	if !ok || e.gen != gen {
		return nil
	}
	return &e.v
}

func (c *genMap[V]) get(k string, gen uint64) (V, bool) {
	if p := c.ref(k, gen); p != nil {
		return *p, true
	}
	var zero V
	return zero, false
}

func (c *genMap[V]) put(k string, v V, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]*genEntry[V])
	}
	if len(c.m) >= idRecordsSize {
		// Entries of old generations first; else an eighth in map order.
		n := idRecordsSize / 8
		for k, e := range c.m {
			if e.gen != gen || n > 0 {
				delete(c.m, k)
				n--
			}
		}
	}
	c.m[k] = &genEntry[V]{v: v, gen: gen}
}

// shared returns the entry of k at gen when there is one (it equals v,
// read at the same generation: any change to the record bumps it), else a
// copy of v: bearer-cache entries of one user or project then hold one
// record between them.
func shared[V any](c *genMap[V], k string, gen uint64, v V) *V {
	if p := c.ref(k, gen); p != nil {
		return p
	}
	return &v
}

// getUser reads user id into out, through the shared records when gen (the
// identity generation loaded before tx began) is given.
func (s *Service) getUser(tx *kv.Txn, id string, out *userRecord, gen *uint64) error {
	if gen == nil {
		return tx.Get(tableUsers, id, out)
	}
	if u, ok := s.ids.users.get(id, *gen); ok {
		*out = u
		return nil
	}
	if err := tx.Get(tableUsers, id, out); err != nil {
		return err
	}
	s.ids.users.put(id, *out, *gen)
	return nil
}

// getProject is getUser for a project record.
func (s *Service) getProject(tx *kv.Txn, id string, out *projectRecord, gen uint64) error {
	if p, ok := s.ids.projects.get(id, gen); ok {
		*out = p
		return nil
	}
	if err := tx.Get(tableProjects, id, out); err != nil {
		return err
	}
	s.ids.projects.put(id, *out, gen)
	return nil
}

// roleOfAt is roleOf through the shared records. A missing role is not
// kept (RoleNone is read again each time).
func (s *Service) roleOfAt(tx *kv.Txn, userID, projectID string, gen uint64) (Role, error) {
	k := roleID(userID, projectID)
	if r, ok := s.ids.roles.get(k, gen); ok {
		return r, nil
	}
	r, err := roleOf(tx, userID, projectID)
	if err != nil || r == RoleNone {
		return r, err
	}
	s.ids.roles.put(k, r, gen)
	return r, nil
}
