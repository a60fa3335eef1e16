package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
)

// openSoftHSMService opens a Service the way the daemon does: a SoftHSM dev
// token, Badger on disk.
func openSoftHSMService(t *testing.T, dir string) *Service {
	t.Helper()
	if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
		t.Fatalf("SoftHSM is required (make test-deps installs it): %v", err)
	}
	ctx := context.Background()
	hcfg, err := hsm.PrepareDevToken(ctx, filepath.Join(dir, "hsm"), hsm.DefaultModulePath, "coffer-kms-test")
	if err != nil {
		t.Fatal(err)
	}
	svc, err := Open(ctx, Config{StateDir: filepath.Join(dir, "state"), HSM: hcfg, Version: "test", Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return svc
}

func mustGrantKeys(t *testing.T, svc *Service) Grant {
	t.Helper()
	g, err := svc.Authorize(context.Background(), rootPrincipal, ActManageKeys, Resource{})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestKmsSoftHSM: the whole KMS life on a real token: encrypt, decrypt,
// rotation (new key id, old ciphertexts still open), remove-kek refused
// while the KMS may need the old KEK, forced, and the old ciphertext gone
// with its KEK; the counts survive a restart.
func TestKmsSoftHSM(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	svc := openSoftHSMService(t, dir)
	closed := false
	t.Cleanup(func() {
		if !closed {
			svc.Close()
		}
	})
	seed := make([]byte, 32)
	rand.Read(seed)

	st := svc.KMSStatus(ctx)
	if !st.Healthy || st.Healthz != KMSHealthy || st.KeyID != "coffer-kek-1" {
		t.Fatalf("status %+v", st)
	}
	ct, keyID, ann, err := svc.KMSEncrypt(ctx, seed)
	if err != nil {
		t.Fatal(err)
	}
	if keyID != "coffer-kek-1" || string(ann[KMSAnnotationScheme]) != "1" || len(ann) != 1 {
		t.Fatalf("key id %q, annotations %q", keyID, ann)
	}
	if bytes.Contains(ct, seed) || bytes.Contains(ct, seed[:8]) || len(ct) > KMSMaxCiphertext {
		t.Fatalf("ciphertext of %d bytes holds the plaintext or is too long", len(ct))
	}
	pt, err := svc.KMSDecrypt(ctx, ct, keyID, ann)
	if err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("decrypt: %v", err)
	}

	// A KMS ciphertext is not a secret's envelope: the same sealed data
	// does not open with a secret's AAD.
	sealed, err := DecodeKMSEnvelope(ct)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.keys.Unseal(ctx, sealed, secretAAD("p", "s", 1)); err == nil {
		t.Fatal("a KMS ciphertext opened as a secret")
	}
	// Nor the reverse: a secret's envelope in KMS form does not decrypt.
	other, err := svc.keys.Seal(ctx, seed, secretAAD("p", "s", 1))
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := encodeKMSEnvelope(other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.KMSDecrypt(ctx, foreign, other.KEK, ann); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("a secret's envelope decrypted as KMS: %v", err)
	}

	// Bad input: each a clear invalid argument, and no plaintext in it.
	tampered := bytes.Clone(ct)
	tampered[len(tampered)-1] ^= 1
	for name, call := range map[string]func() error{
		"tampered":     func() error { _, err := svc.KMSDecrypt(ctx, tampered, keyID, ann); return err },
		"wrong key id": func() error { _, err := svc.KMSDecrypt(ctx, ct, "coffer-kek-9", ann); return err },
		"no annotations": func() error {
			_, err := svc.KMSDecrypt(ctx, ct, keyID, nil)
			return err
		},
		"other scheme": func() error {
			_, err := svc.KMSDecrypt(ctx, ct, keyID, map[string][]byte{KMSAnnotationScheme: []byte("2")})
			return err
		},
		"extra annotation": func() error {
			_, err := svc.KMSDecrypt(ctx, ct, keyID, map[string][]byte{KMSAnnotationScheme: []byte("1"), "x.example.com": nil})
			return err
		},
		"garbage":           func() error { _, err := svc.KMSDecrypt(ctx, []byte("hello"), keyID, ann); return err },
		"empty plaintext":   func() error { _, _, _, err := svc.KMSEncrypt(ctx, nil); return err },
		"plaintext too big": func() error { _, _, _, err := svc.KMSEncrypt(ctx, make([]byte, KMSMaxPlaintext+1)); return err },
	} {
		err := call()
		if CodeOf(err) != CodeInvalidArgument {
			t.Errorf("%s: %v, want invalid_argument", name, err)
		}
		if err != nil && strings.Contains(err.Error(), string(seed)) {
			t.Errorf("%s: the error holds the plaintext", name)
		}
	}

	// Rotation: a new key id at once; the old ciphertext still opens.
	admin := mustGrantKeys(t, svc)
	if _, err := svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if err := svc.waitRewrap(ctx); err != nil {
		t.Fatal(err)
	}
	if st := svc.KMSStatus(ctx); st.KeyID != "coffer-kek-2" || !st.Healthy {
		t.Fatalf("status after rotation %+v", st)
	}
	if pt, err := svc.KMSDecrypt(ctx, ct, keyID, ann); err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("old ciphertext after rotation: %v", err)
	}
	ct2, keyID2, ann2, err := svc.KMSEncrypt(ctx, seed)
	if err != nil || keyID2 != "coffer-kek-2" {
		t.Fatalf("encrypt after rotation: %q %v", keyID2, err)
	}

	// The old KEK wraps no sealed record, but the KMS used it just now.
	err = svc.RemoveKEK(ctx, admin, "coffer-kek-1", RemoveKEKOptions{})
	wantCode(t, err, CodeKEKInUse)
	if !strings.Contains(err.Error(), "kubectl replace") || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("the refusal does not say what to do: %v", err)
	}
	keys, err := svc.KMSKeys(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].KeyID != "coffer-kek-1" || keys[0].Encrypts != 1 || keys[0].Decrypts != 2 || keys[0].Current ||
		keys[1].KeyID != "coffer-kek-2" || !keys[1].Current || keys[1].Encrypts != 1 || !keys[0].NeedsForce || keys[1].NeedsForce {
		t.Fatalf("kms keys %+v", keys)
	}
	// Restart: the counts were written when the daemon stopped.
	closed = true
	if err := svc.Close(); err != nil {
		t.Fatal(err)
	}
	svc = openSoftHSMService(t, dir)
	closed = false
	admin = mustGrantKeys(t, svc)
	keys, err = svc.KMSKeys(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys) != 2 || keys[0].Encrypts != 1 || keys[0].Decrypts != 2 || keys[0].RetiredAt == nil || keys[1].Encrypts != 1 {
		t.Fatalf("kms keys after restart %+v", keys)
	}
	wantCode(t, svc.RemoveKEK(ctx, admin, "coffer-kek-1", RemoveKEKOptions{}), CodeKEKInUse)
	wantCode(t, svc.RemoveKEK(ctx, admin, "coffer-kek-1", RemoveKEKOptions{Force: true}), "")
	// Its ciphertexts went with it; the new ones open.
	if _, err := svc.KMSDecrypt(ctx, ct, keyID, ann); CodeOf(err) != CodeNotFound {
		t.Fatalf("decrypt under a removed KEK: %v, want not_found", err)
	}
	if pt, err := svc.KMSDecrypt(ctx, ct2, keyID2, ann2); err != nil || !bytes.Equal(pt, seed) {
		t.Fatalf("decrypt under the current KEK: %v", err)
	}
	// Force is no way around the rest: the current KEK stays.
	wantCode(t, svc.RemoveKEK(ctx, admin, "coffer-kek-2", RemoveKEKOptions{Force: true}), CodeConflict)
}

