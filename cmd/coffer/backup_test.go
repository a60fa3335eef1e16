//go:build !nodaemon

package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/unixapi"
)

// streamBackend answers GET /v1/backup with body, then err.
type streamBackend struct {
	unixapi.Backend
	body []byte
	err  error
}

func (b *streamBackend) Authorize(context.Context, daemon.Principal, daemon.Action, daemon.Resource) (daemon.Grant, error) {
	return daemon.Grant{}, nil
}

func (b *streamBackend) Backup(_ context.Context, _ daemon.Grant, w io.Writer) (daemon.BackupHeader, error) {
	if len(b.body) > 0 {
		if _, err := w.Write(b.body); err != nil {
			return daemon.BackupHeader{}, err
		}
	}
	return daemon.BackupHeader{}, b.err
}

// framedBackup is a backup file's framing (header, chunks with random
// bytes, the last flagged final): what the CLI can check without the key.
func framedBackup(t *testing.T, chunks int, final bool) []byte {
	t.Helper()
	h, _ := json.Marshal(daemon.BackupHeader{Format: daemon.BackupFormat, KEKLabel: "coffer-kek-1", TokenLabel: "tok", ChunkSize: 64, SealedKey: &hsm.Sealed{KEK: "coffer-kek-1"}})
	var b bytes.Buffer
	b.WriteString("coffer-backup\n")
	binary.Write(&b, binary.BigEndian, uint32(len(h)))
	b.Write(h)
	for i := range chunks {
		word := uint32(40)
		if final && i == chunks-1 {
			word |= 1 << 31
		}
		binary.Write(&b, binary.BigEndian, word)
		b.Write(bytes.Repeat([]byte{byte(i)}, 40))
	}
	return b.Bytes()
}

func serveBackend(t *testing.T, b unixapi.Backend) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	l, err := unixapi.ListenUnix(sock, unixapi.SocketOptions{GID: -1})
	if err != nil {
		t.Fatal(err)
	}
	srv := unixapi.NewServer(b, slog.New(slog.DiscardHandler))
	go srv.Serve(l)
	t.Cleanup(func() { srv.Shutdown(context.Background()) })
	return sock
}

// TestBackupFile: the CLI writes FILE 0600 only when the whole backup
// arrived; otherwise FILE keeps what it had and no partial file remains.
func TestBackupFile(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	good := framedBackup(t, 3, true)
	for _, c := range []struct {
		name string
		b    *streamBackend
		want string // stderr; "" = success
	}{
		{"complete", &streamBackend{body: good}, ""},
		{"no final chunk", &streamBackend{body: framedBackup(t, 3, false)}, "the daemon's backup stream is incomplete (not an intact coffer backup: it ends before its last chunk"},
		{"cut mid-stream", &streamBackend{body: good[:len(good)-5], err: errors.New("store broke")}, "the backup was cut short ("},
		{"refused", &streamBackend{err: daemon.Forbidden("not allowed to back up the store")}, "coffer: not allowed to back up the store (forbidden)"},
	} {
		t.Run(c.name, func(t *testing.T) {
			sock := serveBackend(t, c.b)
			dir := t.TempDir()
			file := filepath.Join(dir, "coffer.backup")
			if err := os.WriteFile(file, []byte("previous backup"), 0o600); err != nil {
				t.Fatal(err)
			}
			var stdout, stderr bytes.Buffer
			code := run(context.Background(), []string{"coffer", "--socket", sock, "backup", file}, nil, &stdout, &stderr)
			got, _ := os.ReadFile(file)
			if c.want == "" {
				fi, err := os.Stat(file)
				if code != 0 || !bytes.Equal(got, good) || err != nil || fi.Mode().Perm() != 0o600 {
					t.Fatalf("exit %d, %d bytes, mode %v; stderr %s", code, len(got), fi.Mode(), &stderr)
				}
				if !strings.Contains(stdout.String(), "KEK coffer-kek-1 on HSM token tok") {
					t.Errorf("stdout: %s", &stdout)
				}
			} else {
				if code != 1 || !strings.Contains(stderr.String(), c.want) {
					t.Fatalf("exit %d, stderr %q; want 1 and %q", code, &stderr, c.want)
				}
				if string(got) != "previous backup" {
					t.Errorf("FILE changed on failure: %q", got)
				}
			}
			if es, _ := os.ReadDir(dir); len(es) != 1 {
				t.Errorf("dir holds %d entries, want FILE only", len(es))
			}
		})
	}
}

func TestBackupRestoreUsage(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"backup"}, "backup takes one argument: the FILE to write"},
		{[]string{"backup", "-"}, `backup writes a file (atomically); give its path, not "-"`},
		{[]string{"restore"}, "restore takes one argument: the backup FILE"},
		{[]string{"restore", "a", "b"}, "restore takes one argument: the backup FILE"},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), append([]string{"coffer"}, c.args...), nil, &stdout, &stderr)
		if code != 2 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("coffer %v: exit %d, stderr %q; want 2 and %q", c.args, code, &stderr, c.want)
		}
	}
}

// TestRemoveStalePartials: a backup removes the partial files earlier
// backups to the same path left (unlocked), never one a running backup
// holds, nor another path's.
func TestRemoveStalePartials(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "coffer.backup")
	for _, name := range []string{".coffer.backup.partial-1", ".coffer.backup.partial-2", ".other.backup.partial-1", "coffer.backup"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	live, err := os.Open(filepath.Join(dir, ".coffer.backup.partial-2"))
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if err := unix.Flock(int(live.Fd()), unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	removeStalePartials(path)
	var left []string
	es, _ := os.ReadDir(dir)
	for _, e := range es {
		left = append(left, e.Name())
	}
	want := []string{".coffer.backup.partial-2", ".other.backup.partial-1", "coffer.backup"}
	if strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("left %v, want %v", left, want)
	}
}
