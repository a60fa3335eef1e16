package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/coffer-hsm/coffer/kv"
)

// The store's schema version, kept in tableSchema under schemaID. A store
// made before it existed is version 1. Migrations run once, at start, in
// order, each in one transaction that also records the new version.
const (
	tableSchema   = "schema"
	schemaID      = "version"
	schemaCurrent = 3
)

type schemaRecord struct {
	Version int `json:"version"`
}

// migrations[v] takes a store from version v to v+1: step is called
// until it reports done, each call in a transaction of its own (so that a
// large store is migrated in transactions of a bounded size); the last one
// also records the new version. A step must be safe to repeat: a crash
// between two leaves the store at version v, and the migration starts over.
var migrations = map[int]func(tx *kv.Txn, after string) (next string, done bool, err error){
	// 1 → 2: user bindings are unique per (user, project, name) instead
	// of per (user, name); rewriting each record rewrites its indexes.
	1: func(tx *kv.Txn, after string) (string, bool, error) {
		var recs []bindingRecord
		last := ""
		if err := tx.List(tableBindings, kv.Query{After: after, Limit: migrateBatch}, func(id string, decode func(any) error) error {
			var b bindingRecord
			if err := decode(&b); err != nil {
				return err
			}
			last = id
			if b.Kind == BindUser {
				recs = append(recs, b)
			}
			return nil
		}); err != nil {
			return "", false, err
		}
		for _, b := range recs {
			if err := tx.Put(tableBindings, b.ID, b, b.indexes()...); err != nil {
				return "", false, err
			}
		}
		return last, last == "", nil
	},
	// 2 → 3: credential tokens gain the unique index of their lowercased
	// id (indexLowerID), which maps a Kubernetes user name back to its
	// credential. Two stored ids that lowercase alike (never seen: about
	// 2^-67 per pair of draws) stop the migration, naming both: sharing
	// one user name between two credentials is not an option.
	2: func(tx *kv.Txn, after string) (string, bool, error) {
		type tok struct {
			id  string
			rec tokenRecord
		}
		var toks []tok
		last := ""
		if err := tx.List(tableTokens, kv.Query{After: after, Limit: migrateBatch}, func(id string, decode func(any) error) error {
			var rec tokenRecord
			if err := decode(&rec); err != nil {
				return err
			}
			last = id
			if lowerIndexed(rec.Prefix) {
				toks = append(toks, tok{id, rec})
			}
			return nil
		}); err != nil {
			return "", false, err
		}
		for _, t := range toks {
			if err := tx.Put(tableTokens, t.id, t.rec, tokenIndexes(t.rec.Prefix, t.id, t.rec.Owner)...); errors.Is(err, kv.ErrExists) {
				other, _ := tx.LookupUnique(tableTokens, indexLowerID, strings.ToLower(t.id))
				return "", false, fmt.Errorf("token ids %s and %s are equal in lowercase, so one Kubernetes user name would name two credentials: with the previous coffer version, revoke or delete one of their two credentials (or rotate it with no grace), then start this one: %w", other, t.id, err)
			} else if err != nil {
				return "", false, err
			}
		}
		return last, last == "", nil
	},
}

// migrateBatch bounds the records one migration transaction rewrites.
const migrateBatch = 256

// migrate brings the store to schemaCurrent. A store newer than this
// daemon is refused: it may hold what this version would misread.
func (s *Service) migrate(ctx context.Context) error {
	var cur schemaRecord
	err := s.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableSchema, schemaID, &cur) })
	switch {
	case errors.Is(err, kv.ErrNotFound):
		cur.Version = 1
	case err != nil:
		return fmt.Errorf("read the store's schema version: %w", err)
	}
	if cur.Version > schemaCurrent {
		return fmt.Errorf("the store has schema version %d; this coffer knows up to %d: run a newer coffer (or restore a backup taken by this version)", cur.Version, schemaCurrent)
	}
	for v := cur.Version; v < schemaCurrent; v++ {
		after := ""
		for {
			var done bool
			err := s.update(ctx, systemPrincipal, "store.migrate", func(tx *kv.Txn, c *change) error {
				c.set("from_version", strconv.Itoa(v), "to_version", strconv.Itoa(v+1))
				var err error
				if after, done, err = migrations[v](tx, after); err != nil || !done {
					return err
				}
				return tx.Put(tableSchema, schemaID, schemaRecord{Version: v + 1})
			})
			if err != nil {
				return fmt.Errorf("migrate the store from schema version %d to %d: %w", v, v+1, err)
			}
			if done {
				break
			}
		}
	}
	return nil
}
