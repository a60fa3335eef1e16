package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// User is a user.
type User struct {
	ID             string        `json:"id"`
	Name           string        `json:"name"`
	Kind           string        `json:"kind"`
	Disabled       bool          `json:"disabled"`
	UnixUIDs       []uint32      `json:"unix_uids"`
	VsockCIDs      []uint32      `json:"vsock_cids"`
	VMNames        []string      `json:"vm_names"`
	AccessTokenTTL string        `json:"access_token_ttl"`
	Roles          []ProjectRole `json:"roles,omitempty"`
	Policies       []string      `json:"policies"`
	CreatedAt      time.Time     `json:"created_at"`
	UpdatedAt      time.Time     `json:"updated_at"`
}

// UserCreateRequest is POST /v1/users.
type UserCreateRequest struct {
	Name           string   `json:"name"`
	Kind           string   `json:"kind,omitempty"`
	Disabled       bool     `json:"disabled,omitempty"`
	UnixUIDs       []uint32 `json:"unix_uids,omitempty"`
	VsockCIDs      []uint32 `json:"vsock_cids,omitempty"`
	VMNames        []string `json:"vm_names,omitempty"`
	AccessTokenTTL string   `json:"access_token_ttl,omitempty"`
	Policies       []string `json:"policies,omitempty"`
}

// UserPatchRequest is PATCH /v1/users/{u}; absent fields stay.
type UserPatchRequest struct {
	Disabled       *bool     `json:"disabled,omitempty"`
	UnixUIDs       *[]uint32 `json:"unix_uids,omitempty"`
	VsockCIDs      *[]uint32 `json:"vsock_cids,omitempty"`
	VMNames        *[]string `json:"vm_names,omitempty"`
	AccessTokenTTL *string   `json:"access_token_ttl,omitempty"`
	Policies       *[]string `json:"policies,omitempty"`
}

// ProjectRole is a user's role on a project.
type ProjectRole struct {
	Project   string `json:"project"`
	ProjectID string `json:"project_id"`
	User      string `json:"user,omitempty"`
	UserID    string `json:"user_id,omitempty"`
	Role      string `json:"role"`
}

// AccessRule is {service, method, path}, or {id} of a saved rule.
type AccessRule struct {
	ID      string `json:"id,omitempty"`
	Service string `json:"service,omitempty"`
	Method  string `json:"method,omitempty"`
	Path    string `json:"path,omitempty"`
}

// SavedRule is a reusable access rule.
type SavedRule struct {
	ID        string    `json:"id"`
	Service   string    `json:"service"`
	Method    string    `json:"method"`
	Path      string    `json:"path"`
	CreatedAt time.Time `json:"created_at"`
}

// Credential is a credential. Token and ClientSecret are set only in the
// answer to create and rotate: the secret is shown once.
type Credential struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Description string       `json:"description,omitempty"`
	Type        string       `json:"type"`
	User        string       `json:"user"`
	UserID      string       `json:"user_id"`
	Project     string       `json:"project"`
	ProjectID   string       `json:"project_id"`
	Roles       []string     `json:"roles"`
	AccessRules []AccessRule `json:"access_rules"`
	Policies    []string     `json:"policies"`
	// InlinePolicies are the rules written on the credential (and on the
	// token that made it).
	InlinePolicies []PolicyDocument `json:"inline_policies,omitempty"`
	SessionType    string           `json:"session_type"`
	Unrestricted   bool             `json:"unrestricted"`
	TokenID        string           `json:"token_id"`
	ClientID       string           `json:"client_id,omitempty"`
	ExpiresAt      *time.Time       `json:"expires_at,omitempty"`
	MaxAuthn       int              `json:"max_authn"`
	AuthnCount     int              `json:"authn_count"`
	LastUsedAt     *time.Time       `json:"last_used_at,omitempty"`
	CreatedAt      time.Time        `json:"created_at"`
	RotatedAt      *time.Time       `json:"rotated_at,omitempty"`
	RevokedAt      *time.Time       `json:"revoked_at,omitempty"`
	Status         string           `json:"status"`
	// Audiences its JWTs may be issued for; the first is the default.
	Audiences []string `json:"audiences,omitempty"`

	Token        string `json:"token,omitempty" redact:"true"`
	ClientSecret string `json:"client_secret,omitempty" redact:"true"`
}

// CredentialCreateRequest is POST /v1/projects/{p}/credentials.
// AccessRules absent or null: unrestricted by rules; []: nothing allowed.
// ExpireIn (relative) and ExpiresAt (RFC 3339) are two ways to say one
// thing: give at most one.
type CredentialCreateRequest struct {
	Type         string          `json:"type"`
	User         string          `json:"user,omitempty"`
	Name         string          `json:"name,omitempty"`
	Description  string          `json:"description,omitempty"`
	Roles        RoleNames       `json:"roles,omitempty"`
	AccessRules  []AccessRule    `json:"access_rules"`
	Policies     []string        `json:"policies,omitempty"`
	InlinePolicy *PolicyDocument `json:"inline_policy,omitempty"`
	ExpireIn     string          `json:"expire_in,omitempty"`
	ExpiresAt    string          `json:"expires_at,omitempty"`
	MaxAuthn     int             `json:"max_authn,omitempty"`
	OneTime      bool            `json:"one_time,omitempty"`
	SessionType  string          `json:"session_type,omitempty"`
	Unrestricted bool            `json:"unrestricted,omitempty"`
	// Audiences is the allow-list of the audiences its JWTs may be issued
	// for (RFC 8707 resource, RFC 8693 audience); the first is the
	// default. Absent: coffer's issuer only.
	Audiences []string `json:"audiences,omitempty"`
}

