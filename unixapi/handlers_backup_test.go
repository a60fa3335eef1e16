package unixapi

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// backupBackend streams body, then fails with err (if set).
type backupBackend struct {
	fakeBackend
	body []byte
	err  error
}

func (b *backupBackend) Backup(_ context.Context, _ daemon.Grant, w io.Writer) (daemon.BackupHeader, error) {
	if len(b.body) > 0 {
		if _, err := w.Write(b.body); err != nil {
			return daemon.BackupHeader{}, err
		}
	}
	return daemon.BackupHeader{}, b.err
}

func TestBackupEndpoint(t *testing.T) {
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB: many writes
	for _, c := range []struct {
		name    string
		b       *backupBackend
		want    []byte
		wantErr string // "" = success
	}{
		{"streams the whole backup", &backupBackend{body: big}, big, ""},
		{"refused before the first byte", &backupBackend{fakeBackend: fakeBackend{authErr: daemon.Forbidden("not allowed to back up the store")}}, nil, "not allowed to back up the store"},
		{"HSM down before the first byte", &backupBackend{err: &daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeHSMUnavailable, Message: "the HSM is unavailable"}}, nil, "the HSM is unavailable"},
		{"fails mid-stream", &backupBackend{body: big, err: errors.New("store broke")}, nil, "unexpected EOF"},
	} {
		t.Run(c.name, func(t *testing.T) {
			cl, _ := serve(t, c.b)
			var buf bytes.Buffer
			n, err := cl.Backup(context.Background(), &buf)
			if c.wantErr == "" {
				if err != nil || !bytes.Equal(buf.Bytes(), c.want) || n != int64(len(c.want)) {
					t.Fatalf("Backup: %d bytes, %v", n, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.wantErr) {
				t.Fatalf("err = %v, want %q", err, c.wantErr)
			}
			var apiErr *client.APIError
			if c.b.body == nil && !errors.As(err, &apiErr) {
				t.Errorf("an error before the stream is not an API error: %T", err)
			}
		})
	}
}
