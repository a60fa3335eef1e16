package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/kv"
)

// useRestoreKeys makes Restore use keys instead of opening an HSM.
func useRestoreKeys(t *testing.T, keys Keys) {
	t.Helper()
	prev := restoreKeys
	restoreKeys = func(context.Context, Config) (Keys, error) { return keys, nil }
	t.Cleanup(func() { restoreKeys = prev })
}

// backupFixture is a service with a few secrets, one bound to a unit, and
// a backup of it.
type backupFixture struct {
	e        *testEnv
	secrets  []Secret
	payloads map[string]string // unit credential name -> payload
	backup   []byte
}

func newBackupFixture(t *testing.T) backupFixture {
	t.Helper()
	e := newEnv(t)
	ctx := context.Background()
	f := backupFixture{e: e, payloads: map[string]string{}}
	for i := range 4 {
		s := e.createSecret(t, "default", SecretInput{
			DisplayName: fmt.Sprintf("DISPLAYCANARY-%d", i),
			Payload:     []byte(fmt.Sprintf("PAYLOADCANARY-%d", i)),
			KeyValues:   map[string]string{"k": fmt.Sprintf("KVCANARY-%d", i)},
		})
		name := fmt.Sprintf("cred%d", i)
		if _, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: s.ID}), BindingInput{Unit: "app.service", Credential: name}); err != nil {
			t.Fatal(err)
		}
		f.secrets = append(f.secrets, s)
		f.payloads[name] = fmt.Sprintf("PAYLOADCANARY-%d", i)
	}
	var buf bytes.Buffer
	h, err := e.svc.Backup(ctx, e.grant(t, ActBackup, Resource{}), &buf)
	if err != nil {
		t.Fatalf("Backup: %v", err)
	}
	if h.KEKLabel != "fake-kek-1" || h.TokenLabel != "fake" || h.Format != BackupFormat {
		t.Errorf("header %+v", h)
	}
	f.backup = buf.Bytes()
	return f
}

