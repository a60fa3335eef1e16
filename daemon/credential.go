package daemon

import (
	"context"
	"crypto/rand"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/policy"
)

const (
	tableCredentials = "credentials"
	indexClient      = "client"
	indexRule        = "rule"
	indexProjectName = "project_name"

	// Credential types.
	CredAuthToken   = "auth-token"
	CredOAuth2      = "oauth2"
	CredAccessToken = "access-token"

	// Session types a credential's sessions are marked with.
	SessionTypeClient     = "client"
	SessionTypeClientless = "clientless"

	// Credential statuses (secret statuses active/expired/revoked too).
	StatusExhausted = "exhausted"
	StatusDisabled  = "disabled"

	CodeInvalidCredential = "invalid_credential"

	maxPolicies    = 32
	maxCredRules   = 64
	maxDescription = 512
)

var credPrefix = map[string]string{
	CredAuthToken:   PrefixAuthToken,
	CredOAuth2:      PrefixOAuth2,
	CredAccessToken: PrefixAccessToken,
}

// credentialRecord is a credential as stored: never its token, only the
// token's public id (the verifier lives in the tokens table).
type credentialRecord struct {
	ID           string       `json:"id"`
	Name         string       `json:"name"`
	Description  string       `json:"description,omitempty"`
	Type         string       `json:"type"`
	UserID       string       `json:"user_id"`
	ProjectID    string       `json:"project_id"`
	Roles        []string     `json:"roles"`
	Rules        []AccessRule `json:"rules"`
	Policies     []string     `json:"policies"`
	SessionType  string       `json:"session_type"`
	Unrestricted bool         `json:"unrestricted,omitempty"`
	// PolicyIDs are the named policies resolved when attached (policy.go);
	// InlinePolicies are written on the credential itself (one given, plus
	// those of the token that made it). Both are copied to its sessions.
	PolicyIDs      []string          `json:"policy_ids,omitempty"`
	InlinePolicies []policy.Document `json:"inline_policies,omitempty"`
	TokenID        string            `json:"token_id"`
	ClientID       string            `json:"client_id,omitempty"`
	SessionID      string            `json:"session_id,omitempty"` // access-token: its session
	ExpiresAt      *time.Time        `json:"expires_at,omitempty"`
	MaxAuthn       int               `json:"max_authn,omitempty"`
	AuthnCount     int               `json:"authn_count"`
	LastUsedAt     *time.Time        `json:"last_used_at,omitempty"`
	CreatedAt      time.Time         `json:"created_at"`
	RotatedAt      *time.Time        `json:"rotated_at,omitempty"`
	RevokedAt      *time.Time        `json:"revoked_at,omitempty"`
	// Audiences are the token audiences (aud) its JWTs may be issued for
	// (oidc.go), the first being the default. Absent in records written
	// before audiences existed: they decode as none (the issuer only).
	Audiences []string `json:"audiences,omitempty"`
}

func (r credentialRecord) indexes() []kv.Index {
	ix := []kv.Index{
		{Name: indexProject, Value: r.ProjectID},
		{Name: indexUser, Value: r.UserID},
		{Name: indexProjectName, Value: r.ProjectID + "/" + r.Name, Unique: true},
	}
	if r.ClientID != "" {
		ix = append(ix, kv.Index{Name: indexClient, Value: r.ClientID, Unique: true})
	}
	for _, rule := range r.Rules {
		if rule.ID != "" {
			ix = append(ix, kv.Index{Name: indexRule, Value: rule.ID})
		}
	}
	return append(ix, policyIndexes(r.PolicyIDs)...)
}

func (r credentialRecord) status(now time.Time, user userRecord) string {
	switch {
	case r.RevokedAt != nil:
		return StatusRevoked
	case user.Disabled:
		return StatusDisabled
	case r.ExpiresAt != nil && !now.Before(*r.ExpiresAt):
		return StatusExpired
	case r.MaxAuthn > 0 && r.AuthnCount >= r.MaxAuthn:
		return StatusExhausted
	}
	return StatusActive
}

