package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// reopen closes e's service and starts a new one over the same store
// directory and keys, like a daemon restart.
func (e *testEnv) reopen(t *testing.T) {
	t.Helper()
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}
	store, err := kv.Open(context.Background(), kv.Options{Dir: e.dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	logs := &lockedBuffer{}
	svc, err := New(context.Background(), Config{Version: "test", Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, e.keys, store)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	e.svc, e.store, e.logs = svc, store, &logs.Buffer
}

// makeSecrets creates n secrets with random payloads (every third with
// key_values) and returns what each must deliver.
func (e *testEnv) makeSecrets(t *testing.T, n int) map[string][]byte {
	t.Helper()
	want := map[string][]byte{}
	for i := range n {
		p := make([]byte, 1+i%300)
		rand.Read(p)
		in := SecretInput{DisplayName: fmt.Sprintf("s%d", i), Payload: bytes.Clone(p)}
		if i%3 == 0 {
			in.KeyValues = map[string]string{"k": fmt.Sprint(i)}
		}
		want[e.createSecret(t, "default", in).ID] = p
	}
	return want
}

// checkSecrets opens every secret in want and compares its payload, and
// checks that each is wrapped by kek.
func (e *testEnv) checkSecrets(t *testing.T, want map[string][]byte, kek string) {
	t.Helper()
	ctx := context.Background()
	sealed := sealedRecords(t, e.svc)
	if len(sealed) != len(want) {
		t.Fatalf("%d sealed records, want %d", len(sealed), len(want))
	}
	for id, p := range want {
		var rec secretRecord
		if err := e.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableSecrets, id, &rec) }); err != nil {
			t.Fatal(err)
		}
		blob := sealed[id]
		if blob.Sealed == nil || blob.Sealed.KEK != kek {
			t.Fatalf("secret %s is wrapped by %v, want %s", id, blob.Sealed, kek)
		}
		plain, payload, _, err := e.svc.open(ctx, rec, blob)
		if err != nil {
			t.Fatalf("open secret %s: %v", id, err)
		}
		if !bytes.Equal(payload, p) {
			t.Fatalf("secret %s delivers %d bytes that differ from its %d-byte payload", id, len(payload), len(p))
		}
		clear(plain)
	}
}

func (e *testEnv) refs(t *testing.T, label string) int {
	t.Helper()
	var n int
	if err := e.store.View(context.Background(), func(tx *kv.Txn) error {
		var err error
		n, err = kekRefs(tx, label)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func waitRewrap(t *testing.T, s *Service) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := s.waitRewrap(ctx); err != nil {
		t.Fatalf("re-wrap did not end: %v", err)
	}
}

func TestRotateKEK(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	want := e.makeSecrets(t, 600) // three batches
	before := sealedRecords(t, e.svc)
	admin := e.grant(t, ActManageKeys, Resource{})

	rot, err := e.svc.RotateKEK(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if rot.Target != "fake-kek-2" || rot.Previous != "fake-kek-1" || rot.State != RotationRunning {
		t.Fatalf("RotateKEK = %+v", rot)
	}
	waitRewrap(t, e.svc)
	e.checkSecrets(t, want, "fake-kek-2")
	for id, b := range sealedRecords(t, e.svc) {
		old := before[id]
		if !bytes.Equal(b.Sealed.Ciphertext, old.Sealed.Ciphertext) || !bytes.Equal(b.Sealed.Nonce, old.Sealed.Nonce) || b.Version != old.Version {
			t.Fatalf("secret %s: the payload ciphertext changed", id)
		}
		if bytes.Equal(b.Sealed.WrappedDEK, old.Sealed.WrappedDEK) || bytes.Equal(b.Sealed.WrapNonce, old.Sealed.WrapNonce) {
			t.Fatalf("secret %s: the DEK was not re-wrapped", id)
		}
	}
	if e.keys.rewraps != 600 {
		t.Errorf("%d re-wraps, want 600", e.keys.rewraps)
	}

	keys, err := e.svc.HSMKeys(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.KEKs) != 2 || keys.KEKs[0] != (KEKVersion{"fake-kek-1", 1, false, "aes-256-gcm", 0}) || keys.KEKs[1] != (KEKVersion{"fake-kek-2", 2, true, "aes-256-gcm", 600}) {
		t.Fatalf("KEKs %+v", keys.KEKs)
	}
	r := keys.Rotation
	if r == nil || r.State != RotationDone || r.Target != "fake-kek-2" || r.Previous != "fake-kek-1" || r.Rewrapped != 600 || r.Failed != 0 || r.Remaining != 0 || r.FinishedAt == nil {
		t.Fatalf("rotation %+v", r)
	}

	// New secrets use the new KEK.
	s := e.createSecret(t, "default", SecretInput{DisplayName: "new", Payload: []byte("fresh")})
	want[s.ID] = []byte("fresh")
	e.checkSecrets(t, want, "fake-kek-2")

	// Remove: never the current KEK, never an unknown one.
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-2", RemoveKEKOptions{}), CodeConflict)
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-9", RemoveKEKOptions{}), CodeNotFound)
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), "")
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), CodeNotFound)
	if _, ok := e.keys.keks["fake-kek-1"]; ok {
		t.Fatal("fake-kek-1 is still on the token")
	}
	e.checkSecrets(t, want, "fake-kek-2")

	// Only system admins.
	if _, err := e.svc.Authorize(ctx, userPrincipal, ActManageKeys, Resource{}); CodeOf(err) != CodeForbidden {
		t.Fatalf("a non-admin may manage keys: %v", err)
	}
	other := e.grant(t, ActManageProjects, Resource{})
	_, err = e.svc.RotateKEK(ctx, other)
	wantCode(t, err, CodeForbidden)
	wantCode(t, e.svc.RemoveKEK(ctx, other, "fake-kek-1", RemoveKEKOptions{}), CodeForbidden)
	_, err = e.svc.HSMKeys(ctx, other)
	wantCode(t, err, CodeForbidden)
}

