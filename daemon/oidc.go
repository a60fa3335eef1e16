package daemon

// Tokens other systems accept (issue #15, part 3): the configurable
// issuer and the discovery document built from it, audiences (RFC 8707
// resource indicators and the RFC 8693 audience parameter) checked
// against a per-credential allow-list, and RFC 8693 token exchange of a
// coffer bearer for an audience-scoped JWT.
//
// Two rules hold everywhere here:
//   - aud never defaults silently: a client that names an audience gets
//     exactly that audience or invalid_target, never the default;
//   - an exchange never widens: the JWT it mints has at most the subject
//     token's roles, its rules and policies, its credential's audiences,
//     and expires no later than the subject token.

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	// CodeInvalidTarget is RFC 8707 §2's error: an audience or resource
	// the client may not have a token for.
	CodeInvalidTarget = "invalid_target"
	// CodeInvalidGrant is RFC 6749 §5.2's error for a subject token that
	// is unknown, expired, revoked or otherwise unusable (RFC 8693 §2.2.2).
	CodeInvalidGrant = "invalid_grant"
	// CodeUnsupportedTokenType is RFC 8693 §2.2.2's error for a
	// subject_token_type the server does not take.
	CodeUnsupportedTokenType = "unsupported_token_type"

	// TokenTypeAccessToken is RFC 8693 §3's type of an OAuth2 access
	// token: coffer's cfs_ and cft_ tokens and its JWTs are all one.
	TokenTypeAccessToken = "urn:ietf:params:oauth:token-type:access_token"
	// TokenTypeJWT is RFC 8693 §3's type of a JWT; a client may ask for
	// it as requested_token_type (coffer's answer is a JWT either way).
	TokenTypeJWT = "urn:ietf:params:oauth:token-type:jwt"

	// maxAudiences bounds a credential's allow-list; maxAudienceLen one
	// value of it (or of a request).
	maxAudiences   = 16
	maxAudienceLen = 256
)

// CheckIssuer says whether iss can be coffer's issuer: an absolute http or
// https URL with a host and nothing that OpenID Connect Discovery §4.1
// forbids (query, fragment), and no user info.
func CheckIssuer(iss string) error {
	u, err := url.Parse(iss)
	switch {
	case err != nil:
		return fmt.Errorf("issuer %q is not a URL: %w", iss, err)
	case u.Scheme != "https" && u.Scheme != "http":
		return fmt.Errorf("issuer %q must be an https:// (or http://) URL", iss)
	case u.Host == "":
		return fmt.Errorf("issuer %q has no host", iss)
	case u.User != nil:
		return fmt.Errorf("issuer %q must not carry user info", iss)
	case u.RawQuery != "" || u.ForceQuery || u.Fragment != "" || strings.Contains(iss, "#"):
		return fmt.Errorf("issuer %q must not have a query or a fragment", iss)
	case strings.ContainsFunc(iss, unicode.IsSpace):
		return fmt.Errorf("issuer %q contains white space", iss)
	}
	return nil
}

// ServerMetadata returns the RFC 8414 document.
func (s *Service) ServerMetadata() ServerMetadata { return Metadata(s.issuer(), s.signingAlgs()...) }

// OpenIDConfiguration returns the OpenID Connect Discovery document: the
// same document as ServerMetadata, so the two can never disagree.
func (s *Service) OpenIDConfiguration() ServerMetadata { return s.ServerMetadata() }

// signingAlgs are the algorithms of the keys in the JWK set, in its order.
func (s *Service) signingAlgs() []string {
	var out []string
	for _, k := range s.JWKS().Keys {
		if !slices.Contains(out, k.Alg) {
			out = append(out, k.Alg)
		}
	}
	return out
}