// Credential is the projection of a credential: never its secret.
type Credential struct {
	ID          string
	Name        string
	Description string
	Type        string
	UserID      string
	User        string
	ProjectID   string
	Project     string
	Roles       []string
	AccessRules []AccessRule
	Policies    []string
	// InlinePolicies are the rules written on the credential (and on the
	// token that made it).
	InlinePolicies []policy.Document
	SessionType    string
	Unrestricted   bool
	TokenID        string
	ClientID       string
	ExpiresAt      *time.Time
	MaxAuthn       int
	AuthnCount     int
	LastUsedAt     *time.Time
	CreatedAt      time.Time
	RotatedAt      *time.Time
	RevokedAt      *time.Time
	Status         string
	// Audiences its JWTs may be issued for; the first is the default.
	Audiences []string
}

// Issued is a credential's secret, returned once at creation or rotation.
type Issued struct {
	Token        string `redact:"true"` // auth-token, access-token
	ClientID     string // oauth2
	ClientSecret string `redact:"true"` // oauth2
}

func (s *Service) credentialView(tx *kv.Txn, r credentialRecord, now time.Time) (Credential, error) {
	if err := withUse(tx, &r); err != nil {
		return Credential{}, err
	}
	s.withLastUse(&r)
	var u userRecord
	var p projectRecord
	if err := tx.Get(tableUsers, r.UserID, &u); err != nil {
		return Credential{}, err
	}
	if err := tx.Get(tableProjects, r.ProjectID, &p); err != nil {
		return Credential{}, err
	}
	return Credential{
		ID: r.ID, Name: r.Name, Description: r.Description, Type: r.Type, UserID: u.ID, User: u.Name,
		ProjectID: p.ID, Project: p.Name, Roles: r.Roles, AccessRules: r.Rules, Policies: r.Policies,
		InlinePolicies: r.InlinePolicies, SessionType: r.SessionType, Unrestricted: r.Unrestricted, TokenID: r.TokenID, ClientID: r.ClientID,
		Audiences: r.Audiences, ExpiresAt: r.ExpiresAt, MaxAuthn: r.MaxAuthn, AuthnCount: r.AuthnCount, LastUsedAt: r.LastUsedAt,
		CreatedAt: r.CreatedAt, RotatedAt: r.RotatedAt, RevokedAt: r.RevokedAt, Status: r.status(now, u),
	}, nil
}

// CredentialInput creates a credential.
type CredentialInput struct {
	Type         string
	User         string // name or id; empty = the caller's own user
	Name         string
	Description  string
	Roles        []string
	AccessRules  []AccessRule     // inline rules, or {ID} of a saved rule; nil = unrestricted
	Policies     []string         // names: the project's policies, or global ones
	InlinePolicy *policy.Document // rules written on the credential itself
	ExpireIn     string
	ExpiresAt    *time.Time // ExpireIn as a time; at most one of them
	MaxAuthn     int
	OneTime      bool
	SessionType  string
	Unrestricted bool
	// Audiences is the allow-list of token audiences (oidc.go); nil or
	// empty: the issuer only.
	Audiences []string
}

func (s *Service) checkCredentialInput(in *CredentialInput) error {
	if _, ok := credPrefix[in.Type]; !ok {
		return Invalid(CodeInvalidCredential, "type must be auth-token, oauth2 or access-token")
	}
	if in.Name != "" {
		if err := checkName("credential", in.Name); err != nil {
			return err
		}
	}
	if len(in.Description) > maxDescription {
		return Invalid(CodeInvalidCredential, "description is longer than %d bytes", maxDescription)
	}
	if len(in.Policies) > maxPolicies {
		return Invalid(CodeInvalidCredential, "at most %d policies", maxPolicies)
	}
	for _, p := range in.Policies {
		if !validName(p) {
			return Invalid(CodeInvalidCredential, "policy %q: use a name of a-z 0-9 . _ -", p)
		}
	}
	if in.InlinePolicy != nil {
		if _, err := s.compilePolicy("inline", *in.InlinePolicy); err != nil {
			return err
		}
	}
	if in.Roles != nil && len(in.Roles) == 0 {
		return Invalid(CodeInvalidCredential, "roles must name at least one role (leave it out for all the user holds)")
	}
	if len(in.AccessRules) > maxCredRules {
		return Invalid(CodeInvalidAccessRule, "at most %d access rules", maxCredRules)
	}
	if in.MaxAuthn < 0 {
		return Invalid(CodeInvalidCredential, "max_authn must not be negative")
	}
	if in.OneTime {
		if in.MaxAuthn > 1 {
			return Invalid(CodeInvalidCredential, "one_time and max_authn %d contradict each other", in.MaxAuthn)
		}
		in.MaxAuthn = 1
	}
	if in.Type == CredAccessToken && in.MaxAuthn > 0 {
		return Invalid(CodeInvalidCredential, "an access-token is its session already; max_authn does not apply")
	}
	aud, err := checkAudienceList(in.Audiences)
	if err != nil {
		return err
	}
	in.Audiences = aud
	switch in.SessionType {
	case "":
		in.SessionType = SessionTypeClient
	case SessionTypeClient, SessionTypeClientless:
	default:
		return Invalid(CodeInvalidCredential, "session_type must be client or clientless")
	}
	return nil
}

