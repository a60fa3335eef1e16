package daemon

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/hostseal"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	importPayload = "IMPORTED-PAYLOAD-3c9e71"
	importValue   = "IMPORTED-VALUE-8d02aa"
)

// sealFor seals the test payload and key value to pub for project.
func sealFor(t *testing.T, pub *rsa.PublicKey, project, displayName string) *hostseal.File {
	t.Helper()
	f, err := hostseal.Seal(pub, project, displayName, hostseal.Contents{
		Payload: []byte(importPayload), KeyValues: map[string]string{"token": importValue},
	}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// opened returns the payload and key values a secret holds.
func (e *testEnv) opened(t *testing.T, id string) ([]byte, map[string]string) {
	t.Helper()
	var rec secretRecord
	var blob sealedRecord
	err := e.store.View(context.Background(), func(tx *kv.Txn) error {
		if err := tx.Get(tableSecrets, id, &rec); err != nil {
			return err
		}
		return tx.Get(tableSealed, id, &blob)
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, payload, kvs, err := e.svc.open(context.Background(), rec, blob)
	if err != nil {
		t.Fatal(err)
	}
	out := bytes.Clone(payload)
	clear(plain)
	return out, kvs
}

func (e *testEnv) count(t *testing.T, table string) int {
	t.Helper()
	var n int
	if err := e.store.View(context.Background(), func(tx *kv.Txn) error {
		var err error
		n, err = tx.Count(table, kv.Query{})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestImportSecret(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	f := sealFor(t, e.keys.ImportPublicKey(), DefaultProject, "db password")
	g := e.grant(t, ActManageProject, Resource{Project: DefaultProject})

	sec, err := e.svc.ImportSecret(ctx, g, f)
	if err != nil {
		t.Fatal(err)
	}
	if sec.DisplayName != "db password" || sec.Project != DefaultProject || sec.Version != 1 || sec.Status != StatusActive {
		t.Fatalf("imported secret = %+v", sec)
	}
	payload, kvs := e.opened(t, sec.ID)
	if string(payload) != importPayload || len(kvs) != 1 || kvs["token"] != importValue {
		t.Fatalf("the secret holds %d payload bytes and %d key values, not what was sealed", len(payload), len(kvs))
	}
	// Resealed under the KEK: one seal, one unwrap.
	if e.keys.seals != 1 || e.keys.unwraps != 1 {
		t.Errorf("%d seals, %d unwraps; want 1 and 1", e.keys.seals, e.keys.unwraps)
	}
	// Audited as a secret create, naming the sealed file.
	if _, ok := findEvent(e.changes(t), "secret.create", "ok", map[string]string{"secret": sec.ID, "sealed": f.ID}); !ok {
		t.Errorf("no audit event for the import: %+v", e.changes(t))
	}

	// The same file again: refused, nothing new stored.
	_, err = e.svc.ImportSecret(ctx, g, f)
	wantCode(t, err, CodeSealedSecretReplayed)
	if !strings.Contains(err.Error(), f.ID) || !strings.Contains(err.Error(), sec.ID) {
		t.Errorf("replay error %q does not name the file and the first secret", err)
	}
	if n := e.count(t, tableSecrets); n != 1 {
		t.Fatalf("%d secrets after a replay, want 1", n)
	}
	// Still refused after the secret is deleted: the id stays consumed.
	if err := e.svc.DeleteSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID})); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.ImportSecret(ctx, g, f)
	wantCode(t, err, CodeSealedSecretReplayed)

	// The project may be named by id.
	byID := e.grant(t, ActManageProject, Resource{Project: sec.ProjectID})
	if _, err := e.svc.ImportSecret(ctx, byID, sealFor(t, e.keys.ImportPublicKey(), DefaultProject, "by id")); err != nil {
		t.Fatalf("import into the project named by id: %v", err)
	}
}

func TestImportSecretErrors(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "other"); err != nil {
		t.Fatal(err)
	}
	pub := e.keys.ImportPublicKey()
	otherHost, err := rsa.GenerateKey(rand.Reader, hostseal.MinKeyBits)
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(*hostseal.File)) *hostseal.File {
		s := sealFor(t, pub, DefaultProject, "x")
		f(s)
		return s
	}
	flip := func(b []byte, i int) []byte { c := bytes.Clone(b); c[i] ^= 1; return c }
	tests := []struct {
		name string
		file *hostseal.File
		fail error // the HSM fails with it
		want string
	}{
		{"sealed to another host", sealFor(t, &otherHost.PublicKey, DefaultProject, "x"), nil, CodeSealedForOtherHost},
		{"display name edited", edit(func(f *hostseal.File) { f.DisplayName = "y" }), nil, CodeInvalidSealedSecret},
		{"ciphertext byte flipped", edit(func(f *hostseal.File) { f.Ciphertext = flip(f.Ciphertext, 3) }), nil, CodeInvalidSealedSecret},
		{"wrapped DEK byte flipped", edit(func(f *hostseal.File) { f.WrappedDEK = flip(f.WrappedDEK, 9) }), nil, CodeInvalidSealedSecret},
		{"created_at edited", edit(func(f *hostseal.File) { f.CreatedAt = f.CreatedAt.Add(time.Second) }), nil, CodeInvalidSealedSecret},
		{"id edited", edit(func(f *hostseal.File) { f.ID = strings.Repeat("0", 32) }), nil, CodeInvalidSealedSecret},
		{"project edited", edit(func(f *hostseal.File) { f.Project = "other" }), nil, CodeInvalidSealedSecret},
		{"fingerprint edited", edit(func(f *hostseal.File) { f.KeyFingerprint = "SHA256:00" }), nil, CodeSealedForOtherHost},
		{"unknown format", edit(func(f *hostseal.File) { f.Format = "coffer-sealed/v9" }), nil, CodeInvalidSealedSecret},
		{"id not hex", edit(func(f *hostseal.File) { f.ID = strings.Repeat("z", 32) }), nil, CodeInvalidSealedSecret},
		{"no nonce", edit(func(f *hostseal.File) { f.Nonce = nil }), nil, CodeInvalidSealedSecret},
		{"empty file", &hostseal.File{}, nil, CodeInvalidSealedSecret},
		{"sealed for another project", sealFor(t, pub, "other", "x"), nil, CodeSealedProjectMismatch},
		{"control character in the display name", sealFor(t, pub, DefaultProject, "bad\x07name"), nil, CodeInvalidDisplayName},
		{"HSM unavailable", sealFor(t, pub, DefaultProject, "x"), fmt.Errorf("%w: %w", hsm.ErrUnavailable, errFakeHSM), CodeHSMUnavailable},
	}
	g := e.grant(t, ActManageProject, Resource{Project: DefaultProject})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e.keys.setFail(tt.fail)
			defer e.keys.setFail(nil)
			_, err := e.svc.ImportSecret(ctx, g, tt.file)
			wantCode(t, err, tt.want)
			if strings.Contains(err.Error(), importPayload) || strings.Contains(MessageOf(err), importPayload) {
				t.Fatal("the error carries the payload")
			}
			if n, m := e.count(t, tableSecrets), e.count(t, tableImports); n != 0 || m != 0 {
				t.Fatalf("%d secrets and %d imports stored after a refused import", n, m)
			}
		})
	}
	// Refused files consumed nothing: the file the HSM failure refused
	// imports once the HSM is back.
	if _, err := e.svc.ImportSecret(ctx, g, tests[len(tests)-1].file); err != nil {
		t.Fatalf("import after the HSM is back: %v", err)
	}

	// Only a grant to manage the project imports.
	read := e.grant(t, ActReadProject, Resource{Project: DefaultProject})
	_, err = e.svc.ImportSecret(ctx, read, sealFor(t, pub, DefaultProject, "x"))
	wantCode(t, err, CodeForbidden)
	_, err = e.svc.ImportSecret(ctx, Grant{}, sealFor(t, pub, DefaultProject, "x"))
	wantCode(t, err, CodeForbidden)
}