// CredentialRotateRequest is POST /v1/credentials/{id}/rotate.
type CredentialRotateRequest struct {
	Grace string `json:"grace,omitempty"`
}

// Session is a session; Token is set only in the answer to a login.
type Session struct {
	ID           string       `json:"id"`
	Kind         string       `json:"kind"`
	User         string       `json:"user"`
	UserID       string       `json:"user_id"`
	Project      string       `json:"project"`
	ProjectID    string       `json:"project_id"`
	CredentialID string       `json:"credential_id"`
	Roles        []string     `json:"roles"`
	AccessRules  []AccessRule `json:"access_rules"`
	Policies     []string     `json:"policies"`
	SessionType  string       `json:"session_type"`
	CreatedAt    time.Time    `json:"created_at"`
	ExpiresAt    *time.Time   `json:"expires_at,omitempty"`

	Token string `json:"token,omitempty" redact:"true"`
}

// TokenResponse is the RFC 6749 §5.1 answer of POST /oauth2/token.
type TokenResponse struct {
	AccessToken string `json:"access_token" redact:"true"`
	TokenType   string `json:"token_type"`
	ExpiresIn   int64  `json:"expires_in"`
	Scope       string `json:"scope,omitempty"`
	// IssuedTokenType is set in the answer to a token exchange (RFC 8693
	// §2.2.1).
	IssuedTokenType string `json:"issued_token_type,omitempty"`
}

// OAuth2Error is the RFC 6749 §5.2 error answer.
type OAuth2Error struct {
	Error            string `json:"error"`
	ErrorDescription string `json:"error_description,omitempty"`
}

// Introspection is the RFC 7662 answer plus coffer's fields. An inactive
// token is exactly {"active": false}.
type Introspection struct {
	Active       bool         `json:"active"`
	TokenType    string       `json:"token_type,omitempty"`
	ClientID     string       `json:"client_id,omitempty"`
	Username     string       `json:"username,omitempty"`
	Subject      string       `json:"sub,omitempty"`
	Project      string       `json:"project,omitempty"`
	Scope        string       `json:"scope,omitempty"`
	Roles        []string     `json:"roles,omitempty"`
	Policies     []string     `json:"policies,omitempty"`
	AccessRules  []AccessRule `json:"access_rules,omitempty"`
	CredentialID string       `json:"credential_id,omitempty"`
	SessionID    string       `json:"session_id,omitempty"`
	IssuedAt     int64        `json:"iat,omitempty"`
	ExpiresAt    int64        `json:"exp,omitempty"`
	Issuer       string       `json:"iss,omitempty"`
	Audience     []string     `json:"aud,omitempty"` // a JWT's
}

// MarshalJSON writes an inactive answer as exactly {"active":false}.
func (i Introspection) MarshalJSON() ([]byte, error) {
	if !i.Active {
		return []byte(`{"active":false}`), nil
	}
	type plain Introspection
	return json.Marshal(plain(i))
}

// AuthorizeRequest is POST /v1/authorize.
type AuthorizeRequest struct {
	Token   string `json:"token" redact:"true"`
	Service string `json:"service"`
	Method  string `json:"method"`
	Path    string `json:"path"`
	// Audience is the asking service's own audience: a JWT minted for
	// other audiences only is authorized where one of them asks.
	Audience string `json:"audience,omitempty"`
	// Explain asks which policy rules held (Decision.Matched).
	Explain bool `json:"explain,omitempty"`
}

// Decision is the answer of POST /v1/authorize.
type Decision struct {
	Allowed bool     `json:"allowed"`
	Reason  string   `json:"reason"`
	User    string   `json:"user,omitempty"`
	Project string   `json:"project,omitempty"`
	Roles   []string `json:"roles,omitempty"`
	// Policies are the policies that applied; Matched, when explained,
	// the rules whose condition held ("policy#rule").
	Policies []string `json:"policies,omitempty"`
	Matched  []string `json:"matched,omitempty"`
	// Audience is the token's aud when it is a JWT.
	Audience []string `json:"audience,omitempty"`
}

// RoleNames is a list of role names. It is written as strings; it is read
// from strings or from objects naming the role, {"name": "reader"}, the
// form application-credential clients send (a list may mix them).
type RoleNames []string

// UnmarshalJSON reads ["reader", {"name": "member"}]; null is no list.
func (r *RoleNames) UnmarshalJSON(b []byte) error {
	var raw []json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return errors.New("roles must be a list of role names")
	}
	if raw == nil {
		*r = nil
		return nil
	}
	out := make(RoleNames, 0, len(raw))
	for i, e := range raw {
		var name string
		if err := json.Unmarshal(e, &name); err == nil {
			out = append(out, name)
			continue
		}
		var obj struct {
			Name *string `json:"name"`
		}
		dec := json.NewDecoder(bytes.NewReader(e))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&obj); err != nil || obj.Name == nil {
			return fmt.Errorf(`roles[%d] must be a role name or {"name": ROLE} (coffer's roles reader, member and admin have no ids)`, i)
		}
		out = append(out, *obj.Name)
	}
	*r = out
	return nil
}
