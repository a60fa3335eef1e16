package unixapi

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/daemon"
)

// SetAuditor makes the server serve the audit log's entries and its
// verification (GET /v1/audit, POST /v1/audit/verify); call it before
// Serve. With none set they answer 503. (What is recorded is the domain's:
// daemon.Service.SetAuditLog.)
func (s *Server) SetAuditor(a Auditor) { s.auditor = a }

// Auditor reads the audit log; *audit.Log is one.
type Auditor interface {
	// Flush writes what was recorded before it to the file.
	Flush(ctx context.Context) error
	Entries(ctx context.Context, after uint64, limit int) ([]json.RawMessage, uint64, error)
	Tail(ctx context.Context, n int) ([]json.RawMessage, uint64, error)
	Verify(ctx context.Context) (audit.Report, error)
}

func (s *Server) auditRoutes() {
	s.handle("GET /v1/audit", s.auditEntries)
	s.handle("POST /v1/audit/verify", s.auditVerify)
}

// authorizeAudit lets system admins only read and verify the log.
func (s *Server) authorizeAudit(r *http.Request) error {
	if err := s.systemAdminOnly(r, "read the audit log"); err != nil {
		return err
	}
	if s.auditor == nil {
		return &daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeUnavailable, Message: "the audit log is off"}
	}
	// A reader sees every change acknowledged before it asked (they wait
	// in the store for a moment) and every event recorded. Best effort: a
	// log that cannot be written is still read.
	if err := s.b.FlushAudit(r.Context()); err != nil {
		s.log.Debug("audit: changes wait in the store", "err", err)
	}
	if err := s.auditor.Flush(r.Context()); err != nil {
		s.log.Debug("audit: cannot flush the log", "err", err)
	}
	return nil
}

// auditEntries is GET /v1/audit?after=SEQ&limit=N (entries after SEQ) or
// ?tail=N (the last N).
func (s *Server) auditEntries(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorizeAudit(r); err != nil {
		return err
	}
	q := r.URL.Query()
	num := func(name string, min uint64) (uint64, bool, error) {
		v := q.Get(name)
		if v == "" {
			return 0, false, nil
		}
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || n < min {
			return 0, false, daemon.Invalid(daemon.CodeInvalidArgument, "%s must be a number of at least %d", name, min)
		}
		return n, true, nil
	}
	after, hasAfter, err := num("after", 0)
	if err != nil {
		return err
	}
	limit, _, err := num("limit", 1)
	if err != nil {
		return err
	}
	tail, hasTail, err := num("tail", 1)
	if err != nil {
		return err
	}
	if hasTail && hasAfter {
		return daemon.Invalid(daemon.CodeInvalidArgument, "give after or tail, not both")
	}
	var es []json.RawMessage
	var last uint64
	if hasTail {
		es, last, err = s.auditor.Tail(r.Context(), int(min(tail, audit.MaxEntries)))
	} else {
		es, last, err = s.auditor.Entries(r.Context(), after, int(min(limit, audit.MaxEntries)))
	}
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.AuditEntries{Entries: es, LastSeq: last})
	return nil
}

// auditVerify is POST /v1/audit/verify: the whole log is checked.
func (s *Server) auditVerify(w http.ResponseWriter, r *http.Request) error {
	if err := s.authorizeAudit(r); err != nil {
		return err
	}
	var none struct{}
	if err := decodeJSON(w, r, &none, true); err != nil {
		return err
	}
	rep, err := s.auditor.Verify(r.Context())
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, rep)
	return nil
}

// systemAdminOnly lets system admins through; anyone else gets a 403 that
// says who may (to do what).
func (s *Server) systemAdminOnly(r *http.Request, what string) error {
	if _, err := s.authorize(r, daemon.ActManageProjects, daemon.Resource{}); err != nil {
		if daemon.CodeOf(err) == daemon.CodeForbidden {
			return daemon.Forbidden("only system admins may %s", what)
		}
		return err
	}
	return nil
}