func TestRotateKEKResumesAfterInterruption(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	want := e.makeSecrets(t, 600)
	admin := e.grant(t, ActManageKeys, Resource{})

	// The daemon stops after the first batch.
	batches := 0
	first := e.svc
	first.kek.afterBatch = func() {
		batches++
		first.bgCancel()
	}
	if _, err := e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	waitRewrap(t, e.svc)
	if batches != 1 {
		t.Fatalf("%d batches before the stop, want 1", batches)
	}
	st, ok, err := e.svc.loadKEKRotation(ctx)
	if err != nil || !ok || st.FinishedAt != nil || st.Rewrapped != rewrapBatch || st.Source != "fake-kek-1" || st.Cursor == "" || st.Target != "fake-kek-2" {
		t.Fatalf("state after the stop %+v %v %v", st, ok, err)
	}
	if n := e.refs(t, "fake-kek-1"); n != 600-rewrapBatch {
		t.Fatalf("%d records left on fake-kek-1, want %d", n, 600-rewrapBatch)
	}
	keys, err := e.svc.HSMKeys(ctx, admin)
	if err != nil || keys.Rotation.State != RotationInterrupted || keys.Rotation.Remaining != 600-rewrapBatch {
		t.Fatalf("rotation %+v %v", keys.Rotation, err)
	}
	// Nothing may be removed or rotated until it is done.
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), CodeConflict)

	// While it is stopped, secrets change: one not yet re-wrapped is
	// rotated, another deleted, one already re-wrapped rotated.
	sealed := sealedRecords(t, e.svc)
	var todo, done []string
	for id, b := range sealed {
		if b.Sealed.KEK == "fake-kek-1" {
			todo = append(todo, id)
		} else {
			done = append(done, id)
		}
	}
	rotate := func(id string, p []byte) {
		if _, err := e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: id}), RotateInput{Payload: bytes.Clone(p)}); err != nil {
			t.Fatal(err)
		}
		want[id] = p
	}
	rotate(todo[0], []byte("rotated while stopped"))
	rotate(done[0], []byte("rotated after re-wrap"))
	if err := e.svc.DeleteSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: todo[1]})); err != nil {
		t.Fatal(err)
	}
	delete(want, todo[1])
	rewrapsBefore := e.keys.rewraps

	// The restart carries on from the cursor.
	e.reopen(t)
	waitRewrap(t, e.svc)
	e.checkSecrets(t, want, "fake-kek-2")
	if n := e.refs(t, "fake-kek-1"); n != 0 {
		t.Fatalf("%d records still on fake-kek-1", n)
	}
	resumed := 600 - rewrapBatch - 2 // minus the rotated and the deleted one
	if got := e.keys.rewraps - rewrapsBefore; got != resumed {
		t.Fatalf("the resumed re-wrap made %d HSM re-wraps, want %d (nothing done twice)", got, resumed)
	}
	st, _, _ = e.svc.loadKEKRotation(ctx)
	if st.FinishedAt == nil || st.Rewrapped != rewrapBatch+resumed || st.Failed != 0 {
		t.Fatalf("state after resuming %+v", st)
	}
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), "")
	e.checkSecrets(t, want, "fake-kek-2")
}