// resolveRules compiles inline rules and fetches saved ones by id.
func resolveRules(tx *kv.Txn, in []AccessRule) ([]AccessRule, error) {
	if in == nil {
		return nil, nil
	}
	out := make([]AccessRule, 0, len(in))
	for i, r := range in {
		if r.ID != "" && r.Service == "" && r.Method == "" && r.Path == "" {
			var saved ruleRecord
			if !validID(r.ID) {
				return nil, Invalid(CodeInvalidAccessRule, "access_rules[%d]: unknown access rule id %q", i, r.ID)
			}
			if err := tx.Get(tableRules, r.ID, &saved); err != nil {
				if errors.Is(err, kv.ErrNotFound) {
					return nil, Invalid(CodeInvalidAccessRule, "access_rules[%d]: unknown access rule id %q", i, r.ID)
				}
				return nil, err
			}
			out = append(out, saved.AccessRule)
			continue
		}
		if r.ID != "" {
			return nil, Invalid(CodeInvalidAccessRule, "access_rules[%d]: give either an id or service/method/path", i)
		}
		out = append(out, r)
	}
	if _, err := CompileRules(out); err != nil {
		return nil, err
	}
	return out, nil
}

// randomSuffix is 10 lowercase base32 characters (50 bits): generated
// names stay unique among millions of credentials in a project.
func randomSuffix() string {
	return strings.ToLower(rand.Text()[:10])
}

// generatedName is <user>-<type>-<random>, shortened to fit a name.
func generatedName(user, typ string) string {
	tail := "-" + typ + "-" + randomSuffix()
	if len(user)+len(tail) > 64 {
		user = strings.TrimRight(user[:64-len(tail)], "._-")
	}
	return user + tail
}