// checkAudienceValue checks one audience, of an allow-list or of a
// request: printable, no white space, bounded.
func checkAudienceValue(a string) error {
	switch {
	case a == "":
		return errors.New("an audience is empty")
	case len(a) > maxAudienceLen:
		return fmt.Errorf("an audience is longer than %d bytes", maxAudienceLen)
	case strings.ContainsFunc(a, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return errors.New("an audience contains white space or unprintable characters")
	}
	return nil
}

// checkAudienceList validates a credential's allow-list and returns it
// without repeats, in the order given (the first is the default).
func checkAudienceList(in []string) ([]string, error) {
	if in == nil {
		return nil, nil
	}
	if len(in) > maxAudiences {
		return nil, Invalid(CodeInvalidCredential, "at most %d audiences", maxAudiences)
	}
	var out []string
	for _, a := range in {
		if err := checkAudienceValue(a); err != nil {
			return nil, Invalid(CodeInvalidCredential, "audiences: %v", err)
		}
		if !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	return out, nil
}

// Audiences is what a token request asked for: RFC 8693 audience values
// and RFC 8707 resource values. Both are audiences of the token.
type Audiences struct {
	Audience []string
	Resource []string
}

// tokenAudience decides a token's aud for a credential whose allow-list
// is allowed: the asked values when every one is allowed (or is coffer's
// issuer), else invalid_target; when none is asked, the first of the
// allow-list, or the issuer for a credential without one (coffer's
// behaviour before allow-lists). It never substitutes one audience for
// another.
func (s *Service) tokenAudience(allowed []string, ask Audiences) ([]string, error) {
	var want []string
	for _, r := range ask.Resource {
		// RFC 8707 §2: an absolute URI without a fragment.
		u, err := url.Parse(r)
		if err != nil || !u.IsAbs() || u.Fragment != "" || strings.Contains(r, "#") {
			return nil, newErr(ErrInvalidArgument, CodeInvalidTarget, "resource must be an absolute URI without a fragment")
		}
	}
	for _, a := range slices.Concat(ask.Audience, ask.Resource) {
		if err := checkAudienceValue(a); err != nil {
			return nil, newErr(ErrInvalidArgument, CodeInvalidTarget, "%v", err)
		}
		if !slices.Contains(want, a) {
			want = append(want, a)
		}
	}
	if len(want) == 0 {
		if len(allowed) > 0 {
			return []string{allowed[0]}, nil
		}
		return []string{s.issuer()}, nil
	}
	if len(want) > maxAudiences {
		return nil, newErr(ErrInvalidArgument, CodeInvalidTarget, "at most %d audiences", maxAudiences)
	}
	for _, a := range want {
		if a != s.issuer() && !slices.Contains(allowed, a) {
			// The value is the client's own: named in the answer to it,
			// bounded and printable (checked above).
			return nil, newErr(ErrInvalidArgument, CodeInvalidTarget, "audience %q is not among the credential's audiences", a)
		}
	}
	return want, nil
}

// refuseTarget records an invalid_target refusal in the audit log.
func (s *Service) refuseTarget(caller Principal, tokenID, credID string) {
	ap := auditPrincipal(caller)
	ap.TokenID = tokenID
	s.record(audit.Event{Action: "oauth2.token", Outcome: audit.OutcomeDenied, Code: CodeInvalidTarget,
		Reason: "audience not on the credential's allow-list", Principal: ap, Target: map[string]string{"credential": credID}})
}

// TokenExchangeRequest is an RFC 8693 §2.1 request, as coffer takes it:
// no client authentication (the subject token authenticates) and no
// actor token (coffer does not do delegation).
type TokenExchangeRequest struct {
	SubjectToken       string `redact:"true"`
	SubjectTokenType   string
	RequestedTokenType string // "", access_token or jwt
	Scope              string // roles: a subset of the subject's
	Audiences
}

// TokenExchange runs RFC 8693 token exchange: a live coffer bearer (a
// cfs_ session token, a cft_ access token or an OAuth2 JWT) is exchanged
// for an RFC 9068 JWT for the asked audience, within the allow-list of the
// subject's credential. The new JWT has its own session, a child of the
// subject's: revoking the subject's session (or its credential) ends it
// too. It carries at most the subject's roles (scope narrows them), its
// access rules and policies, and it expires no later than the subject
// token. A JWT that came from an exchange is not exchanged again.
//
// An unusable subject token is invalid_grant and counts as a failed
// authentication of the caller (the principal of ctx), as every token
// check does; refusals are in the audit log.
func (s *Service) TokenExchange(ctx context.Context, req TokenExchangeRequest) (AccessToken, error) {
	caller := PrincipalFrom(ctx)
	if err := s.admitAuth(ctx, caller, "oauth2.token", ""); err != nil {
		return AccessToken{}, err
	}
	at, err := s.tokenExchange(ctx, caller, req)
	if CodeOf(err) == CodeInvalidGrant {
		s.authFailed(caller, "")
	}
	return at, err
}

func (s *Service) tokenExchange(ctx context.Context, caller Principal, req TokenExchangeRequest) (AccessToken, error) {
	switch {
	case req.SubjectToken == "":
		return AccessToken{}, Invalid(CodeInvalidRequest, "subject_token is required")
	case req.SubjectTokenType == "":
		return AccessToken{}, Invalid(CodeInvalidRequest, "subject_token_type is required")
	case req.SubjectTokenType != TokenTypeAccessToken:
		return AccessToken{}, Invalid(CodeUnsupportedTokenType, "subject_token_type must be %s", TokenTypeAccessToken)
	case req.RequestedTokenType != "" && req.RequestedTokenType != TokenTypeAccessToken && req.RequestedTokenType != TokenTypeJWT:
		return AccessToken{}, Invalid(CodeInvalidRequest, "requested_token_type must be %s or %s", TokenTypeAccessToken, TokenTypeJWT)
	}
	tokenID := publicTokenID(req.SubjectToken)
	invalidGrant := func(why error) error {
		s.tokenRefused(ctx, caller, "oauth2.token", tokenID, why)
		return Invalid(CodeInvalidGrant, "the subject token is invalid or expired")
	}
	now := s.now()
	var r resolved
	var proj projectRecord
	var subjectTokenID string
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		if r, subjectTokenID, err = s.resolveBearer(tx, req.SubjectToken, now); err != nil {
			return err
		}
		if r.session.Parent != "" {
			return badToken("a token from an exchange is not exchanged again")
		}
		if r.elsewhere {
			// A service shown a token for it must not trade it for one
			// for another service, or for coffer.
			return badToken("a jwt for another audience is not exchanged")
		}
		return tx.Get(tableProjects, r.session.ProjectID, &proj)
	})
	var bad *errBadToken
	if errors.As(err, &bad) {
		return AccessToken{}, invalidGrant(err)
	}
	if err != nil {
		return AccessToken{}, storeErr(err)
	}
	cred := *r.cred
	roles := r.session.Roles
	if scope := strings.TrimSpace(req.Scope); scope != "" {
		roles = sortedUnique(strings.Fields(scope))
		for _, role := range roles {
			if !containsString(r.session.Roles, role) {
				s.recordDenial(caller, "oauth2.token", CodeInvalidScope, "scope wider than the subject token", map[string]string{"credential": cred.ID})
				return AccessToken{}, newErr(ErrInvalidArgument, CodeInvalidScope, "scope %q is not among the subject token's roles", role)
			}
		}
	}
	aud, err := s.tokenAudience(cred.Audiences, req.Audiences)
	if err != nil {
		s.refuseTarget(caller, tokenID, cred.ID)
		return AccessToken{}, err
	}
	// Never past the subject token: its session's expiry, a rotated
	// token's grace, an access token's credential expiry, a JWT's exp.
	ttl := r.user.AccessTokenTTL
	if ttl <= 0 {
		ttl = DefaultAccessTokenTTL
	}
	exp := now.Add(ttl)
	if !r.until.IsZero() && r.until.Before(exp) {
		exp = r.until
	}
	exp = exp.UTC().Truncate(time.Second) // the JWT's exp is whole seconds
	if exp.Unix() <= now.Unix() {
		return AccessToken{}, invalidGrant(errors.New("subject token expires within a second"))
	}
	clientID := cred.ClientID
	if clientID == "" {
		clientID = cred.ID
	}
	s.sig.mint.RLock()
	defer s.sig.mint.RUnlock()
	sess := sessionRecord{
		ID: newID(), Kind: SessionOAuth2, UserID: r.user.ID, ProjectID: r.session.ProjectID, CredentialID: cred.ID,
		Roles: roles, Rules: r.session.Rules, Policies: r.session.Policies, SessionType: r.session.SessionType,
		Unrestricted: r.session.Unrestricted, CreatedAt: now, ExpiresAt: &exp, Kid: s.currentKid(),
		PolicyIDs: r.session.PolicyIDs, InlinePolicies: r.session.InlinePolicies, CredentialName: r.session.CredentialName,
		Parent: r.session.ID,
	}
	if r.verifier != nil {
		// An opaque subject token: its record's id, whose end ends this.
		sess.ParentToken = subjectTokenID
	}
	jwt, err := MintJWT(ctx, s.keys, AccessClaims{
		Issuer: s.issuer(), Subject: r.user.ID, Audience: aud, ClientID: clientID,
		IssuedAt: now.Unix(), ExpiresAt: exp.Unix(), JTI: sess.ID, Scope: strings.Join(roles, " "),
		Roles: roles, Policies: r.session.Policies, Project: proj.Name,
	})
	if err != nil {
		return AccessToken{}, hsmErr(err)
	}
	err = s.update(ctx, caller, "oauth2.token", func(tx *kv.Txn, c *change) error {
		c.set("grant_type", "token-exchange", "token_id", tokenID, "subject_session", r.session.ID, "session", sess.ID,
			"credential", cred.ID, "user", r.user.ID, "project", r.session.ProjectID, "audience", auditValue(strings.Join(aud, " ")))
		// The subject may have been revoked since it was checked.
		again, _, err := s.resolveBearer(tx, req.SubjectToken, now)
		if err != nil {
			return err
		}
		if again.session.ID != r.session.ID {
			return badToken("subject token changed")
		}
		return tx.Put(tableSessions, sess.ID, sess, sess.indexes()...)
	})
	if errors.As(err, &bad) {
		return AccessToken{}, invalidGrant(err)
	}
	if err != nil {
		return AccessToken{}, storeErr(err)
	}
	return AccessToken{Token: jwt, ExpiresIn: exp.Unix() - now.Unix(), Scope: strings.Join(roles, " "), SessionID: sess.ID}, nil
}
