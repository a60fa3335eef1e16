package daemon

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"strconv"

	"github.com/coffer-hsm/coffer/audit"
)

// Backup writes a backup of the whole store to w while the daemon serves:
// one consistent snapshot, sealed under a fresh backup key that the HSM KEK
// wraps (see backupformat.go). Only system admins may take one. Nothing is
// written to w before the backup key is sealed, so an HSM failure is a
// clean error; a failure later leaves w without its final chunk, which
// every reader of the file detects.
func (s *Service) Backup(ctx context.Context, g Grant, w io.Writer) (BackupHeader, error) {
	if err := g.require(ActBackup); err != nil {
		return BackupHeader{}, err
	}
	key := make([]byte, backupKeySize)
	defer clear(key)
	if _, err := rand.Read(key); err != nil {
		return BackupHeader{}, fmt.Errorf("make backup key: %w", err)
	}
	sealed, err := s.keys.Seal(ctx, key, []byte(backupKeyAAD))
	if err != nil {
		return BackupHeader{}, hsmErr(err)
	}
	h := BackupHeader{
		Format:        BackupFormat,
		CreatedAt:     s.now(),
		CofferVersion: s.cfg.Version,
		TokenLabel:    s.keys.Info().TokenLabel,
		KEKLabel:      sealed.KEK,
		ChunkSize:     backupChunkSize,
		SealedKey:     sealed,
	}
	cw := &countingWriter{w: w}
	digest, err := writeBackupHeader(cw, h)
	if err != nil {
		return h, fmt.Errorf("write backup: %w", err)
	}
	chunks, err := newChunkWriter(cw, key, digest, h.ChunkSize)
	if err != nil {
		return h, err
	}
	if err := s.store.Backup(ctx, chunks); err != nil {
		chunks.abort() // no final chunk: the output reads as cut short
		return h, fmt.Errorf("write backup: %w", err)
	}
	if err := chunks.Close(); err != nil {
		return h, fmt.Errorf("write backup: %w", err)
	}
	s.log.Info("backup written", "by", g.principal.String(), "bytes", cw.n, "chunks", chunks.seq, "token", h.TokenLabel, "kek", h.KEKLabel)
	// A copy of every tenant's (sealed) data left the daemon: worth a
	// record, though nothing changed.
	s.record(audit.Event{Action: "store.backup", Outcome: audit.OutcomeOK, Principal: auditPrincipal(g.principal),
		Target: map[string]string{"bytes": strconv.FormatInt(cw.n, 10), "kek": h.KEKLabel}})
	return h, nil
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}
