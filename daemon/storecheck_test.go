package daemon

import (
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coffer-hsm/coffer/kv"
)

// TestCheckStore checks a restored store (whole: every secret opens), then
// damages it behind the daemon's back, one way each, and checks that the
// problem is named.
func TestCheckStore(t *testing.T) {
	f := newBackupFixture(t)
	useRestoreKeys(t, f.e.keys)
	victim := f.secrets[1].ID
	for _, tc := range []struct {
		name   string
		damage func(tx *kv.Txn) error
		want   string
	}{
		{"whole", nil, ""},
		{"sealed version lost", func(tx *kv.Txn) error {
			return tx.Delete(tableSealed, victim)
		}, "secret " + victim + ": its sealed version: kv: sealed/" + victim + ": not found"},
		{"sealed version of another version", func(tx *kv.Txn) error {
			var blob sealedRecord
			if err := tx.Get(tableSealed, victim, &blob); err != nil {
				return err
			}
			blob.Version++
			return tx.Put(tableSealed, victim, blob)
		}, "secret " + victim + ": secret " + victim + ": sealed version 2 does not match record version 1"},
		{"sealed version moved to another secret", func(tx *kv.Txn) error {
			var blob sealedRecord
			if err := tx.Get(tableSealed, f.secrets[0].ID, &blob); err != nil {
				return err
			}
			return tx.Put(tableSealed, victim, blob)
		}, "secret " + victim + ": open secret " + victim + " version 1"},
		{"sealed version without a secret", func(tx *kv.Txn) error {
			return tx.Put(tableSealed, "01a20000-0000-7000-8000-00000000dead", sealedRecord{Version: 1})
		}, "sealed version 01a20000-0000-7000-8000-00000000dead: no secret has it"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			state := t.TempDir()
			if err := restoreInto(state, f.backup, false); err != nil {
				t.Fatal(err)
			}
			if tc.damage != nil {
				svc := openRestored(t, state, f.e.keys)
				if err := svc.store.Update(context.Background(), tc.damage); err != nil {
					t.Fatal(err)
				}
				svc.store.Close()
			}
			owned := os.Geteuid() == 0 && tc.damage == nil
			if owned {
				// The daemon's own user: root checking its store must
				// leave every file that user's (the README's repair).
				if err := chownTree(state, 4242); err != nil {
					t.Fatal(err)
				}
			}
			res, err := CheckStore(context.Background(), Config{StateDir: state, Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			if owned {
				filepath.WalkDir(state, func(path string, _ fs.DirEntry, err error) error {
					var st syscall.Stat_t
					if err == nil && syscall.Lstat(path, &st) == nil && st.Uid != 4242 {
						t.Errorf("after a check by root, %s belongs to uid %d, not the state directory's owner", path, st.Uid)
					}
					return nil
				})
			}
			if tc.want == "" {
				if len(res.Problems) != 0 || res.Secrets != len(f.secrets) || res.Records == 0 || res.Commits == 0 {
					t.Errorf("check of a whole store: %+v, want no problems and %d secrets opened", res, len(f.secrets))
				}
				return
			}
			if len(res.Problems) != 1 || !strings.HasPrefix(res.Problems[0], tc.want) {
				t.Errorf("problems %q, want one starting %q", res.Problems, tc.want)
			}
		})
	}
}

// chownTree gives everything under dir to uid (and the group of that id).
func chownTree(dir string, uid int) error {
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(path, uid, uid)
	})
}