// TestImportSecretConcurrentReplay: the same file imported at once from
// many goroutines makes exactly one secret.
func TestImportSecretConcurrentReplay(t *testing.T) {
	e := newEnv(t)
	f := sealFor(t, e.keys.ImportPublicKey(), DefaultProject, "once")
	g := e.grant(t, ActManageProject, Resource{Project: DefaultProject})
	const n = 8
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			_, errs[i] = e.svc.ImportSecret(context.Background(), g, f)
		})
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case CodeOf(err) != CodeSealedSecretReplayed:
			t.Errorf("import: %v, want success or %s", err, CodeSealedSecretReplayed)
		}
	}
	if ok != 1 || e.count(t, tableSecrets) != 1 {
		t.Fatalf("%d imports succeeded, %d secrets stored; want 1 and 1", ok, e.count(t, tableSecrets))
	}
}

func TestImportKey(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	root := e.grant(t, ActReadImportKey, Resource{})
	k, err := e.svc.ImportKey(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := hostseal.ParsePublicKey([]byte(k.PublicKeyPEM))
	if err != nil || !pub.Equal(e.keys.ImportPublicKey()) {
		t.Fatalf("PEM is not the import key: %v", err)
	}
	if fp, _ := hostseal.Fingerprint(pub); k.Fingerprint != fp || k.Algorithm != ImportAlgorithm {
		t.Fatalf("import key = %+v, want fingerprint %s", k, fp)
	}
	if _, err := e.svc.ImportKey(ctx, e.grant(t, ActReadStatus, Resource{})); CodeOf(err) != CodeForbidden {
		t.Fatalf("ImportKey with a status grant: %v", err)
	}

	// Who may read it: system admins and admins of some project.
	if _, err := e.svc.CreateUser(ctx, e.grant(t, ActManageUsers, Resource{}), UserInput{Name: "ann", UnixUIDs: []uint32{userPrincipal.UID}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "team"); err != nil {
		t.Fatal(err)
	}
	setRole := func(role string) {
		t.Helper()
		if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "team"}), "ann", role); err != nil {
			t.Fatal(err)
		}
	}
	for _, tt := range []struct {
		name string
		p    Principal
		role string // ann's role on team, "" for none
		want string
	}{
		{"root", rootPrincipal, "", ""},
		{"anonymous", anonPrincipal, "", CodeForbidden},
		{"vsock guest", vsockGuest, "", CodeForbidden},
		{"user without a role", userPrincipal, "", CodeForbidden},
		{"member", userPrincipal, "member", CodeForbidden},
		{"admin of a project", userPrincipal, "admin", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if tt.role != "" {
				setRole(tt.role)
			}
			_, err := e.svc.Authorize(ctx, tt.p, ActReadImportKey, Resource{})
			wantCode(t, err, tt.want)
		})
	}
}

func TestImportLeavesNothingInTheClear(t *testing.T) {
	e := newEnv(t)
	g := e.grant(t, ActManageProject, Resource{Project: DefaultProject})
	if _, err := e.svc.ImportSecret(context.Background(), g, sealFor(t, e.keys.ImportPublicKey(), DefaultProject, "x")); err != nil {
		t.Fatal(err)
	}
	e.svc.Close()
	for _, s := range []string{importPayload, importValue} {
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("log contains %q", s)
		}
	}
	err := filepath.Walk(e.dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, s := range []string{importPayload, importValue} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains %q in the clear", path, s)
			}
		}
		return nil
	})
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
}