// CreateCredential issues a credential to a user in the grant's project and
// returns its secret once.
func (s *Service) CreateCredential(ctx context.Context, g Grant, in CredentialInput) (Credential, Issued, error) {
	if err := g.require(ActCreateCredential); err != nil {
		return Credential{}, Issued{}, err
	}
	if err := s.checkCredentialInput(&in); err != nil {
		return Credential{}, Issued{}, err
	}
	now := s.now()
	expires, err := credentialExpiry(in.ExpireIn, in.ExpiresAt, now)
	if err != nil {
		return Credential{}, Issued{}, err
	}
	var out Credential
	var issued Issued
	err = s.update(ctx, g.principal, "credential.create", func(tx *kv.Txn, c *change) error {
		c.set("project", g.project.ID)
		if in.Unrestricted && g.role < RoleAdmin {
			return Forbidden("only an admin of the project may create an unrestricted credential")
		}
		userRef := in.User
		if userRef == "" {
			if g.userID == "" {
				return Invalid(CodeInvalidCredential, "user is required")
			}
			userRef = g.userID
		}
		// Admission first: to anyone but a system admin a user outside the
		// project answers like one that does not exist.
		user, held, err := admitted(tx, g, userRef)
		if err != nil {
			return err
		}
		c.set("user", user.ID)
		if held == RoleNone {
			return Conflict(CodeUserNotAdmitted, "user %s holds no role on this project: give it one first", user.Name)
		}
		if user.ID != g.userID && g.role < RoleAdmin {
			return Forbidden("only an admin of the project may issue credentials to another user")
		}
		if g.token != nil {
			// A token mints nothing stronger than itself: not more roles,
			// looser rules or a longer life.
			held = min(held, g.role)
			if err := withinToken(g.token, &in, &expires); err != nil {
				return err
			}
			// Nor other audiences: its credential's allow-list (none:
			// coffer's issuer alone) bounds what it can get tokens for.
			if len(in.Audiences) > 0 {
				var own credentialRecord
				if err := tx.Get(tableCredentials, g.token.CredentialID, &own); err != nil {
					return err
				}
				for _, a := range in.Audiences {
					if a != s.issuer() && !slices.Contains(own.Audiences, a) {
						return Forbidden("a token may only pass on audiences its own credential has")
					}
				}
			}
		}
		roles := in.Roles
		if roles == nil {
			roles = held.implied()
		}
		for _, r := range roles {
			want, err := ParseRole(r)
			if err != nil {
				return err
			}
			if want > held {
				return Forbidden("user %s holds %s on project %s, not %s", user.Name, held, g.project.Name, want)
			}
		}
		roles = sortedUnique(roles)
		rules, err := resolveRules(tx, in.AccessRules)
		if err != nil {
			return err
		}
		policyIDs, err := resolvePolicies(tx, g.project.ID, in.Policies)
		if err != nil {
			return err
		}
		names := in.Policies
		var inline []policy.Document
		if in.InlinePolicy != nil {
			inline = append(inline, *in.InlinePolicy)
		}
		if g.token != nil {
			// A token's policies go with whatever it mints: a credential
			// made by a token is held by everything that holds the token.
			policyIDs = sortedUnique(append(policyIDs, g.token.PolicyIDs...))
			names = append(slices.Clone(names), g.token.Policies...)
			inline = append(inline, g.token.InlinePolicies...)
		}
		rec := credentialRecord{
			ID: newID(), Name: in.Name, Description: in.Description, Type: in.Type, UserID: user.ID,
			ProjectID: g.project.ID, Roles: roles, Rules: rules, Policies: sortedUnique(names),
			PolicyIDs: policyIDs, InlinePolicies: inline,
			SessionType: in.SessionType, Unrestricted: in.Unrestricted, ExpiresAt: expires,
			MaxAuthn: in.MaxAuthn, CreatedAt: now, Audiences: in.Audiences,
		}
		if rec.Name == "" {
			rec.Name = generatedName(user.Name, in.Type)
		}
		if issued, err = s.issueCredentialToken(tx, &rec, user, now); err != nil {
			return err
		}
		c.set("credential", rec.ID, "type", rec.Type, "token_id", rec.TokenID)
		if err := tx.Put(tableCredentials, rec.ID, rec, rec.indexes()...); err != nil {
			if errors.Is(err, kv.ErrExists) {
				return newErr(ErrAlreadyExists, CodeAlreadyExists, "a credential named %q already exists in project %s", rec.Name, g.project.Name)
			}
			return err
		}
		out, err = s.credentialView(tx, rec, now)
		return err
	})
	if err != nil {
		return Credential{}, Issued{}, storeErr(err)
	}
	return out, issued, nil
}

// issueCredentialToken makes rec's token (and, for an access token, its
// session) and records the token id on rec.
func (s *Service) issueCredentialToken(tx *kv.Txn, rec *credentialRecord, user userRecord, now time.Time) (Issued, error) {
	owner := rec.ID
	if rec.Type == CredAccessToken {
		if rec.SessionID != "" {
			// The session may have been swept after the credential expired.
			err := tx.Get(tableSessions, rec.SessionID, &sessionRecord{})
			if errors.Is(err, kv.ErrNotFound) {
				rec.SessionID = ""
			} else if err != nil {
				return Issued{}, err
			}
		}
		if rec.SessionID == "" {
			sess := sessionRecord{
				ID: newID(), Kind: SessionAccessToken, UserID: rec.UserID, ProjectID: rec.ProjectID,
				CredentialID: rec.ID, Roles: rec.Roles, Rules: rec.Rules, Policies: rec.Policies,
				SessionType: rec.SessionType, Unrestricted: rec.Unrestricted, CreatedAt: now, ExpiresAt: rec.ExpiresAt,
				PolicyIDs: rec.PolicyIDs, InlinePolicies: rec.InlinePolicies, CredentialName: rec.Name,
			}
			if err := tx.Put(tableSessions, sess.ID, sess, sess.indexes()...); err != nil {
				return Issued{}, err
			}
			rec.SessionID = sess.ID
		}
		owner = rec.SessionID
	}
	plain, tok, err := issueToken(tx, credPrefix[rec.Type], owner)
	if err != nil {
		return Issued{}, err
	}
	rec.TokenID = tok.ID
	if rec.Type == CredOAuth2 {
		if rec.ClientID == "" {
			rec.ClientID = NewTokenID()
		}
		return Issued{ClientID: rec.ClientID, ClientSecret: plain}, nil
	}
	return Issued{Token: plain}, nil
}

