package daemon

import (
	"context"
	"time"

	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/policy"
)

const (
	tableSessions   = "sessions"
	indexCredential = "credential"

	// Session kinds.
	SessionLogin       = "login"
	SessionAccessToken = "access-token"
	SessionOAuth2      = "oauth2"
)

// sessionRecord is an authenticated session: what its bearer may do.
// Rules nil means unrestricted by rules; an empty list allows nothing.
type sessionRecord struct {
	ID           string       `json:"id"`
	Kind         string       `json:"kind"`
	UserID       string       `json:"user_id"`
	ProjectID    string       `json:"project_id"`
	CredentialID string       `json:"credential_id"`
	Roles        []string     `json:"roles"`
	Rules        []AccessRule `json:"rules"`
	Policies     []string     `json:"policies"`
	SessionType  string       `json:"session_type"`
	Unrestricted bool         `json:"unrestricted,omitempty"`
	CreatedAt    time.Time    `json:"created_at"`
	ExpiresAt    *time.Time   `json:"expires_at,omitempty"`
	// Kid is the key id of the signing key of an OAuth2 session's JWT.
	Kid string `json:"kid,omitempty"`
	// Policies attached to the credential (ids, resolved when attached),
	// its inline policy, and its name, as the policies see them.
	PolicyIDs      []string          `json:"policy_ids,omitempty"`
	InlinePolicies []policy.Document `json:"inline_policies,omitempty"`
	CredentialName string            `json:"credential_name,omitempty"`
	// Parent is the session whose token was exchanged (RFC 8693) for this
	// one's JWT: this session is usable only while its parent is.
	Parent string `json:"parent,omitempty"`
	// ParentToken is the id of the opaque token (cfs_, cft_) that was
	// exchanged, whose end (a rotation's grace) ends this session too.
	ParentToken string `json:"parent_token,omitempty"`
}

func (r sessionRecord) indexes() []kv.Index {
	return []kv.Index{
		{Name: indexUser, Value: r.UserID},
		{Name: indexCredential, Value: r.CredentialID},
		{Name: indexProject, Value: r.ProjectID},
	}
}

func (r sessionRecord) expired(now time.Time) bool {
	return r.ExpiresAt != nil && !now.Before(*r.ExpiresAt)
}

// Session is the projection of a session. It never carries its token.
type Session struct {
	ID           string
	Kind         string
	UserID       string
	User         string
	ProjectID    string
	Project      string
	CredentialID string
	Roles        []string
	AccessRules  []AccessRule
	Policies     []string
	SessionType  string
	CreatedAt    time.Time
	ExpiresAt    *time.Time
}

func (s *Service) sessionView(tx *kv.Txn, r sessionRecord) (Session, error) {
	var u userRecord
	var p projectRecord
	if err := tx.Get(tableUsers, r.UserID, &u); err != nil {
		return Session{}, err
	}
	if err := tx.Get(tableProjects, r.ProjectID, &p); err != nil {
		return Session{}, err
	}
	return Session{
		ID: r.ID, Kind: r.Kind, UserID: r.UserID, User: u.Name, ProjectID: r.ProjectID, Project: p.Name,
		CredentialID: r.CredentialID, Roles: r.Roles, AccessRules: r.Rules, Policies: r.Policies,
		SessionType: r.SessionType, CreatedAt: r.CreatedAt, ExpiresAt: r.ExpiresAt,
	}, nil
}

// deleteSession removes a session and its tokens.
func deleteSession(tx *kv.Txn, id string, now time.Time) error {
	if err := retireTokens(tx, id, now, 0); err != nil {
		return err
	}
	return ignoreNotFound(tx.Delete(tableSessions, id))
}

// deleteSessionsBy removes every session with index=value.
func deleteSessionsBy(tx *kv.Txn, index, value string, now time.Time) error {
	var ids []string
	err := tx.List(tableSessions, kv.Query{Index: index, Value: value}, func(id string, _ func(any) error) error {
		ids = append(ids, id)
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range ids {
		if err := deleteSession(tx, id, now); err != nil {
			return err
		}
	}
	return nil
}

// ListSessions lists live sessions: all of them for a system admin, the
// caller's own otherwise (a token's: its user's in the token's project).
func (s *Service) ListSessions(ctx context.Context, g Grant, page Page) ([]Session, string, error) {
	if err := g.require(ActListSessions); err != nil {
		return nil, "", err
	}
	q := kv.Query{}
	if !g.admin {
		q = kv.Query{Index: indexUser, Value: g.userID}
	}
	now := s.now()
	var out []Session
	var next string
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		out, next, err = listPage(tx, tableSessions, q, page, func(_ string, decode func(any) error) (Session, bool, error) {
			var rec sessionRecord
			if err := decode(&rec); err != nil {
				return Session{}, false, err
			}
			if rec.expired(now) || (g.tokenProject != "" && rec.ProjectID != g.tokenProject) {
				return Session{}, false, nil
			}
			v, err := s.sessionView(tx, rec)
			return v, err == nil, err
		})
		return err
	})
	return out, next, storeErr(err)
}

// RevokeSession ends a session at once; its token (or JWT) stops working.
// An access token's session is the credential itself: revoking it revokes
// the credential.
func (s *Service) RevokeSession(ctx context.Context, g Grant) error {
	if err := g.require(ActManageSession); err != nil {
		return err
	}
	now := s.now()
	err := s.update(ctx, g.principal, "session.revoke", func(tx *kv.Txn, c *change) error {
		c.set("session", g.sessionID)
		var sess sessionRecord
		if err := tx.Get(tableSessions, g.sessionID, &sess); err != nil {
			return notFoundAs(err, "session %s not found", g.sessionID)
		}
		c.set("project", sess.ProjectID, "user", sess.UserID, "credential", sess.CredentialID)
		if sess.Kind == SessionAccessToken {
			var cred credentialRecord
			if err := tx.Get(tableCredentials, sess.CredentialID, &cred); err != nil {
				return err
			}
			if cred.RevokedAt == nil {
				cred.RevokedAt = &now
			}
			if err := endCredential(tx, cred, now); err != nil {
				return err
			}
			return tx.Put(tableCredentials, cred.ID, cred, cred.indexes()...)
		}
		return deleteSession(tx, g.sessionID, now)
	})
	return storeErr(err)
}
