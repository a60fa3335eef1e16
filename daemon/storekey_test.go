package daemon

import (
	"bytes"
	"context"
	"encoding/json"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// grepTree returns the files under root that contain s.
func grepTree(t *testing.T, root, s string) []string {
	t.Helper()
	var hits []string
	err := filepath.WalkDir(root, func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(s)) {
			hits = append(hits, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hits
}

func readKeyFile(t *testing.T, stateDir string) (storeKeyFile, os.FileInfo) {
	t.Helper()
	path := filepath.Join(stateDir, storeKeyName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	f, err := readStoreKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f, fi
}

// startOn opens the store of stateDir as the daemon does, writes a secret
// and closes it again.
func startOn(t *testing.T, stateDir string, keys Keys, displayName string) error {
	t.Helper()
	ctx := context.Background()
	cfg := Config{StateDir: stateDir, Logger: slog.New(slog.DiscardHandler)}
	store, err := openStore(ctx, cfg, keys)
	if err != nil {
		return err
	}
	defer store.Close()
	svc, err := New(ctx, cfg, keys, store)
	if err != nil {
		t.Fatal(err)
	}
	if displayName != "" {
		g := mustGrant(t, svc, ActManageProject, Resource{Project: "default"})
		if _, err := svc.CreateSecret(ctx, g, SecretInput{DisplayName: displayName, Payload: []byte("PAYLOADCANARY-sk")}); err != nil {
			t.Fatal(err)
		}
	}
	return nil
}

func TestStoreKey(t *testing.T) {
	keys := newFakeKeys()
	state := t.TempDir()
	if err := startOn(t, state, keys, "DISPLAYCANARY-sk"); err != nil {
		t.Fatalf("first start: %v", err)
	}
	f, fi := readKeyFile(t, state)
	if fi.Mode().Perm() != 0o600 || f.Format != storeKeyFormat || f.Token != "fake" || f.Sealed.KEK != "fake-kek-1" {
		t.Errorf("store.key: mode %v, %+v", fi.Mode(), f)
	}
	for _, canary := range []string{"DISPLAYCANARY-sk", "PAYLOADCANARY-sk", "default"} {
		if hits := grepTree(t, filepath.Join(state, storeDataName), canary); len(hits) > 0 {
			t.Errorf("%q in the clear in %v", canary, hits)
		}
	}
	before, _ := os.ReadFile(filepath.Join(state, storeKeyName))
	if err := startOn(t, state, keys, ""); err != nil {
		t.Fatalf("second start: %v", err)
	}
	after, _ := os.ReadFile(filepath.Join(state, storeKeyName))
	if !bytes.Equal(before, after) {
		t.Error("store.key rewritten although its KEK is the current one")
	}
	if left, _ := filepath.Glob(filepath.Join(state, ".store.key.tmp-*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

func TestStoreKeyResealedUnderNewKEK(t *testing.T) {
	keys := newFakeKeys()
	state := t.TempDir()
	if err := startOn(t, state, keys, "before rotation"); err != nil {
		t.Fatal(err)
	}
	if _, err := keys.RotateKEK(context.Background()); err != nil { // as the HSM does: fake-kek-2 is current
		t.Fatal(err)
	}
	rotated := keys
	if err := startOn(t, state, rotated, "after rotation"); err != nil {
		t.Fatalf("start after KEK rotation: %v", err)
	}
	f, fi := readKeyFile(t, state)
	if f.Sealed.KEK != "fake-kek-2" || fi.Mode().Perm() != 0o600 {
		t.Errorf("store.key after rotation: KEK %s, mode %v; want fake-kek-2, 0600", f.Sealed.KEK, fi.Mode())
	}
	if err := startOn(t, state, rotated, ""); err != nil {
		t.Fatalf("start on the re-sealed key: %v", err)
	}
}

func TestStoreKeyRefusals(t *testing.T) {
	keys := newFakeKeys()
	made := func(t *testing.T) string {
		t.Helper()
		state := t.TempDir()
		if err := startOn(t, state, keys, "x"); err != nil {
			t.Fatal(err)
		}
		return state
	}
	for _, c := range []struct {
		name string
		prep func(t *testing.T, state string)
		keys Keys
		want string
	}{
		{"store without key", func(t *testing.T, state string) {
			os.Remove(filepath.Join(state, storeKeyName))
		}, keys, "exists but its key " + "%s/store.key does not: coffer stores are encrypted at rest"},
		{"other HSM", nil, newFakeKeys(), "store key %s/store.key was sealed by KEK fake-kek-1 on HSM token fake; this HSM (token fake) cannot unseal it"},
		{"key of another store", func(t *testing.T, state string) {
			other := made(t)
			b, _ := os.ReadFile(filepath.Join(other, storeKeyName))
			os.WriteFile(filepath.Join(state, storeKeyName), b, 0o600)
		}, keys, "does not open with the key in %s/store.key"},
		{"garbage key file", func(t *testing.T, state string) {
			os.WriteFile(filepath.Join(state, storeKeyName), []byte("hello"), 0o600)
		}, keys, "store key %s/store.key is not a sealed coffer store key"},
		{"future format", func(t *testing.T, state string) {
			f, _ := readKeyFile(t, state)
			f.Format = 9
			b, _ := json.Marshal(f)
			os.WriteFile(filepath.Join(state, storeKeyName), b, 0o600)
		}, keys, "has format 9"},
	} {
		t.Run(c.name, func(t *testing.T) {
			state := made(t)
			if c.prep != nil {
				c.prep(t, state)
			}
			err := startOn(t, state, c.keys, "")
			want := strings.ReplaceAll(c.want, "%s", state)
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Fatalf("err = %v\nwant %q", err, want)
			}
		})
	}
	t.Run("empty data dir is a first start", func(t *testing.T) {
		state := t.TempDir()
		os.Mkdir(filepath.Join(state, storeDataName), 0o700)
		if err := startOn(t, state, keys, ""); err != nil {
			t.Fatal(err)
		}
	})
}

// TestStoreKeyFirstStartRace: processes starting at once on a new state
// dir agree on one store key (the first written wins; the others read it)
// instead of each opening the store with its own.
func TestStoreKeyFirstStartRace(t *testing.T) {
	keys := newFakeKeys()
	for round := range 5 {
		state := t.TempDir()
		const n = 6
		got := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				got[i], errs[i] = loadStoreKey(context.Background(), state, keys, slog.New(slog.DiscardHandler))
			})
		}
		wg.Wait()
		for i := range n {
			if errs[i] != nil {
				t.Fatalf("round %d, loader %d: %v", round, i, errs[i])
			}
			if !bytes.Equal(got[i], got[0]) {
				t.Fatalf("round %d: loaders got different store keys", round)
			}
		}
		f, _ := readKeyFile(t, state)
		k, err := keys.Unseal(context.Background(), f.Sealed, []byte(storeKeyAAD))
		if err != nil || !bytes.Equal(k, got[0]) {
			t.Fatalf("round %d: store.key does not hold the key the loaders use", round)
		}
	}
}