func sortedUnique(xs []string) []string {
	if xs == nil {
		return []string{}
	}
	c := slices.Clone(xs)
	slices.Sort(c)
	return slices.Compact(c)
}

// GetCredential returns the grant's credential.
func (s *Service) GetCredential(ctx context.Context, g Grant) (Credential, error) {
	if g.action != ActReadCredential && g.action != ActManageCredential {
		return Credential{}, Forbidden("not authorized to %s", ActReadCredential)
	}
	var out Credential
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var rec credentialRecord
		if err := tx.Get(tableCredentials, g.credentialID, &rec); err != nil {
			return err
		}
		var err error
		out, err = s.credentialView(tx, rec, s.now())
		return err
	})
	if errors.Is(err, kv.ErrNotFound) {
		return Credential{}, NotFound("credential %s not found", g.credentialID)
	}
	return out, storeErr(err)
}

// CredentialFilter narrows a credential list.
type CredentialFilter struct {
	User           string        // name or id
	ExpiringWithin time.Duration // > 0: only active credentials expiring within this span
}

// ListCredentials lists credentials of the grant's project, or, when the
// grant is not on a project, those the caller owns or administers
// (credlist.go).
func (s *Service) ListCredentials(ctx context.Context, g Grant, f CredentialFilter, page Page) ([]Credential, string, error) {
	if g.action == ActListOwnCredentials {
		return s.listCredentialsAnywhere(ctx, g, f, page)
	}
	if g.action != ActReadProject && g.action != ActManageProject {
		return nil, "", Forbidden("not authorized to list credentials")
	}
	now := s.now()
	var out []Credential
	var next string
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		q := kv.Query{Index: indexProject, Value: g.project.ID}
		var only string
		if f.User != "" {
			u, err := findUser(tx, f.User)
			switch {
			case err == nil:
				only = u.ID
			case !g.admin && errors.Is(err, ErrNotFound):
				// Answered like a user outside the project (an empty
				// list) or another user (forbidden): a list does not
				// tell which user names exist.
				only = "-"
			default:
				return err
			}
		}
		if only == "-" {
			return nil
		}
		if only != "" {
			q = kv.Query{Index: indexUser, Value: only}
		}
		var err error
		out, next, err = listPage(tx, tableCredentials, q, page, func(_ string, decode func(any) error) (Credential, bool, error) {
			var rec credentialRecord
			if err := decode(&rec); err != nil {
				return Credential{}, false, err
			}
			if (g.project.ID != "" && rec.ProjectID != g.project.ID) || (g.tokenProject != "" && rec.ProjectID != g.tokenProject) {
				return Credential{}, false, nil
			}
			v, err := s.credentialView(tx, rec, now)
			if err != nil {
				return Credential{}, false, err
			}
			if f.ExpiringWithin > 0 && (v.Status != StatusActive || v.ExpiresAt == nil || v.ExpiresAt.After(now.Add(f.ExpiringWithin))) {
				return Credential{}, false, nil
			}
			return v, true, nil
		})
		return err
	})
	if err == nil {
		if _, perr := page.check(); perr != nil {
			return nil, "", perr
		}
	}
	return out, next, storeErr(err)
}

// RotateInput for credentials.
type CredentialRotate struct {
	// Grace keeps the previous token working this long; 0 ends it at once.
	Grace time.Duration
}

// MaxGrace bounds a rotation's grace period.
const MaxGrace = 7 * 24 * time.Hour