func TestRotateKEKTokenAheadOfStore(t *testing.T) {
	// A crash right after the HSM made the new KEK: the store knows
	// nothing of it. The next start re-wraps to it.
	e := newEnv(t)
	want := e.makeSecrets(t, 10)
	if _, err := e.keys.RotateKEK(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.reopen(t)
	waitRewrap(t, e.svc)
	e.checkSecrets(t, want, "fake-kek-2")
	st, ok, err := e.svc.loadKEKRotation(context.Background())
	if err != nil || !ok || st.FinishedAt == nil || st.Target != "fake-kek-2" || st.Rewrapped != 10 {
		t.Fatalf("state %+v %v %v", st, ok, err)
	}
}

func TestRotateKEKWhileRunning(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	want := e.makeSecrets(t, 300)
	admin := e.grant(t, ActManageKeys, Resource{})
	hold, release := make(chan struct{}), make(chan struct{})
	e.svc.kek.afterBatch = func() {
		select {
		case hold <- struct{}{}:
			<-release
		default:
		}
	}
	if _, err := e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	<-hold // the first batch is committed; the re-wrap waits
	_, err := e.svc.RotateKEK(ctx, admin)
	wantCode(t, err, CodeConflict)
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), CodeConflict)
	keys, err := e.svc.HSMKeys(ctx, admin)
	if err != nil || keys.Rotation.State != RotationRunning || keys.Rotation.Rewrapped != rewrapBatch || keys.Rotation.Remaining != 300-rewrapBatch {
		t.Fatalf("rotation %+v %v", keys.Rotation, err)
	}
	// Secrets work during the rotation, under either KEK.
	e.checkSecretsAnyKEK(t, want)
	close(release)
	waitRewrap(t, e.svc)
	e.checkSecrets(t, want, "fake-kek-2")
	// The next rotation goes on to version 3.
	rot, err := e.svc.RotateKEK(ctx, admin)
	if err != nil || rot.Target != "fake-kek-3" || rot.Previous != "fake-kek-2" {
		t.Fatalf("second rotation %+v %v", rot, err)
	}
	waitRewrap(t, e.svc)
	e.checkSecrets(t, want, "fake-kek-3")
}

// checkSecretsAnyKEK opens every secret without checking its KEK.
func (e *testEnv) checkSecretsAnyKEK(t *testing.T, want map[string][]byte) {
	t.Helper()
	ctx := context.Background()
	for id, blob := range sealedRecords(t, e.svc) {
		var rec secretRecord
		if err := e.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableSecrets, id, &rec) }); err != nil {
			t.Fatal(err)
		}
		plain, payload, _, err := e.svc.open(ctx, rec, blob)
		if err != nil || !bytes.Equal(payload, want[id]) {
			t.Fatalf("secret %s during rotation: %v", id, err)
		}
		clear(plain)
	}
}

func TestRemoveKEKRefusedWhileReferenced(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	want := e.makeSecrets(t, 5)
	admin := e.grant(t, ActManageKeys, Resource{})
	// One envelope is damaged: it cannot be re-wrapped and keeps the old
	// KEK in use.
	var bad string
	for id := range want {
		bad = id
		break
	}
	if err := e.store.Update(ctx, func(tx *kv.Txn) error {
		var r sealedRecord
		if err := tx.Get(tableSealed, bad, &r); err != nil {
			return err
		}
		r.Sealed.WrappedDEK[0] ^= 1
		return putSealed(tx, bad, r)
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	waitRewrap(t, e.svc)
	keys, err := e.svc.HSMKeys(ctx, admin)
	if err != nil || keys.Rotation.State != RotationDone || keys.Rotation.Failed != 1 || keys.Rotation.Rewrapped != 4 || keys.Rotation.Remaining != 1 {
		t.Fatalf("rotation %+v %v", keys.Rotation, err)
	}
	if !bytes.Contains(e.logs.Bytes(), []byte("sealed record does not open")) || !bytes.Contains(e.logs.Bytes(), []byte(bad)) {
		t.Fatalf("the damaged record is not logged:\n%s", e.logs)
	}
	err = e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{})
	wantCode(t, err, CodeConflict)
	if MessageOf(err) != "KEK fake-kek-1 still wraps 1 sealed records; rotate the KEK first" {
		t.Fatalf("message %q", MessageOf(err))
	}
	if _, ok := e.keys.keks["fake-kek-1"]; !ok {
		t.Fatal("a referenced KEK was destroyed")
	}
	// A restart does not retry the damaged record again and again.
	rewraps := e.keys.rewraps
	e.reopen(t)
	waitRewrap(t, e.svc)
	if e.keys.rewraps != rewraps {
		t.Fatalf("a restart retried %d known failures", e.keys.rewraps-rewraps)
	}
	// Once the record is gone, the KEK can go.
	if err := e.svc.DeleteSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: bad})); err != nil {
		t.Fatal(err)
	}
	delete(want, bad)
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), "")
	e.checkSecrets(t, want, "fake-kek-2")
}

