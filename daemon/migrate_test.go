package daemon

import (
	"context"
	"fmt"
	"testing"

	"github.com/coffer-hsm/coffer/kv"
)

// A store of schema version 1 (user bindings unique per user and name) is
// migrated at start, in transactions of migrateBatch records: every user
// binding gets the per-project index, the old unique entry goes, and the
// store records version 2.
func TestMigrateBindingsToPerProjectNames(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	p1 := e.grant(t, ActReadProject, Resource{Project: "p1"}).project.ID
	var carol userRecord
	if err := e.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		carol, err = findUser(tx, "carol")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	const n = migrateBatch + 44
	// Write bindings as version 1 did, and forget the schema version.
	if err := e.store.Update(ctx, func(tx *kv.Txn) error {
		for i := range n {
			b := bindingRecord{ID: newID(), SecretID: e.secret.ID, ProjectID: p1, Kind: BindUser, UserID: carol.ID, Name: fmt.Sprintf("n%d", i)}
			if err := tx.Put(tableBindings, b.ID, b,
				kv.Index{Name: indexSecret, Value: b.SecretID},
				kv.Index{Name: indexUserName, Value: b.UserID + "/" + b.Name, Unique: true},
				kv.Index{Name: indexUser, Value: b.UserID}); err != nil {
				return err
			}
		}
		return tx.Delete(tableSchema, schemaID)
	}); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.store.View(ctx, func(tx *kv.Txn) error {
		var v schemaRecord
		if err := tx.Get(tableSchema, schemaID, &v); err != nil || v.Version != schemaCurrent {
			return fmt.Errorf("schema %+v %v", v, err)
		}
		for _, i := range []int{0, n - 1} {
			name := fmt.Sprintf("n%d", i)
			if _, err := tx.LookupUnique(tableBindings, indexUserProjectName, carol.ID+"/"+p1+"/"+name); err != nil {
				return fmt.Errorf("binding %s by its new index: %w", name, err)
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// carol receives under the old names, and a second binding of the same
	// name in another project is no clash any more.
	if d, err := e.svc.Deliver(ctx, uidPrincipal(1003), DeliveryRequest{Name: fmt.Sprintf("n%d", n-1)}); err != nil || string(d.Payload) != "p" {
		t.Fatalf("delivery after the migration: %q %v", d.Payload, err)
	}
	migrations := 0
	for _, ev := range e.changes(t) {
		if ev.Action == "store.migrate" {
			migrations++
		}
	}
	if migrations < 2 {
		t.Errorf("%d store.migrate changes, want one per batch (at least 2 for %d bindings)", migrations, n)
	}
}