// RotateCredential issues a new token (new token id) for the grant's
// credential. The previous one stops working at once, or after the grace.
func (s *Service) RotateCredential(ctx context.Context, g Grant, in CredentialRotate) (Credential, Issued, error) {
	if err := g.require(ActManageCredential); err != nil {
		return Credential{}, Issued{}, err
	}
	if in.Grace < 0 || in.Grace > MaxGrace {
		return Credential{}, Issued{}, Invalid(CodeInvalidArgument, "grace must be between 0 and %s", MaxGrace)
	}
	now := s.now()
	var out Credential
	var issued Issued
	err := s.update(ctx, g.principal, "credential.rotate", func(tx *kv.Txn, c *change) error {
		c.set("credential", g.credentialID)
		var rec credentialRecord
		if err := tx.Get(tableCredentials, g.credentialID, &rec); err != nil {
			return notFoundAs(err, "credential %s not found", g.credentialID)
		}
		c.set("project", rec.ProjectID, "user", rec.UserID)
		if rec.RevokedAt != nil {
			return Conflict(CodeConflict, "credential %s is revoked", rec.ID)
		}
		if rec.ExpiresAt != nil && !now.Before(*rec.ExpiresAt) {
			return Conflict(CodeConflict, "credential %s expired at %s: a new token would not work either; create a new credential", rec.ID, rec.ExpiresAt.Format(time.RFC3339))
		}
		var user userRecord
		if err := tx.Get(tableUsers, rec.UserID, &user); err != nil {
			return err
		}
		grace, err := restartCount(tx, &rec, in.Grace, c)
		if err != nil {
			return err
		}
		owner := rec.ID
		if rec.Type == CredAccessToken {
			owner = rec.SessionID
		}
		if err := retireTokens(tx, owner, now, grace); err != nil {
			return err
		}
		if issued, err = s.issueCredentialToken(tx, &rec, user, now); err != nil {
			return err
		}
		rec.RotatedAt = &now
		c.set("token_id", rec.TokenID, "grace", grace.String())
		if err := tx.Put(tableCredentials, rec.ID, rec, rec.indexes()...); err != nil {
			return err
		}
		out, err = s.credentialView(tx, rec, now)
		return err
	})
	if err != nil {
		return Credential{}, Issued{}, storeErr(err)
	}
	return out, issued, nil
}

// RevokeCredential ends a credential: its tokens and sessions stop working
// at once. The record stays, with status revoked.
func (s *Service) RevokeCredential(ctx context.Context, g Grant) (Credential, error) {
	if err := g.require(ActManageCredential); err != nil {
		return Credential{}, err
	}
	now := s.now()
	var out Credential
	err := s.update(ctx, g.principal, "credential.revoke", func(tx *kv.Txn, c *change) error {
		c.set("credential", g.credentialID)
		var rec credentialRecord
		if err := tx.Get(tableCredentials, g.credentialID, &rec); err != nil {
			return notFoundAs(err, "credential %s not found", g.credentialID)
		}
		c.set("project", rec.ProjectID, "user", rec.UserID)
		if rec.RevokedAt == nil {
			rec.RevokedAt = &now
			if err := endCredential(tx, rec, now); err != nil {
				return err
			}
			if err := tx.Put(tableCredentials, rec.ID, rec, rec.indexes()...); err != nil {
				return err
			}
		}
		var err error
		out, err = s.credentialView(tx, rec, now)
		return err
	})
	if err != nil {
		return Credential{}, storeErr(err)
	}
	return out, nil
}

// DeleteCredential deletes a credential with its tokens and sessions.
func (s *Service) DeleteCredential(ctx context.Context, g Grant) error {
	if err := g.require(ActManageCredential); err != nil {
		return err
	}
	err := s.update(ctx, g.principal, "credential.delete", func(tx *kv.Txn, c *change) error {
		c.set("credential", g.credentialID)
		var rec credentialRecord
		if err := tx.Get(tableCredentials, g.credentialID, &rec); err != nil {
			return notFoundAs(err, "credential %s not found", g.credentialID)
		}
		c.set("project", rec.ProjectID, "user", rec.UserID)
		return deleteCredential(tx, rec, s.now())
	})
	return storeErr(err)
}

// endCredential removes a credential's tokens and sessions.
func endCredential(tx *kv.Txn, rec credentialRecord, now time.Time) error {
	if err := retireTokens(tx, rec.ID, now, 0); err != nil {
		return err
	}
	return deleteSessionsBy(tx, indexCredential, rec.ID, now)
}