// openRestored opens the state dir as the daemon would and returns its
// service.
func openRestored(t *testing.T, stateDir string, keys Keys) *Service {
	t.Helper()
	ctx := context.Background()
	cfg := Config{StateDir: stateDir, Logger: slog.New(slog.DiscardHandler)}
	store, err := openStore(ctx, cfg, keys)
	if err != nil {
		t.Fatalf("open restored store: %v", err)
	}
	svc, err := New(ctx, cfg, keys, store)
	if err != nil {
		store.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return svc
}

func restoreInto(stateDir string, backup []byte, force bool) error {
	cfg := Config{StateDir: stateDir, Logger: slog.New(slog.DiscardHandler)}
	_, err := Restore(context.Background(), cfg, bytes.NewReader(backup), RestoreOptions{Source: "test.backup", Force: force})
	return err
}

// entries lists what a directory holds.
func entries(t *testing.T, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}

func TestBackupAndRestore(t *testing.T) {
	f := newBackupFixture(t)
	for _, canary := range []string{"DISPLAYCANARY", "PAYLOADCANARY", "KVCANARY", "app.service", "cred0"} {
		if bytes.Contains(f.backup, []byte(canary)) {
			t.Errorf("%s in the clear in the backup", canary)
		}
	}
	useRestoreKeys(t, f.e.keys)
	state := t.TempDir()
	if err := restoreInto(state, f.backup, false); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	if got := strings.Join(entries(t, state), " "); got != "data store.key store.witness" {
		t.Errorf("state dir holds %q, want data, store.key and store.witness only", got)
	}
	svc := openRestored(t, state, f.e.keys)
	ctx := context.Background()
	for _, s := range f.secrets {
		g, err := svc.Authorize(ctx, rootPrincipal, ActReadSecret, Resource{Secret: s.ID})
		if err != nil {
			t.Fatal(err)
		}
		got, err := svc.GetSecret(ctx, g)
		if err != nil {
			t.Fatalf("secret %s after restore: %v", s.ID, err)
		}
		if fmt.Sprint(got) != fmt.Sprint(s) {
			t.Errorf("secret after restore\n%+v\nwant\n%+v", got, s)
		}
	}
	for name, want := range f.payloads {
		d, err := svc.DeliverCredential(ctx, "app.service", name)
		if err != nil || string(d.Payload) != want {
			t.Errorf("deliver %s after restore: %q, %v; want %q", name, d.Payload, err, want)
		}
	}
	// the restored store takes writes
	if _, err := svc.CreateSecret(ctx, mustGrant(t, svc, ActManageProject, Resource{Project: "default"}), SecretInput{DisplayName: "new", Payload: []byte("x")}); err != nil {
		t.Fatal(err)
	}
}

func mustGrant(t *testing.T, svc *Service, a Action, r Resource) Grant {
	t.Helper()
	g, err := svc.Authorize(context.Background(), rootPrincipal, a, r)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestBackupRefusals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	t.Run("not a system admin", func(t *testing.T) {
		_, err := e.svc.Authorize(ctx, userPrincipal, ActBackup, Resource{})
		wantCode(t, err, CodeForbidden)
	})
	t.Run("grant for another action", func(t *testing.T) {
		var buf bytes.Buffer
		_, err := e.svc.Backup(ctx, e.grant(t, ActManageProjects, Resource{}), &buf)
		wantCode(t, err, CodeForbidden)
		if buf.Len() != 0 {
			t.Errorf("%d bytes written", buf.Len())
		}
	})
	t.Run("HSM down", func(t *testing.T) {
		g := e.grant(t, ActBackup, Resource{})
		e.keys.setFail(errFakeHSM)
		defer e.keys.setFail(nil)
		var buf bytes.Buffer
		_, err := e.svc.Backup(ctx, g, &buf)
		wantCode(t, err, CodeHSMUnavailable)
		if buf.Len() != 0 {
			t.Errorf("%d bytes written before the error", buf.Len())
		}
	})
	t.Run("writer fails", func(t *testing.T) {
		_, err := e.svc.Backup(ctx, e.grant(t, ActBackup, Resource{}), &limitWriter{n: 300})
		if err == nil {
			t.Fatal("Backup succeeded")
		}
	})
	t.Run("canceled", func(t *testing.T) {
		g := e.grant(t, ActBackup, Resource{})
		c, cancel := context.WithCancel(ctx)
		cancel()
		var buf bytes.Buffer
		if _, err := e.svc.Backup(c, g, &buf); err == nil {
			t.Fatal("Backup succeeded")
		}
		if _, err := CheckBackupFile(bytes.NewReader(buf.Bytes())); err == nil {
			t.Error("a canceled backup reads as complete")
		}
	})
}

// limitWriter fails after n bytes.
type limitWriter struct{ n int }

func (l *limitWriter) Write(p []byte) (int, error) {
	if len(p) > l.n {
		return 0, errors.New("disk full")
	}
	l.n -= len(p)
	return len(p), nil
}

// TestRestoreRefusals: whatever goes wrong, the state dir keeps what it
// had (its store still opens with the same data) and nothing is left
// behind.
func TestRestoreRefusals(t *testing.T) {
	f := newBackupFixture(t)
	useRestoreKeys(t, f.e.keys)
	tampered := bytes.Clone(f.backup)
	tampered[len(tampered)/2] ^= 0x40

	// an existing store, restored from an empty backup of another service
	existing := func(t *testing.T) string {
		t.Helper()
		state := t.TempDir()
		if err := restoreInto(state, f.backup, false); err != nil {
			t.Fatal(err)
		}
		return state
	}
	stillThere := func(t *testing.T, state string, want []string) {
		t.Helper()
		if got := entries(t, state); strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("state dir holds %v, want %v", got, want)
		}
		if len(want) == 0 {
			return
		}
		svc := openRestored(t, state, f.e.keys)
		g := mustGrant(t, svc, ActReadSecret, Resource{Secret: f.secrets[0].ID})
		if _, err := svc.GetSecret(context.Background(), g); err != nil {
			t.Errorf("the previous store lost a secret: %v", err)
		}
	}

	for _, c := range []struct {
		name     string
		backup   []byte
		keys     Keys
		existing bool
		force    bool
		want     string
	}{
		{"other HSM", f.backup, newFakeKeys(), false, false, "backup test.backup was sealed by KEK fake-kek-1 on token fake; this HSM (token fake) cannot unseal it"},
		{"tampered", tampered, nil, false, false, "does not authenticate"},
		{"tampered over a store", tampered, nil, true, true, "does not authenticate"},
		{"cut short", f.backup[:len(f.backup)-10], nil, false, false, "cut short"},
		{"final chunk missing", f.backup[:len(f.backup)/2], nil, true, true, "cut short"},
		{"not a backup", []byte("#!/bin/sh\necho hello\n"), nil, false, false, "not an intact coffer backup"},
		{"store exists", f.backup, nil, true, false, "already holds a store: restore replaces it only with --force"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.keys != nil {
				useRestoreKeys(t, c.keys)
			}
			state := t.TempDir()
			var want []string
			if c.existing {
				state = existing(t)
				want = []string{"data", "store.key", "store.witness"}
			}
			err := restoreInto(state, c.backup, c.force)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			stillThere(t, state, want)
		})
	}

	t.Run("store in use", func(t *testing.T) {
		state := existing(t)
		svc := openRestored(t, state, f.e.keys)
		err := restoreInto(state, f.backup, true)
		if err == nil || !strings.Contains(err.Error(), "is in use") {
			t.Fatalf("err = %v, want in use", err)
		}
		svc.store.Close()
		stillThere(t, state, []string{"data", "store.key", "store.witness"})
	})

	t.Run("force replaces", func(t *testing.T) {
		state := existing(t)
		svc := openRestored(t, state, f.e.keys)
		extra, err := svc.CreateSecret(context.Background(), mustGrant(t, svc, ActManageProject, Resource{Project: "default"}), SecretInput{DisplayName: "only in the old store", Payload: []byte("x")})
		if err != nil {
			t.Fatal(err)
		}
		svc.store.Close()
		oldKey, _ := os.ReadFile(filepath.Join(state, storeKeyName))
		if err := restoreInto(state, f.backup, true); err != nil {
			t.Fatal(err)
		}
		newKey, _ := os.ReadFile(filepath.Join(state, storeKeyName))
		if bytes.Equal(oldKey, newKey) {
			t.Error("restore kept the old store key; want a fresh one")
		}
		svc = openRestored(t, state, f.e.keys)
		g, err := svc.Authorize(context.Background(), rootPrincipal, ActReadSecret, Resource{Secret: extra.ID})
		if err == nil {
			_, err = svc.GetSecret(context.Background(), g)
		}
		if err == nil {
			t.Error("a secret of the replaced store survived the restore")
		}
		svc.store.Close()
		stillThere(t, state, []string{"data", "store.key", "store.witness"})
	})

	t.Run("unfinished restore", func(t *testing.T) {
		state := existing(t)
		marker := filepath.Join(state, restoreMarkerName)
		if err := os.WriteFile(marker, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := openStore(context.Background(), Config{StateDir: state}, f.e.keys)
		if err == nil || !strings.Contains(err.Error(), "did not finish") {
			t.Fatalf("openStore with a restore marker: %v", err)
		}
		// restoring again needs no --force and clears the marker
		if err := restoreInto(state, f.backup, false); err != nil {
			t.Fatal(err)
		}
		stillThere(t, state, []string{"data", "store.key", "store.witness"})
	})
}