// TestKmsRemoveNeedsForce: a retired KEK the KMS used is never removed on
// silence alone: however long unused, RemoveKEK wants --force.
func TestKmsRemoveNeedsForce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var offset atomic.Int64
	e.svc.now = func() time.Time { return time.Now().UTC().Add(time.Duration(offset.Load())) }
	admin := e.grant(t, ActManageKeys, Resource{})

	seed := []byte("0123456789abcdef0123456789abcdef")
	ct, keyID, ann, err := e.svc.KMSEncrypt(ctx, seed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.waitRewrap(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.flushKMS(ctx); err != nil {
		t.Fatal(err)
	}
	err = e.svc.RemoveKEK(ctx, admin, keyID, RemoveKEKOptions{})
	wantCode(t, err, CodeKEKInUse)
	if !strings.Contains(err.Error(), "--force") || !strings.Contains(err.Error(), "restart kube-apiserver") {
		t.Fatalf("the refusal does not say what to do: %v", err)
	}
	if _, err := e.svc.KMSDecrypt(ctx, ct, keyID, ann); err != nil {
		t.Fatal(err)
	}
	offset.Store(int64(1000 * time.Hour)) // silent for weeks: still no proof
	if err := e.svc.flushKMS(ctx); err != nil {
		t.Fatal(err)
	}
	err = e.svc.RemoveKEK(ctx, admin, keyID, RemoveKEKOptions{})
	wantCode(t, err, CodeKEKInUse)
	if !strings.Contains(err.Error(), "1000h0m0s ago") {
		t.Fatalf("the refusal does not say how long the KEK was unused: %v", err)
	}
	keys, err := e.svc.KMSKeys(ctx, admin)
	if err != nil || len(keys) != 1 || !keys[0].NeedsForce {
		t.Fatalf("kms keys %+v %v", keys, err)
	}
	wantCode(t, e.svc.RemoveKEK(ctx, admin, keyID, RemoveKEKOptions{Force: true}), "")
	if _, ok := findEvent(e.changes(t), "k8s.kms_usage", "ok", nil); !ok {
		t.Fatal("no k8s.kms_usage change recorded")
	}
}

// TestKmsFirstUseSurvivesCrash: the first Encrypt under a key id is on
// record before it returns, so a daemon that dies before any flush (kill
// -9: what was counted in memory is lost) still keeps remove-kek from
// taking the KEK.
func TestKmsFirstUseSurvivesCrash(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	before := len(e.changes(t))
	if _, keyID, _, err := e.svc.KMSEncrypt(ctx, []byte("seed")); err != nil || keyID != "fake-kek-1" {
		t.Fatalf("encrypt: %q %v", keyID, err)
	}
	if n := len(e.changes(t)); n != before+1 {
		t.Fatalf("%d changes written by the first encrypt, want 1", n-before)
	}
	// Later uses under the same key id are coalesced: no write.
	for range 5 {
		if _, _, _, err := e.svc.KMSEncrypt(ctx, []byte("seed")); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.changes(t)); n != before+1 {
		t.Fatalf("%d changes written by later encrypts, want none", n-before-1)
	}
	// The crash: what is in memory is gone; the restart flushes nothing.
	e.svc.kms.mu.Lock()
	e.svc.kms.pending = nil
	e.svc.kms.mu.Unlock()
	e.reopen(t)
	admin := e.grant(t, ActManageKeys, Resource{})
	if _, err := e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.waitRewrap(ctx); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), CodeKEKInUse)
	keys, err := e.svc.KMSKeys(ctx, admin)
	if err != nil || len(keys) != 1 || keys[0].Encrypts != 1 || !keys[0].NeedsForce {
		t.Fatalf("kms keys after the crash %+v %v", keys, err)
	}
}

