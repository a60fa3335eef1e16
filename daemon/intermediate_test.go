package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

// openModeService opens a Service on a SoftHSM token and state dir, with
// intermediate keys in mode.
func openModeService(t *testing.T, stateDir string, hcfg hsm.Config, mode hsm.IntermediateMode) *Service {
	t.Helper()
	hcfg.Intermediate = mode
	svc, err := Open(context.Background(), Config{StateDir: stateDir, HSM: hcfg, Version: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatalf("open (intermediate %s): %v", mode, err)
	}
	return svc
}

// sealedRecords reads every sealed record of svc.
func sealedRecords(t *testing.T, svc *Service) map[string]sealedRecord {
	t.Helper()
	out := map[string]sealedRecord{}
	err := svc.store.View(context.Background(), func(tx *kv.Txn) error {
		return tx.List(tableSealed, kv.Query{}, func(id string, decode func(any) error) error {
			var r sealedRecord
			if err := decode(&r); err != nil {
				return err
			}
			out[id] = r
			return nil
		})
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// keptIK returns the intermediate key svc keeps for kek (nil: none).
func keptIK(t *testing.T, svc *Service, kek string) *hsm.IntermediateKey {
	t.Helper()
	var ik hsm.IntermediateKey
	err := svc.store.View(context.Background(), func(tx *kv.Txn) error { return tx.Get(tableKeyState, stateIKPrefix+kek, &ik) })
	if err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil
		}
		t.Fatal(err)
	}
	return &ik
}

// waitForm waits until the sealed records of kek are in the form (with an
// intermediate key or without) the background migration moves them to.
func waitForm(t *testing.T, svc *Service, kek string, intermediate bool) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		var st formRecord
		err := svc.store.View(context.Background(), func(tx *kv.Txn) error { return tx.Get(tableKeyState, stateFormPrefix+kek, &st) })
		if err == nil && st.Done && st.Intermediate == intermediate {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("records of %s not moved (intermediate %v): %+v, %v", kek, intermediate, st, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// checkForm checks every sealed record is under kek, through ik when it
// is set (else directly), and that every unit delivers its payload.
func checkForm(t *testing.T, svc *Service, kek string, ik *hsm.IntermediateKey, want map[string][]byte) {
	t.Helper()
	recs := sealedRecords(t, svc)
	if len(recs) != len(want) {
		t.Fatalf("%d sealed records, want %d", len(recs), len(want))
	}
	for id, r := range recs {
		switch {
		case r.Sealed.KEK != kek:
			t.Fatalf("secret %s under %s, want %s", id, r.Sealed.KEK, kek)
		case ik == nil && r.Sealed.Intermediate != nil:
			t.Fatalf("secret %s has an intermediate key, want none", id)
		case ik != nil && (r.Sealed.Intermediate == nil || !bytes.Equal(r.Sealed.Intermediate.Wrapped, ik.Wrapped)):
			t.Fatalf("secret %s is not under the kept intermediate key", id)
		}
	}
	for cred, p := range want {
		d, err := svc.DeliverCredential(context.Background(), "app.service", cred)
		if err != nil || !bytes.Equal(d.Payload, p) {
			t.Fatalf("deliver %s: %d bytes, %v; want its %d-byte payload", cred, len(d.Payload), err, len(p))
		}
	}
}

// TestIntermediateKeysOnStore: a store sealed without intermediate keys
// (as every store before them) is moved to one kept intermediate key when
// the mode turns on, and every secret still delivers; restarts keep the
// key; a KEK rotation moves every record to the new KEK's key and removing
// the old KEK forgets its key; a backup restores and delivers; turning the
// mode off moves the records back.
func TestIntermediateKeysOnStore(t *testing.T) {
	if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
		t.Fatalf("SoftHSM is required (make test-deps installs it): %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	hcfg, err := hsm.PrepareDevToken(ctx, filepath.Join(dir, "hsm"), hsm.DefaultModulePath, "coffer-ik-test")
	if err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")

	// A store of before.
	svc := openModeService(t, state, hcfg, hsm.IntermediateOff)
	want := map[string][]byte{}
	create := func(svc *Service, i int) {
		p := []byte(fmt.Sprintf("PAYLOAD-%d-\x00\xff", i))
		in := SecretInput{DisplayName: fmt.Sprintf("s%d", i), Payload: bytes.Clone(p)}
		if i%2 == 0 {
			in.KeyValues = map[string]string{"k": "v"}
		}
		s, err := svc.CreateSecret(ctx, mustGrant(t, svc, ActManageProject, Resource{Project: "default"}), in)
		if err != nil {
			t.Fatal(err)
		}
		cred := fmt.Sprintf("cred%d", i)
		if _, err := svc.CreateBinding(ctx, mustGrant(t, svc, ActManageBindings, Resource{Secret: s.ID}), BindingInput{Unit: "app.service", Credential: cred}); err != nil {
			t.Fatal(err)
		}
		want[cred] = p
	}
	for i := range 6 {
		create(svc, i)
	}
	checkForm(t, svc, hsm.DefaultKEKLabel, nil, want)
	if keptIK(t, svc, hsm.DefaultKEKLabel) != nil {
		t.Fatal("mode off keeps an intermediate key")
	}
	svc.Close()

	// Mode on: the records move to the kept key.
	svc = openModeService(t, state, hcfg, hsm.IntermediateOn)
	ik1 := keptIK(t, svc, hsm.DefaultKEKLabel)
	if ik1 == nil || ik1.KEK != hsm.DefaultKEKLabel || ik1.Scheme != string(hsm.KEKAESGCM) {
		t.Fatalf("kept intermediate key %+v", ik1)
	}
	waitForm(t, svc, hsm.DefaultKEKLabel, true)
	create(svc, 6)
	checkForm(t, svc, hsm.DefaultKEKLabel, ik1, want)
	svc.Close()

	// A restart keeps the same key.
	svc = openModeService(t, state, hcfg, hsm.IntermediateOn)
	if ik := keptIK(t, svc, hsm.DefaultKEKLabel); ik == nil || !bytes.Equal(ik.Wrapped, ik1.Wrapped) {
		t.Fatal("a restart replaced the kept intermediate key")
	}
	create(svc, 7)
	checkForm(t, svc, hsm.DefaultKEKLabel, ik1, want)

	// KEK rotation: every record under the new KEK's key; removing the
	// old KEK forgets its key.
	rot, err := svc.RotateKEK(ctx, mustGrantKeys(t, svc))
	if err != nil {
		t.Fatal(err)
	}
	waitRewrap(t, svc)
	ik2 := keptIK(t, svc, rot.Target)
	if ik2 == nil || bytes.Equal(ik2.Wrapped, ik1.Wrapped) {
		t.Fatalf("kept intermediate key of %s: %+v", rot.Target, ik2)
	}
	checkForm(t, svc, rot.Target, ik2, want)
	if err := svc.RemoveKEK(ctx, mustGrantKeys(t, svc), hsm.DefaultKEKLabel, RemoveKEKOptions{}); err != nil {
		t.Fatal(err)
	}
	if keptIK(t, svc, hsm.DefaultKEKLabel) != nil {
		t.Fatal("the removed KEK's intermediate key is still kept")
	}
	checkForm(t, svc, rot.Target, ik2, want)

	// Backup and restore into another state dir: every secret delivers.
	var buf bytes.Buffer
	if _, err := svc.Backup(ctx, mustGrant(t, svc, ActBackup, Resource{}), &buf); err != nil {
		t.Fatal(err)
	}
	svc.Close()
	restored := filepath.Join(dir, "restored")
	if _, err := Restore(ctx, Config{StateDir: restored, HSM: hcfg, Logger: slog.New(slog.DiscardHandler)}, &buf, RestoreOptions{Source: "test"}); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	svc = openModeService(t, restored, hcfg, hsm.IntermediateOn)
	checkForm(t, svc, rot.Target, ik2, want)
	svc.Close()

	// Mode off: the records move back to the KEK itself.
	svc = openModeService(t, restored, hcfg, hsm.IntermediateOff)
	defer svc.Close()
	waitForm(t, svc, rot.Target, false)
	checkForm(t, svc, rot.Target, nil, want)
}

// TestKMSWithIntermediateKeys: the Kubernetes KMS ciphertext has no field
// for an intermediate key, so its seeds are sealed by the KEK itself in
// every mode, and they decrypt.
func TestKMSWithIntermediateKeys(t *testing.T) {
	if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
		t.Fatalf("SoftHSM is required (make test-deps installs it): %v", err)
	}
	ctx := context.Background()
	dir := t.TempDir()
	hcfg, err := hsm.PrepareDevToken(ctx, filepath.Join(dir, "hsm"), hsm.DefaultModulePath, "coffer-ik-kms")
	if err != nil {
		t.Fatal(err)
	}
	svc := openModeService(t, filepath.Join(dir, "state"), hcfg, hsm.IntermediateOn)
	defer svc.Close()
	seed := []byte("0123456789abcdef0123456789abcdef")
	ct, keyID, ann, err := svc.KMSEncrypt(ctx, seed)
	if err != nil {
		t.Fatal(err)
	}
	env, err := DecodeKMSEnvelope(ct)
	if err != nil || env.Intermediate != nil {
		t.Fatalf("KMS envelope: %v (intermediate key %v)", err, err == nil && env.Intermediate != nil)
	}
	pt, err := svc.KMSDecrypt(ctx, ct, keyID, ann)
	if err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("KMSDecrypt = %q, %v", pt, err)
	}
}