// TestRestoreLeavesNoPlaintext: the restored store is encrypted too.
func TestRestoreLeavesNoPlaintext(t *testing.T) {
	f := newBackupFixture(t)
	useRestoreKeys(t, f.e.keys)
	state := t.TempDir()
	if err := restoreInto(state, f.backup, false); err != nil {
		t.Fatal(err)
	}
	for _, canary := range []string{"DISPLAYCANARY", "PAYLOADCANARY", "KVCANARY", "app.service"} {
		if hits := grepTree(t, state, canary); len(hits) > 0 {
			t.Errorf("%s in the clear in %v", canary, hits)
		}
	}
}

var _ Store = (*kv.Store)(nil)

// TestRestoreMarksKMSKeys: a restore does not roll the token back, and the
// backup may predate the Kubernetes KMS's use of a KEK, so every retired
// KEK on the token needs --force to be removed afterwards.
func TestRestoreMarksKMSKeys(t *testing.T) {
	f := newBackupFixture(t) // the backup knows no KMS use
	ctx := context.Background()
	admin := f.e.grant(t, ActManageKeys, Resource{})
	if _, _, _, err := f.e.svc.KMSEncrypt(ctx, []byte("seed")); err != nil {
		t.Fatal(err)
	}
	if _, err := f.e.svc.RotateKEK(ctx, admin); err != nil {
		t.Fatal(err)
	}
	waitRewrap(t, f.e.svc)
	useRestoreKeys(t, f.e.keys)
	state := t.TempDir()
	if err := restoreInto(state, f.backup, false); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	svc := openRestored(t, state, f.e.keys)
	t.Cleanup(func() { svc.Close() })
	waitRewrap(t, svc) // the restored secrets move to the current KEK
	g := mustGrant(t, svc, ActManageKeys, Resource{})
	err := svc.RemoveKEK(ctx, g, "fake-kek-1", RemoveKEKOptions{})
	wantCode(t, err, CodeKEKInUse)
	if !strings.Contains(err.Error(), "unknown") {
		t.Fatalf("the refusal does not say the usage is unknown: %v", err)
	}
	keys, err := svc.KMSKeys(ctx, g)
	if err != nil || len(keys) != 1 || keys[0].KeyID != "fake-kek-1" || !keys[0].UsageUnknown || !keys[0].NeedsForce || keys[0].RetiredAt == nil {
		t.Fatalf("kms keys after restore %+v %v", keys, err)
	}
	wantCode(t, svc.RemoveKEK(ctx, g, "fake-kek-1", RemoveKEKOptions{Force: true}), "")
}
