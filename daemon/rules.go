package daemon

import (
	"context"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

const tableRules = "access_rules"

// ruleRecord is a saved, reusable access rule.
type ruleRecord struct {
	AccessRule
	CreatedBy string    `json:"created_by,omitempty"` // user id; empty for a system admin
	CreatedAt time.Time `json:"created_at"`
}

// SavedRule is the projection of a saved access rule.
type SavedRule struct {
	AccessRule
	CreatedAt time.Time
}

// CreateAccessRule saves a rule for reuse by id.
func (s *Service) CreateAccessRule(ctx context.Context, g Grant, r AccessRule) (SavedRule, error) {
	if err := g.require(ActManageRules); err != nil {
		return SavedRule{}, err
	}
	r.ID = ""
	if _, err := CompileRule(r); err != nil {
		return SavedRule{}, err
	}
	rec := ruleRecord{AccessRule: r, CreatedBy: g.userID, CreatedAt: s.now()}
	rec.ID = newID()
	err := s.update(ctx, g.principal, "access_rule.create", func(tx *kv.Txn, c *change) error {
		c.set("access_rule", rec.ID)
		return tx.Put(tableRules, rec.ID, rec)
	})
	if err != nil {
		return SavedRule{}, storeErr(err)
	}
	return SavedRule{AccessRule: rec.AccessRule, CreatedAt: rec.CreatedAt}, nil
}

// ListAccessRules lists saved rules in creation order.
func (s *Service) ListAccessRules(ctx context.Context, g Grant, page Page) ([]SavedRule, string, error) {
	if err := g.require(ActReadRules); err != nil {
		return nil, "", err
	}
	var out []SavedRule
	next, err := s.list(ctx, tableRules, kv.Query{}, page, func(decode func(any) error) error {
		var rec ruleRecord
		if err := decode(&rec); err != nil {
			return err
		}
		out = append(out, SavedRule{AccessRule: rec.AccessRule, CreatedAt: rec.CreatedAt})
		return nil
	})
	return out, next, err
}

// DeleteAccessRule deletes a saved rule that no credential uses.
func (s *Service) DeleteAccessRule(ctx context.Context, g Grant, id string) error {
	if err := g.require(ActManageRules); err != nil {
		return err
	}
	if !validID(id) {
		return NotFound("access rule %q not found", id)
	}
	err := s.update(ctx, g.principal, "access_rule.delete", func(tx *kv.Txn, c *change) error {
		c.set("access_rule", id)
		var rec ruleRecord
		if err := tx.Get(tableRules, id, &rec); err != nil {
			return notFoundAs(err, "access rule %q not found", id)
		}
		if !g.admin && rec.CreatedBy != g.userID {
			return Forbidden("only a system admin or its creator may delete access rule %s", id)
		}
		n, err := tx.Count(tableCredentials, kv.Query{Index: indexRule, Value: id})
		if err != nil {
			return err
		}
		if n > 0 {
			return Conflict(CodeConflict, "access rule %s is used by %d credentials", id, n)
		}
		return tx.Delete(tableRules, id)
	})
	return storeErr(err)
}
