package daemon

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// smallTxnMemTable gives transactions of at most ~150 KiB (~1,600
// entries): a full batch of the re-wrap or the sweep does not fit.
const smallTxnMemTable = 1 << 20

// A re-wrap batch over the store's transaction limit is committed in
// smaller parts, and every record still ends up under the new KEK.
func TestRotateKEKBatchOverTransactionLimit(t *testing.T) {
	e := newEnvStore(t, newFakeKeys(), smallTxnMemTable)
	ctx := context.Background()
	want := map[string][]byte{}
	for i := range 300 {
		// ~1 KiB of key values each: 256 records are far over the limit.
		p := []byte(fmt.Sprintf("payload-%d", i))
		in := SecretInput{DisplayName: fmt.Sprintf("s%d", i), Payload: bytes.Clone(p), KeyValues: map[string]string{"k": strings.Repeat("v", 1024)}}
		want[e.createSecret(t, "default", in).ID] = p
	}
	if _, err := e.svc.RotateKEK(ctx, e.grant(t, ActManageKeys, Resource{})); err != nil {
		t.Fatal(err)
	}
	waitRewrap(t, e.svc)
	e.checkSecrets(t, want, "fake-kek-2")
	keys, err := e.svc.HSMKeys(ctx, e.grant(t, ActManageKeys, Resource{}))
	if err != nil {
		t.Fatal(err)
	}
	if r := keys.Rotation; r == nil || r.State != RotationDone || r.Rewrapped != 300 || r.Failed != 0 {
		t.Fatalf("rotation %+v, want done with 300 re-wrapped", r)
	}
}

// A sweep with more expired sessions than one transaction can delete
// deletes them all, in smaller transactions.
func TestSweepOverTransactionLimit(t *testing.T) {
	e := newEnvStore(t, newFakeKeys(), smallTxnMemTable)
	ctx := context.Background()
	past := time.Now().Add(-time.Hour).UTC()
	const n = 1500
	for start := 0; start < n; start += 100 {
		err := e.store.Update(ctx, func(tx *kv.Txn) error {
			for i := start; i < start+100; i++ {
				sess := sessionRecord{ID: fmt.Sprintf("01a20000-0000-7000-8000-%012d", i), Kind: SessionLogin,
					UserID: "01a20000-0000-7000-8000-aaaaaaaaaaaa", ProjectID: "01a20000-0000-7000-8000-bbbbbbbbbbbb",
					CredentialID: "01a20000-0000-7000-8000-cccccccccccc", CreatedAt: past, ExpiresAt: &past}
				if err := tx.Put(tableSessions, sess.ID, sess, sess.indexes()...); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.svc.Sweep(ctx)
	if err != nil || got != n {
		t.Fatalf("sweep deleted %d (%v), want %d", got, err, n)
	}
	var left int
	if err := e.store.View(ctx, func(tx *kv.Txn) error {
		return tx.List(tableSessions, kv.Query{}, func(string, func(any) error) error { left++; return nil })
	}); err != nil || left != 0 {
		t.Fatalf("%d sessions left (%v)", left, err)
	}
}