func deleteCredential(tx *kv.Txn, rec credentialRecord, now time.Time) error {
	if err := endCredential(tx, rec, now); err != nil {
		return err
	}
	if err := tx.Delete(tableCredentialUse, rec.ID); err != nil && !errors.Is(err, kv.ErrNotFound) {
		return err
	}
	return tx.Delete(tableCredentials, rec.ID)
}

// tableCredentialUse keeps each credential's usage counters apart from the
// credential itself: an authentication counts in a record of its own, so
// that it changes nothing the bearer cache depends on (a credential's
// type, expiry and revocation) and does not end every cached token.
const tableCredentialUse = "credential_use"

type credentialUse struct {
	AuthnCount int        `json:"authn_count"`
	LastUsedAt *time.Time `json:"last_used_at,omitempty"`
}

// withUse reads rec's usage counters into it. A credential that has none
// yet keeps what its own record says (counters from before they moved).
func withUse(tx *kv.Txn, rec *credentialRecord) error {
	var u credentialUse
	err := tx.Get(tableCredentialUse, rec.ID, &u)
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	rec.AuthnCount, rec.LastUsedAt = u.AuthnCount, u.LastUsedAt
	return nil
}

// dropCredentialsBeyond deletes the user's credentials in a project whose
// roles are no longer a subset of held, and returns how many.
func (s *Service) dropCredentialsBeyond(tx *kv.Txn, userID, projectID string, held Role) (int, error) {
	var doomed []credentialRecord
	err := tx.List(tableCredentials, kv.Query{Index: indexUser, Value: userID}, func(_ string, decode func(any) error) error {
		var rec credentialRecord
		if err := decode(&rec); err != nil {
			return err
		}
		if rec.ProjectID == projectID && maxRole(rec.Roles) > held {
			doomed = append(doomed, rec)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	now := s.now()
	for _, rec := range doomed {
		if err := deleteCredential(tx, rec, now); err != nil {
			return 0, err
		}
	}
	return len(doomed), nil
}

// deleteUserDependents deletes a user's roles, credentials and sessions.
func deleteUserDependents(tx *kv.Txn, userID string, now time.Time) error {
	var roleIDs []string
	var creds []credentialRecord
	if err := tx.List(tableRoles, kv.Query{Index: indexUser, Value: userID}, func(id string, _ func(any) error) error {
		roleIDs = append(roleIDs, id)
		return nil
	}); err != nil {
		return err
	}
	if err := tx.List(tableCredentials, kv.Query{Index: indexUser, Value: userID}, func(_ string, decode func(any) error) error {
		var rec credentialRecord
		if err := decode(&rec); err != nil {
			return err
		}
		creds = append(creds, rec)
		return nil
	}); err != nil {
		return err
	}
	for _, id := range roleIDs {
		if err := tx.Delete(tableRoles, id); err != nil {
			return err
		}
	}
	for _, rec := range creds {
		if err := deleteCredential(tx, rec, now); err != nil {
			return err
		}
	}
	var bindings []string
	if err := tx.List(tableBindings, kv.Query{Index: indexUser, Value: userID}, func(id string, _ func(any) error) error {
		bindings = append(bindings, id)
		return nil
	}); err != nil {
		return err
	}
	for _, id := range bindings {
		if err := tx.Delete(tableBindings, id); err != nil {
			return err
		}
	}
	return deleteSessionsBy(tx, indexUser, userID, now)
}

// withinToken narrows a credential that a token creates to the token's
// own limits: its access rules (inherited when none are given; otherwise
// each must be one of the token's) and its expiry.
func withinToken(t *TokenIdentity, in *CredentialInput, expires **time.Time) error {
	if t.Rules != nil {
		own := t.Rules.Rules()
		if in.AccessRules == nil {
			in.AccessRules = own
		}
		for _, r := range in.AccessRules {
			if r.ID != "" || !slices.ContainsFunc(own, func(o AccessRule) bool {
				return o.Service == r.Service && o.Method == r.Method && o.Path == r.Path
			}) {
				return Forbidden("a token may only pass on access rules it has itself")
			}
		}
	}
	if t.ExpiresAt != nil && (*expires == nil || (*expires).After(*t.ExpiresAt)) {
		e := t.ExpiresAt.UTC()
		*expires = &e
	}
	return nil
}
