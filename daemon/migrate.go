package daemon

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/coffer-hsm/coffer/kv"
)

// The store's schema version, kept in tableSchema under schemaID. A store
// made before it existed is version 1. Migrations run once, at start, in
// order, each in one transaction that also records the new version.
const (
	tableSchema   = "schema"
	schemaID      = "version"
	schemaCurrent = 2
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