func TestKEKIndexBackfill(t *testing.T) {
	// Sealed records written before the KEK index existed are indexed at
	// the next start, so they count when a KEK is removed.
	e := newEnv(t)
	ctx := context.Background()
	want := e.makeSecrets(t, 300)
	if err := e.store.Update(ctx, func(tx *kv.Txn) error {
		if err := tx.Delete(tableKeyState, stateKEKIndex); err != nil {
			return err
		}
		for id := range want {
			var r sealedRecord
			if err := tx.Get(tableSealed, id, &r); err != nil {
				return err
			}
			if err := tx.Put(tableSealed, id, r); err != nil { // no index
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n := e.refs(t, "fake-kek-1"); n != 0 {
		t.Fatalf("%d indexed records after dropping the index", n)
	}
	e.reopen(t)
	if n := e.refs(t, "fake-kek-1"); n != 300 {
		t.Fatalf("%d indexed records after the backfill, want 300", n)
	}
	e.checkSecrets(t, want, "fake-kek-1")
}

// TestRotateKEKMovesStoreKey: the store key sealed by the KEK (store.key)
// moves to the new KEK with the records, and a KEK that still seals it is
// not removed.
func TestRotateKEKMovesStoreKey(t *testing.T) {
	keys := newFakeKeys()
	state := t.TempDir()
	ctx := context.Background()
	cfg := Config{StateDir: state, Logger: slog.New(slog.DiscardHandler)}
	open := func() *Service {
		t.Helper()
		store, err := openStore(ctx, cfg, keys)
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(ctx, cfg, keys, store)
		if err != nil {
			store.Close()
			t.Fatal(err)
		}
		t.Cleanup(func() { svc.Close() })
		return svc
	}
	svc := open()
	admin := mustGrant(t, svc, ActManageKeys, Resource{})
	path := filepath.Join(state, storeKeyName)
	before, err := readStoreKeyFile(path)
	if err != nil || before.Sealed.KEK != "fake-kek-1" {
		t.Fatalf("store.key %+v %v", before, err)
	}
	oldFile, _ := os.ReadFile(path)

	if _, err := svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	waitRewrap(t, svc)
	after, err := readStoreKeyFile(path)
	if err != nil || after.Sealed.KEK != "fake-kek-2" || !bytes.Equal(after.Sealed.Ciphertext, before.Sealed.Ciphertext) || bytes.Equal(after.Sealed.WrappedDEK, before.Sealed.WrappedDEK) {
		t.Fatalf("store.key after rotation: KEK %s, %v", after.Sealed.KEK, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("store.key mode %v %v", fi.Mode(), err)
	}

	// A store.key still under the old KEK keeps it.
	if err := os.WriteFile(path, oldFile, 0o600); err != nil {
		t.Fatal(err)
	}
	err = svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{})
	wantCode(t, err, CodeConflict)
	if MessageOf(err) != "KEK fake-kek-1 still seals the store key (store.key); rotate the KEK first" {
		t.Fatalf("message %q", MessageOf(err))
	}
	// The next start re-seals it; then the old KEK can go, and the store
	// still opens.
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	svc = open()
	wantCode(t, svc.RemoveKEK(ctx, mustGrant(t, svc, ActManageKeys, Resource{}), "fake-kek-1", RemoveKEKOptions{}), "")
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	svc = open() // a start after the removal still finds store.key under the new KEK
	if f, _ := readStoreKeyFile(path); f.Sealed.KEK != "fake-kek-2" {
		t.Fatalf("store.key KEK %s", f.Sealed.KEK)
	}
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
}
