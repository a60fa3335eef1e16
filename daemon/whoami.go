package daemon

import (
	"context"
	"errors"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// Self is who the daemon takes a caller to be (coffer whoami): the
// connection as the transport saw it, and what the daemon made of it.
type Self struct {
	Channel Channel
	// UID, GID and PID of a Unix socket peer (SO_PEERCRED); nil without.
	UID, GID *uint32
	PID      int32
	CID      *uint32 // a vsock guest's context id
	VM       string  // a hybrid-vsock VM's configured name
	// SystemAdmin: the connection is a system admin's (root, the admin
	// group); never with a token, which acts as its user only.
	SystemAdmin bool
	// MetricsReader: may read the metrics and the status counts.
	MetricsReader bool
	// User is the caller's user as the caller may see it (nil: none).
	User *User
	// Token is the bearer token the request carried (nil: none).
	Token *SelfToken
}

// SelfToken is what a caller's bearer token stands for.
type SelfToken struct {
	Kind           string // login, access-token or oauth2
	SessionID      string
	CredentialID   string
	CredentialName string
	ProjectID      string
	Project        string
	Roles          []string
	Unrestricted   bool
	Restricted     bool // carries access rules
	ExpiresAt      *time.Time
}

// WhoAmI says who g's caller is. Anyone may ask; a token sees of its user
// what the token may see (GetUser's rules).
func (s *Service) WhoAmI(ctx context.Context, g Grant) (Self, error) {
	if err := g.require(ActReadSelf); err != nil {
		return Self{}, err
	}
	p := g.principal
	out := Self{Channel: p.Channel, PID: p.PID, VM: p.VM, SystemAdmin: g.admin, MetricsReader: g.seesCounts}
	if p.HasCred {
		uid, gid := p.UID, p.GID
		out.UID, out.GID = &uid, &gid
	}
	if p.Channel == ChannelVsock {
		cid := p.CID
		out.CID = &cid
	}
	if g.token != nil {
		t := g.token
		out.Token = &SelfToken{Kind: t.Kind, SessionID: t.SessionID, CredentialID: t.CredentialID, CredentialName: t.CredentialName,
			ProjectID: t.ProjectID, Roles: t.Roles, Unrestricted: t.Unrestricted, Restricted: t.Rules != nil, ExpiresAt: t.ExpiresAt}
		out.SystemAdmin, out.MetricsReader = false, false
	}
	if g.userID == "" && out.Token == nil {
		return out, nil
	}
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		if out.Token != nil {
			var proj projectRecord
			if err := tx.Get(tableProjects, out.Token.ProjectID, &proj); err == nil {
				out.Token.Project = proj.Name
			}
		}
		if g.userID == "" {
			return nil
		}
		u, err := s.userSeenBy(tx, g, g.userID)
		if errors.Is(err, ErrNotFound) {
			return nil // deleted since the grant
		}
		if err != nil {
			return err
		}
		out.User = &u
		return nil
	})
	return out, storeErr(err)
}