// TestKmsFirstUseEachLife: every daemon life writes the record of a key id
// at its first use, a Decrypt's too.
func TestKmsFirstUseEachLife(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ct, keyID, ann, err := e.svc.KMSEncrypt(ctx, []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	e.reopen(t) // a new daemon life: no key id known to be stored
	e.svc.kms.mu.Lock()
	stored := len(e.svc.kms.stored)
	e.svc.kms.mu.Unlock()
	if stored != 0 {
		t.Fatal("a new service knows stored key ids")
	}
	if pt, err := e.svc.KMSDecrypt(ctx, ct, keyID, ann); err != nil || string(pt) != "seed" {
		t.Fatalf("decrypt: %v", err)
	}
	e.svc.kms.mu.Lock()
	ok := e.svc.kms.stored[keyID]
	e.svc.kms.mu.Unlock()
	if !ok {
		t.Fatal("the first decrypt of this life did not write its key id's record")
	}
}

// TestKmsCheckWaitsForFlush: RemoveKEK's check cannot run between a flush
// taking the pending uses and committing them (it would see neither).
func TestKmsCheckWaitsForFlush(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	admin := e.grant(t, ActManageKeys, Resource{})
	if _, err := e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.waitRewrap(ctx); err != nil {
		t.Fatal(err)
	}
	// fake-kek-1 is retired; a use of it sits in memory only (as if its
	// record were written earlier in this life).
	e.svc.kms.mu.Lock()
	e.svc.kms.markStored("fake-kek-1")
	e.svc.kms.pendingUse("fake-kek-1").count(false, time.Now())
	e.svc.kms.mu.Unlock()
	taken, release := make(chan struct{}), make(chan struct{})
	e.svc.kms.afterTake = func() {
		close(taken)
		<-release
	}
	flushed := make(chan error, 1)
	go func() { flushed <- e.svc.flushKMS(ctx) }()
	<-taken
	checked := make(chan error, 1)
	go func() { checked <- e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}) }()
	select {
	case err := <-checked:
		t.Fatalf("RemoveKEK ran while a flush held the uses: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	wantCode(t, <-checked, CodeKEKInUse)
}

// TestKmsDecryptNamesNoKEK: an envelope naming a key that is not a KEK
// (the import key, the signing key) is refused before any HSM call.
func TestKmsDecryptNamesNoKEK(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ct, _, ann, err := e.svc.KMSEncrypt(ctx, []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := DecodeKMSEnvelope(ct)
	if err != nil {
		t.Fatal(err)
	}
	e.keys.setFail(hsm.ErrUnavailable) // any HSM call would answer unavailable
	for _, label := range []string{"coffer-import-1", "fake-signing-1", "coffer-kek-1", "fake-kek"} {
		other := *sealed
		other.KEK = label
		b, err := encodeKMSEnvelope(&other)
		if err != nil {
			t.Fatal(err)
		}
		_, err = e.svc.KMSDecrypt(ctx, b, label, ann)
		if CodeOf(err) != CodeInvalidArgument || !strings.Contains(err.Error(), "not a KEK") {
			t.Errorf("decrypt under %s: %v, want invalid_argument (not a KEK)", label, err)
		}
	}
	// A version of the KEK that is not on the token goes to the HSM.
	other := *sealed
	other.KEK = "fake-kek-7"
	b, _ := encodeKMSEnvelope(&other)
	if _, err := e.svc.KMSDecrypt(ctx, b, "fake-kek-7", ann); CodeOf(err) == CodeInvalidArgument {
		t.Errorf("decrypt under another KEK version: %v", err)
	}
}

// TestKmsNeverUsedKEKIsRemovable: a KEK the KMS never used is not held
// back.
func TestKmsNeverUsedKEKIsRemovable(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	admin := e.grant(t, ActManageKeys, Resource{})
	if _, err := e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.waitRewrap(ctx); err != nil {
		t.Fatal(err)
	}
	e.svc.KMSStatus(ctx) // the KMS is on, but used the new KEK only
	if _, _, _, err := e.svc.KMSEncrypt(ctx, []byte("seed")); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.svc.RemoveKEK(ctx, admin, "fake-kek-1", RemoveKEKOptions{}), "")
}

// TestKmsStatusIsCheap: Status does not ask the HSM on every call, and
// reports an HSM that stopped answering once its cached health is old.
func TestKmsStatusIsCheap(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if st := e.svc.KMSStatus(ctx); !st.Healthy || st.KeyID != "fake-kek-1" {
		t.Fatalf("status %+v", st)
	}
	e.keys.setFail(hsm.ErrUnavailable)
	if st := e.svc.KMSStatus(ctx); !st.Healthy {
		t.Fatal("status asked the HSM again within kmsHealthEvery")
	}
	e.svc.kms.healthMu.Lock()
	e.svc.kms.healthAt = time.Now().Add(-kmsHealthEvery)
	e.svc.kms.healthMu.Unlock()
	st := e.svc.KMSStatus(ctx)
	if st.Healthy || st.Healthz == KMSHealthy || st.KeyID != "fake-kek-1" {
		t.Fatalf("status with a failed HSM %+v", st)
	}
	if _, _, _, err := e.svc.KMSEncrypt(ctx, []byte("seed")); CodeOf(err) != CodeHSMUnavailable {
		t.Fatalf("encrypt with a failed HSM: %v", err)
	}
}

// TestKmsCountsCoalesce: many calls, one store write per flush.
func TestKmsCountsCoalesce(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	ct, keyID, ann, err := e.svc.KMSEncrypt(ctx, []byte("seed"))
	if err != nil {
		t.Fatal(err)
	}
	before := len(e.changes(t))
	for range 200 {
		if _, err := e.svc.KMSDecrypt(ctx, ct, keyID, ann); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.changes(t)); n != before {
		t.Fatalf("%d changes written by decrypts before any flush", n-before)
	}
	if err := e.svc.flushKMS(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.changes(t)); n != before+1 {
		t.Fatalf("%d changes for one flush", n-before)
	}
	keys, err := e.svc.KMSKeys(ctx, e.grant(t, ActManageKeys, Resource{}))
	if err != nil || len(keys) != 1 || keys[0].Encrypts != 1 || keys[0].Decrypts != 200 || keys[0].LastDecryptAt == nil {
		t.Fatalf("kms keys %+v %v", keys, err)
	}
}

func TestKmsEnvelopeRoundTrip(t *testing.T) {
	s := &hsm.Sealed{KEK: "coffer-kek-3", Scheme: "aes-256-gcm", WrapNonce: make([]byte, 12), WrappedDEK: make([]byte, 48), Nonce: make([]byte, 12), Ciphertext: make([]byte, 48)}
	b, err := encodeKMSEnvelope(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeKMSEnvelope(b)
	if err != nil || got.KEK != s.KEK || got.Scheme != s.Scheme || len(got.WrappedDEK) != 48 {
		t.Fatalf("%+v %v", got, err)
	}
	for _, bad := range [][]byte{nil, {2}, b[:len(b)-1], append(bytes.Clone(b), 0), make([]byte, KMSMaxCiphertext+1)} {
		if _, err := DecodeKMSEnvelope(bad); CodeOf(err) != CodeInvalidArgument {
			t.Errorf("decode %x: %v", bad, err)
		}
	}
	big := *s
	big.WrappedDEK = make([]byte, KMSMaxCiphertext)
	if _, err := encodeKMSEnvelope(&big); err == nil {
		t.Fatal("an envelope over 1 KiB was encoded")
	}
}

// FuzzDecodeKMSEnvelope: any input either fails with invalid_argument or
// decodes to an envelope that encodes back to the same bytes.
func FuzzDecodeKMSEnvelope(f *testing.F) {
	s := &hsm.Sealed{KEK: "coffer-kek-1", Scheme: "aes-256-gcm", WrapNonce: make([]byte, 12), WrappedDEK: make([]byte, 48), Nonce: make([]byte, 12), Ciphertext: make([]byte, 48)}
	b, _ := encodeKMSEnvelope(s)
	f.Add(b)
	f.Add([]byte{1, 0, 0})
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := DecodeKMSEnvelope(in)
		if err != nil {
			if CodeOf(err) != CodeInvalidArgument {
				t.Fatalf("error %v is not invalid_argument", err)
			}
			return
		}
		again, err := encodeKMSEnvelope(got)
		if err != nil || !bytes.Equal(again, in) {
			t.Fatalf("decode/encode is not the identity: %x -> %x (%v)", in, again, err)
		}
	})
}
