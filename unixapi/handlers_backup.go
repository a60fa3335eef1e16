package unixapi

import (
	"context"
	"io"
	"net/http"
	"time"

	"github.com/coffer-hsm/coffer/daemon"
)

// BackupBackend is the backup part of the domain.
type BackupBackend interface {
	Backup(ctx context.Context, g daemon.Grant, w io.Writer) (daemon.BackupHeader, error)
}

// backupIdle bounds each write of a backup stream (the server's write
// timeout would cut a long one short): a client that stops reading for
// this long loses the backup.
const backupIdle = time.Minute

func (s *Server) backupRoutes() {
	s.handle("GET /v1/backup", s.backup)
}

// backup streams a sealed backup of the whole store (system admins). An
// error before the first byte is a normal JSON error; after it the
// connection is cut, and the file lacks its final chunk, which the reader
// detects.
func (s *Server) backup(w http.ResponseWriter, r *http.Request) error {
	g, err := s.authorize(r, daemon.ActBackup, daemon.Resource{})
	if err != nil {
		return err
	}
	sw, r := streaming(w, r, backupIdle)
	sw.Header().Set("Content-Type", "application/octet-stream")
	out := &startWriter{w: sw}
	if _, err := s.b.Backup(r.Context(), g, out); err != nil {
		if !out.started {
			return err
		}
		s.log.Error("backup failed while streaming; cutting the connection", "err", err)
		panic(http.ErrAbortHandler)
	}
	return nil
}

// startWriter notes whether anything was written.
type startWriter struct {
	w       io.Writer
	started bool
}

func (s *startWriter) Write(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	s.started = true
	return s.w.Write(p)
}
