package daemon

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"

	"github.com/coffer-hsm/coffer/kv"
)

// listCredentialsAnywhere is GET /v1/credentials: the credentials the
// caller owns or administers, in every project it may see. A system admin
// sees all of them; a user its own and every credential of the projects it
// holds admin on; a token only those of its own project: its user's, or
// all of them when the token acts as an admin there. f.User narrows the
// list to one user's. An unknown user is an empty list to anyone but a
// system admin: the list does not tell which user names exist.
//
// The list is read from a few index scans (the user's own, one per
// administered project) merged in id order, so that a page costs what it
// shows; its cursor is the id of the last credential shown, which the
// caller may see.
func (s *Service) listCredentialsAnywhere(ctx context.Context, g Grant, f CredentialFilter, page Page) ([]Credential, string, error) {
	if !g.admin && g.userID == "" {
		return nil, "", Forbidden("not authorized to list credentials")
	}
	page, err := page.check()
	if err != nil {
		return nil, "", err
	}
	now := s.now()
	var out []Credential
	var next string
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		only := ""
		if f.User != "" {
			u, err := findUser(tx, f.User)
			switch {
			case err == nil:
				only = u.ID
			case !g.admin && errors.Is(err, ErrNotFound):
				return nil
			default:
				return err
			}
		}
		sources, visible, err := s.credentialSources(tx, g, only)
		if err != nil || len(sources) == 0 {
			return err
		}
		each := func(_ string, decode func(any) error) (Credential, bool, error) {
			var rec credentialRecord
			if err := decode(&rec); err != nil {
				return Credential{}, false, err
			}
			if !visible(rec) {
				return Credential{}, false, nil
			}
			v, err := s.credentialView(tx, rec, now)
			if err != nil {
				return Credential{}, false, err
			}
			if f.ExpiringWithin > 0 && (v.Status != StatusActive || v.ExpiresAt == nil || v.ExpiresAt.After(now.Add(f.ExpiringWithin))) {
				return Credential{}, false, nil
			}
			return v, true, nil
		}
		more := false
		for _, q := range sources {
			items, n, err := listPage(tx, tableCredentials, q, page, each)
			if err != nil {
				return err
			}
			out = append(out, items...)
			more = more || n != ""
		}
		out, next = mergedPage(out, page.Limit, more)
		return nil
	})
	if err != nil {
		return nil, "", storeErr(err)
	}
	return out, next, nil
}

// mergedPage sorts the pages of several sources into one, without
// duplicates, and cuts it to limit; next is the id of its last credential
// when any source had more, or the merge did.
func mergedPage(all []Credential, limit int, more bool) ([]Credential, string) {
	slices.SortFunc(all, func(a, b Credential) int { return strings.Compare(a.ID, b.ID) })
	all = slices.CompactFunc(all, func(a, b Credential) bool { return a.ID == b.ID })
	if len(all) > limit {
		all, more = all[:limit], true
	}
	if !more || len(all) == 0 {
		return all, ""
	}
	return all, all[len(all)-1].ID
}

// credentialSources is where the credentials g may list outside a project
// are found (index scans of the credentials table), and which of the
// records found there g may see. only, when set, is the one user whose
// credentials are asked for.
func (s *Service) credentialSources(tx *kv.Txn, g Grant, only string) ([]kv.Query, func(credentialRecord) bool, error) {
	byUser := func(id string) kv.Query { return kv.Query{Index: indexUser, Value: id} }
	byProject := func(id string) kv.Query { return kv.Query{Index: indexProject, Value: id} }
	if g.admin {
		if only != "" {
			return []kv.Query{byUser(only)}, func(credentialRecord) bool { return true }, nil
		}
		return []kv.Query{{}}, func(credentialRecord) bool { return true }, nil
	}
	if g.tokenProject != "" {
		// A token: its own project only, as an admin there or as its user.
		role, err := s.roleOn(tx, caller{user: &userRecord{ID: g.userID}, token: g.token}, g.tokenProject)
		if err != nil {
			return nil, nil, err
		}
		inProject := func(rec credentialRecord) bool { return rec.ProjectID == g.tokenProject }
		switch {
		case role >= RoleAdmin && only != "":
			return []kv.Query{byUser(only)}, inProject, nil
		case role >= RoleAdmin:
			return []kv.Query{byProject(g.tokenProject)}, inProject, nil
		case only != "" && only != g.userID:
			return nil, nil, nil
		}
		return []kv.Query{byUser(g.userID)}, inProject, nil
	}
	roles, err := userRoles(tx, g.userID)
	if err != nil {
		return nil, nil, err
	}
	administered := map[string]bool{}
	for _, pr := range roles {
		if r, _ := ParseRole(pr.Role); r >= RoleAdmin {
			administered[pr.ProjectID] = true
		}
	}
	visible := func(rec credentialRecord) bool { return rec.UserID == g.userID || administered[rec.ProjectID] }
	if only != "" {
		if only != g.userID && len(administered) == 0 {
			return nil, nil, nil
		}
		return []kv.Query{byUser(only)}, visible, nil
	}
	sources := []kv.Query{byUser(g.userID)}
	for _, id := range slices.Sorted(maps.Keys(administered)) {
		sources = append(sources, byProject(id))
	}
	return sources, visible, nil
}
