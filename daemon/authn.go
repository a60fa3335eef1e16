package daemon

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/kv"
)

// DefaultIssuer is the OAuth2 issuer when none is configured: the host
// name clients use over the Unix socket (http://coffer/...).
const DefaultIssuer = "http://coffer"

// errUnauthenticated is the one answer to every bad token, so that the
// reason (unknown, wrong, expired, revoked, disabled...) is no oracle. The
// reason goes to the log.
func errUnauthenticated() error {
	return newErr(ErrUnauthenticated, CodeUnauthenticated, "invalid or expired token")
}

func (s *Service) issuer() string {
	if s.cfg.Issuer != "" {
		return s.cfg.Issuer
	}
	return DefaultIssuer
}

// tokenRefused records why a token presented by p was refused, without
// the token: a denial in the audit log (coalesced there when repeated)
// naming the token's public id, and a debug line. The reasons are fixed
// phrases; the caller only ever sees the one 401.
func (s *Service) tokenRefused(ctx context.Context, p Principal, action, tokenID string, why error) {
	s.log.Debug("authentication failed", "for", action, "token_id", tokenID, "reason", why.Error())
	ap := auditPrincipal(p)
	ap.TokenID = tokenID
	s.record(audit.Event{Action: action, Outcome: audit.OutcomeDenied, Code: CodeUnauthenticated, Reason: why.Error(), Principal: ap, Target: routeTarget(ctx)})
}

// admitAuth asks the failed-authentication limiter whether p may try a
// token now, and records the refusal when not.
func (s *Service) admitAuth(ctx context.Context, p Principal, action, clientID string) error {
	err := s.authGate.admit(p, clientID)
	if err != nil {
		s.counters.rateLimited.Add(1)
		s.recordDenial(p, action, CodeRateLimited, "too many failed authentications", routeTarget(ctx))
	}
	return err
}

// displayTokenID is the public id of a parsed token as the audit log names
// it: "cfa_<id>".
func displayTokenID(tok ParsedToken) string { return tok.Prefix + "_" + tok.ID }

// session resolution shared by bearer authentication, introspection and
// /v1/authorize.
type resolved struct {
	session sessionRecord
	user    userRecord
	cred    *credentialRecord // resolveBearer only (see credentialState)
	kind    string
	// until is when the bearer stops being valid by time alone: the
	// session's expiry, a rotated token's grace, a JWT's exp.
	until time.Time
	// verifier is an opaque token's stored verifier (nil for a JWT).
	verifier []byte
	// elsewhere: a JWT whose aud does not name coffer's issuer.
	elsewhere bool
	// aud is a JWT's audience (nil for an opaque token).
	aud []string
	// credTokenID is the public id of the credential's token, as stored.
	credTokenID string
}

// earliest returns the earlier of a (zero: none) and *b (nil: none).
func earliest(a time.Time, b *time.Time) time.Time {
	if b == nil || (!a.IsZero() && a.Before(*b)) {
		return a
	}
	return *b
}

// resolveBearer checks a bearer token (cfs_, cft_ or a JWT) and returns
// the live session behind it. Any failure is an *errBadToken (or a store
// error).
func (s *Service) resolveBearer(tx *kv.Txn, bearer string, now time.Time) (resolved, string, error) {
	return s.resolveBearerAt(tx, bearer, now, nil)
}

// credentialState is what checking a bearer needs of its credential. The
// bearer cache's misses decode only this: a credential record also holds
// its name, rules, roles and policies (the session has its own copy),
// and decoding them was a third of a miss's JSON work.
type credentialState struct {
	Type      string     `json:"type"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	// TokenID is the public id of the credential's token: what a
	// Kubernetes TokenReview names the token's user by.
	TokenID string `json:"token_id"`
}

// resolveBearerAt is resolveBearer that, given the identity generation
// loaded before tx began, reads the user through the shared identity
// records (idcache.go) and leaves r.cred nil.
func (s *Service) resolveBearerAt(tx *kv.Txn, bearer string, now time.Time, gen *uint64) (resolved, string, error) {
	var r resolved
	var sessionID, tokenID string
	if LooksLikeJWT(bearer) {
		claims, err := VerifyJWT(bearer, s.jwtKeys(), now)
		if err != nil {
			return r, "", badToken(err.Error())
		}
		if claims.Issuer != s.issuer() {
			return r, "", badToken("jwt from another issuer")
		}
		sessionID, tokenID = claims.JTI, "jwt:"+claims.JTI
		r.kind = SessionOAuth2
		r.elsewhere = !containsString(claims.Audience, s.issuer())
		r.aud = claims.Audience
		exp := time.Unix(claims.ExpiresAt, 0)
		r.until = exp
	} else {
		tok, err := ParseToken(bearer)
		if err != nil {
			return r, "", badToken(err.Error())
		}
		tokenID = tok.ID
		if tok.Prefix != PrefixSession && tok.Prefix != PrefixAccessToken {
			return r, tokenID, badToken("a " + tok.Prefix + "_ token is exchanged for a session, not used as a bearer")
		}
		rec, err := checkToken(tx, tok, now)
		if err != nil {
			return r, tokenID, err
		}
		sessionID = rec.Owner
		r.until = earliest(r.until, rec.NotAfter)
		r.verifier = rec.Verifier
	}
	if !validID(sessionID) {
		return r, tokenID, badToken("no such session")
	}
	if err := tx.Get(tableSessions, sessionID, &r.session); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return r, tokenID, badToken("session revoked or gone")
		}
		return r, tokenID, err
	}
	if r.session.expired(now) {
		return r, tokenID, badToken("session expired")
	}
	if r.session.Parent != "" {
		until, err := exchangeSubjectLive(tx, r.session, now)
		if err != nil {
			return r, tokenID, err
		}
		r.until = earliest(r.until, until)
	}
	if r.kind == "" {
		r.kind = r.session.Kind
	} else if r.session.Kind != SessionOAuth2 {
		return r, tokenID, badToken("jwt for a session that is not an oauth2 session")
	}
	if err := s.getUser(tx, r.session.UserID, &r.user, gen); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return r, tokenID, badToken("user gone")
		}
		return r, tokenID, err
	}
	if r.user.Disabled {
		return r, tokenID, badToken("user disabled")
	}
	var cred credentialState
	var full *credentialRecord
	target := any(&cred)
	if gen == nil {
		full = new(credentialRecord)
		target = full
	}
	if err := tx.Get(tableCredentials, r.session.CredentialID, target); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return r, tokenID, badToken("credential gone")
		}
		return r, tokenID, err
	}
	if full != nil {
		cred = credentialState{Type: full.Type, ExpiresAt: full.ExpiresAt, RevokedAt: full.RevokedAt, TokenID: full.TokenID}
	}
	if cred.RevokedAt != nil {
		return r, tokenID, badToken("credential revoked")
	}
	if cred.Type == CredAccessToken && cred.ExpiresAt != nil && !now.Before(*cred.ExpiresAt) {
		return r, tokenID, badToken("credential expired")
	}
	if cred.Type == CredAccessToken {
		r.until = earliest(r.until, cred.ExpiresAt)
	}
	r.until = earliest(r.until, r.session.ExpiresAt)
	r.cred = full
	r.credTokenID = cred.TokenID
	return r, tokenID, nil
}

// exchangeSubjectLive checks that what a token from an exchange (sess,
// with a Parent) was exchanged for is still usable: it lives only while
// its subject's session does and, when the subject was an opaque token,
// while that token does (a rotated access token keeps its session: its
// end, at the rotation's grace, is the token record's). Deleting a session
// or replacing a token bumps the identity generation, so the bearer cache
// sees it too. It returns until when the subject token stays valid by
// time alone (nil: no limit of its own).
func exchangeSubjectLive(tx *kv.Txn, sess sessionRecord, now time.Time) (*time.Time, error) {
	var parent sessionRecord
	if err := tx.Get(tableSessions, sess.Parent, &parent); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil, badToken("subject session of the exchange revoked or gone")
		}
		return nil, err
	}
	if parent.expired(now) {
		return nil, badToken("subject session of the exchange expired")
	}
	if sess.ParentToken == "" {
		return nil, nil
	}
	var tok tokenRecord
	if err := tx.Get(tableTokens, sess.ParentToken, &tok); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return nil, badToken("subject token of the exchange rotated out or gone")
		}
		return nil, err
	}
	if tok.Owner != sess.Parent || (tok.NotAfter != nil && !now.Before(*tok.NotAfter)) {
		return nil, badToken("subject token of the exchange rotated out")
	}
	return tok.NotAfter, nil
}

// identityOf is the identity r stands for. Its rules, roles and policies
// are shared with other identities that have equal ones (s.rules).
func (s *Service) identityOf(r resolved) (*TokenIdentity, error) {
	rules, err := s.rules.compile(r.session.Rules)
	if err != nil {
		return nil, err
	}
	id := &TokenIdentity{
		Kind: r.kind, SessionID: r.session.ID, CredentialID: r.session.CredentialID, UserID: r.user.ID,
		ProjectID: r.session.ProjectID, Roles: s.rules.list(r.session.Roles), Rules: rules, Policies: s.rules.list(r.session.Policies),
		Unrestricted: r.session.Unrestricted, ExpiresAt: r.session.ExpiresAt,
		PolicyIDs: s.rules.list(r.session.PolicyIDs), InlinePolicies: r.session.InlinePolicies,
		CredentialName: r.session.CredentialName, SessionType: r.session.SessionType,
		CredentialTokenID: r.credTokenID,
	}
	for _, d := range id.InlinePolicies {
		id.inline = append(id.inline, s.compiledInline(d))
	}
	return id, nil
}

// Authenticate checks a bearer token and returns p acting as the token's
// session. Every failure is the same 401.
func (s *Service) Authenticate(ctx context.Context, p Principal, bearer string) (Principal, error) {
	if err := s.admitAuth(ctx, p, "authenticate", ""); err != nil {
		return Principal{}, err
	}
	b, err := s.lookupBearer(ctx, p, bearer, "authenticate")
	if err == nil && b.elsewhere {
		// RFC 8707: a token for another audience is not coffer's to
		// accept, or any service it was shown to could use it here.
		s.tokenRefused(ctx, p, "authenticate", "jwt:"+b.ident.SessionID, errors.New("jwt for another audience"))
		err = errUnauthenticated()
	}
	if errors.Is(err, ErrUnauthenticated) {
		s.authFailed(p, "")
	}
	if err != nil {
		return Principal{}, err
	}
	p.Token = b.ident
	return p, nil
}

// sessionExpiry is when a new session of user from cred ends: the user's
// access-token TTL, but never after the credential expires.
func sessionExpiry(now time.Time, user userRecord, cred credentialRecord) time.Time {
	ttl := user.AccessTokenTTL
	if ttl <= 0 {
		ttl = DefaultAccessTokenTTL
	}
	exp := now.Add(ttl)
	if cred.ExpiresAt != nil && cred.ExpiresAt.Before(exp) {
		exp = *cred.ExpiresAt
	}
	return exp.UTC()
}

// authenticateCredential checks a credential's secret (cfa_ or cfo_) and
// counts one authentication against max_authn, atomically: concurrent
// callers never exceed it. It returns the credential and its user.
func (s *Service) authenticateCredential(tx *kv.Txn, tok ParsedToken, wantType string, now time.Time) (credentialRecord, userRecord, error) {
	var cred credentialRecord
	var user userRecord
	rec, err := checkToken(tx, tok, now)
	if err != nil {
		return cred, user, err
	}
	if err := tx.Get(tableCredentials, rec.Owner, &cred); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return cred, user, badToken("credential gone")
		}
		return cred, user, err
	}
	if cred.Type != wantType {
		return cred, user, badToken("credential is a " + cred.Type)
	}
	if err := withUse(tx, &cred); err != nil {
		return cred, user, err
	}
	if err := tx.Get(tableUsers, cred.UserID, &user); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return cred, user, badToken("user gone")
		}
		return cred, user, err
	}
	if st := cred.status(now, user); st != StatusActive {
		return cred, user, badToken("credential " + st)
	}
	return cred, user, nil
}

// countAuthn records one authentication of cred (read with withUse).
func countAuthn(tx *kv.Txn, cred *credentialRecord, now time.Time) error {
	cred.AuthnCount++
	cred.LastUsedAt = &now
	return tx.Put(tableCredentialUse, cred.ID, credentialUse{AuthnCount: cred.AuthnCount, LastUsedAt: cred.LastUsedAt})
}

// newSession makes the session an authentication of cred creates.
func newSession(kind string, cred credentialRecord, user userRecord, roles []string, now time.Time) sessionRecord {
	exp := sessionExpiry(now, user, cred)
	return sessionRecord{
		ID: newID(), Kind: kind, UserID: user.ID, ProjectID: cred.ProjectID, CredentialID: cred.ID,
		Roles: roles, Rules: cred.Rules, Policies: cred.Policies, SessionType: cred.SessionType,
		Unrestricted: cred.Unrestricted, CreatedAt: now, ExpiresAt: &exp,
		PolicyIDs: cred.PolicyIDs, InlinePolicies: cred.InlinePolicies, CredentialName: cred.Name,
	}
}

// Login exchanges an auth token (cfa_) for a session and its cfs_ token.
// The caller (for the rate limit on failures) is the principal of ctx.
func (s *Service) Login(ctx context.Context, authToken string) (Session, string, error) {
	caller := PrincipalFrom(ctx)
	if err := s.admitAuth(ctx, caller, "auth.login", ""); err != nil {
		return Session{}, "", err
	}
	sess, plain, err := s.login(ctx, caller, authToken)
	if errors.Is(err, ErrUnauthenticated) {
		s.authFailed(caller, "")
	}
	return sess, plain, err
}

func (s *Service) login(ctx context.Context, caller Principal, authToken string) (Session, string, error) {
	tok, err := ParseToken(authToken)
	if err != nil {
		s.tokenRefused(ctx, caller, "auth.login", "", err)
		return Session{}, "", errUnauthenticated()
	}
	if tok.Prefix != PrefixAuthToken {
		s.tokenRefused(ctx, caller, "auth.login", displayTokenID(tok), errors.New("login needs an auth token (cfa_)"))
		return Session{}, "", errUnauthenticated()
	}
	now := s.now()
	var out Session
	var plain string
	p := caller
	err = s.update(ctx, p, "auth.login", func(tx *kv.Txn, c *change) error {
		c.set("token_id", displayTokenID(tok))
		cred, user, err := s.authenticateCredential(tx, tok, CredAuthToken, now)
		if err != nil {
			return err
		}
		if err := countAuthn(tx, &cred, now); err != nil {
			return err
		}
		sess := newSession(SessionLogin, cred, user, cred.Roles, now)
		c.set("session", sess.ID, "credential", cred.ID, "user", user.ID, "project", cred.ProjectID)
		if err := tx.Put(tableSessions, sess.ID, sess, sess.indexes()...); err != nil {
			return err
		}
		if plain, _, err = issueToken(tx, PrefixSession, sess.ID); err != nil {
			return err
		}
		out, err = s.sessionView(tx, sess)
		return err
	})
	var bad *errBadToken
	if errors.As(err, &bad) {
		s.tokenRefused(ctx, caller, "auth.login", displayTokenID(tok), err)
		return Session{}, "", errUnauthenticated()
	}
	if err != nil {
		return Session{}, "", storeErr(err)
	}
	return out, plain, nil
}

// OAuth2 error codes (RFC 6749 §5.2).
const (
	CodeInvalidClient        = "invalid_client"
	CodeInvalidRequest       = "invalid_request"
	CodeInvalidScope         = "invalid_scope"
	CodeUnsupportedGrantType = "unsupported_grant_type"
)

// AccessToken is a successful client-credentials grant.
type AccessToken struct {
	Token     string `redact:"true"`
	ExpiresIn int64
	Scope     string
	SessionID string
}

// ClientCredentials runs the RFC 6749 §4.4 grant: it checks the client's
// secret, counts the authentication, creates a session and returns an
// RFC 9068 JWT for it, signed in the HSM. scope, when given, is a
// space-separated subset of the credential's roles. The caller (for the
// rate limit on failures) is the principal of ctx; failures are also
// counted per client_id.
//
// The token's aud is what ask names (RFC 8707 resource, RFC 8693
// audience), each on the credential's allow-list (or coffer's issuer),
// else invalid_target; when ask names none, the first of the list, or the
// issuer for a credential without one (tokenAudience).
func (s *Service) ClientCredentials(ctx context.Context, clientID, clientSecret, scope string, ask ...Audiences) (AccessToken, error) {
	caller := PrincipalFrom(ctx)
	if err := s.admitAuth(ctx, caller, "oauth2.token", clientID); err != nil {
		return AccessToken{}, err
	}
	var want Audiences
	for _, a := range ask {
		want.Audience = append(want.Audience, a.Audience...)
		want.Resource = append(want.Resource, a.Resource...)
	}
	at, err := s.clientCredentials(ctx, caller, clientID, clientSecret, scope, want)
	if CodeOf(err) == CodeInvalidClient {
		s.authFailed(caller, clientID)
	}
	return at, err
}

func (s *Service) clientCredentials(ctx context.Context, caller Principal, clientID, clientSecret, scope string, ask Audiences) (AccessToken, error) {
	// The client id names the client in the audit log when it has the
	// form of one; anything else may be a secret pasted in the wrong field.
	shownClient := ""
	if validTokenID(clientID) {
		shownClient = clientID
	}
	invalidClient := func(tokenID string, why error) error {
		s.log.Debug("authentication failed", "for", "oauth2 client", "client_id", shownClient, "token_id", tokenID, "reason", why.Error())
		ap := auditPrincipal(caller)
		ap.TokenID = tokenID
		var t map[string]string
		if shownClient != "" {
			t = map[string]string{"client_id": shownClient}
		}
		s.record(audit.Event{Action: "oauth2.token", Outcome: audit.OutcomeDenied, Code: CodeInvalidClient, Reason: why.Error(), Principal: ap, Target: t})
		return newErr(ErrUnauthenticated, CodeInvalidClient, "client authentication failed")
	}
	tok, err := ParseToken(clientSecret)
	if err != nil {
		return AccessToken{}, invalidClient("", err)
	}
	if tok.Prefix != PrefixOAuth2 {
		return AccessToken{}, invalidClient(displayTokenID(tok), errors.New("client secret is not a cfo_ token"))
	}
	now := s.now()
	// Check the client first, without writing, so an HSM signature is made
	// only for a client that will get it.
	var cred credentialRecord
	var user userRecord
	var proj projectRecord
	err = s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		cred, user, err = s.authenticateCredential(tx, tok, CredOAuth2, now)
		if err == nil && cred.ClientID != clientID {
			err = badToken("client_id does not match the secret")
		}
		if err != nil {
			return err
		}
		return tx.Get(tableProjects, cred.ProjectID, &proj)
	})
	var bad *errBadToken
	if errors.As(err, &bad) {
		return AccessToken{}, invalidClient(displayTokenID(tok), err)
	}
	if err != nil {
		return AccessToken{}, storeErr(err)
	}
	roles := cred.Roles
	if scope = strings.TrimSpace(scope); scope != "" {
		roles = sortedUnique(strings.Fields(scope))
		for _, r := range roles {
			if !containsString(cred.Roles, r) {
				return AccessToken{}, newErr(ErrInvalidArgument, CodeInvalidScope, "scope %q is not among the client's roles", r)
			}
		}
	}
	aud, err := s.tokenAudience(cred.Audiences, ask)
	if err != nil {
		s.refuseTarget(caller, displayTokenID(tok), cred.ID)
		return AccessToken{}, err
	}
	// The signing key cannot change between signing and storing the
	// session: a retired key's retire_after counts this session.
	s.sig.mint.RLock()
	defer s.sig.mint.RUnlock()
	sess := newSession(SessionOAuth2, cred, user, roles, now)
	sess.Kid = s.currentKid()
	jwt, err := MintJWT(ctx, s.keys, AccessClaims{
		Issuer: s.issuer(), Subject: user.ID, Audience: aud, ClientID: clientID,
		IssuedAt: now.Unix(), ExpiresAt: sess.ExpiresAt.Unix(), JTI: sess.ID, Scope: strings.Join(roles, " "),
		Roles: roles, Policies: cred.Policies, Project: proj.Name,
	})
	if err != nil {
		return AccessToken{}, hsmErr(err)
	}
	err = s.update(ctx, caller, "oauth2.token", func(tx *kv.Txn, c *change) error {
		c.set("token_id", displayTokenID(tok), "client_id", shownClient, "session", sess.ID, "credential", cred.ID, "user", user.ID, "project", cred.ProjectID,
			"audience", auditValue(strings.Join(aud, " ")))
		cred, _, err := s.authenticateCredential(tx, tok, CredOAuth2, now)
		if err != nil {
			return err
		}
		if err := countAuthn(tx, &cred, now); err != nil {
			return err
		}
		return tx.Put(tableSessions, sess.ID, sess, sess.indexes()...)
	})
	if errors.As(err, &bad) {
		return AccessToken{}, invalidClient(displayTokenID(tok), err)
	}
	if err != nil {
		return AccessToken{}, storeErr(err)
	}
	return AccessToken{Token: jwt, ExpiresIn: int64(sess.ExpiresAt.Sub(now) / time.Second), Scope: strings.Join(roles, " "), SessionID: sess.ID}, nil
}

func containsString(xs []string, x string) bool {
	for _, y := range xs {
		if y == x {
			return true
		}
	}
	return false
}

// Introspection is the RFC 7662 answer plus coffer's fields.
type Introspection struct {
	Active       bool
	TokenType    string // session, access-token, oauth2-access-token, auth-token, oauth2-client-secret
	ClientID     string
	Username     string
	Subject      string
	Project      string
	Scope        string
	Roles        []string
	Policies     []string
	AccessRules  []AccessRule
	CredentialID string
	SessionID    string
	IssuedAt     int64
	ExpiresAt    int64
	Issuer       string
	// Audience is a JWT's aud (RFC 7662 §2.2), so a service relying on
	// introspection can check the token was meant for it.
	Audience []string
}

// Introspect describes any coffer token. An unusable token is exactly
// {active: false}, whatever the reason. Like every endpoint that checks a
// token, it counts an unusable one as a failed authentication of the
// caller (the principal of ctx), and answers 429 once the caller has
// failed too often: it is no oracle for guessing tokens.
func (s *Service) Introspect(ctx context.Context, token string) (Introspection, error) {
	caller := PrincipalFrom(ctx)
	if err := s.admitAuth(ctx, caller, "oauth2.introspect", ""); err != nil {
		return Introspection{}, err
	}
	out, err := s.introspect(ctx, caller, token)
	if err == nil && !out.Active {
		s.authFailed(caller, "")
	}
	if err == nil && out.Active {
		ap := auditPrincipal(caller)
		ap.TokenID = publicTokenID(token)
		s.record(audit.Event{Action: "oauth2.introspect", Outcome: audit.OutcomeOK, Principal: ap,
			Target: map[string]string{"active": "true", "session": out.SessionID, "credential": out.CredentialID, "user": out.Subject}})
	}
	return out, err
}

func (s *Service) introspect(ctx context.Context, caller Principal, token string) (Introspection, error) {
	now := s.now()
	var out Introspection
	var bad *errBadToken
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		if !LooksLikeJWT(token) {
			tok, err := ParseToken(token)
			if err != nil {
				return badToken(err.Error())
			}
			if tok.Prefix == PrefixAuthToken || tok.Prefix == PrefixOAuth2 {
				want := map[string]string{PrefixAuthToken: CredAuthToken, PrefixOAuth2: CredOAuth2}[tok.Prefix]
				cred, user, err := s.authenticateCredential(tx, tok, want, now)
				if err != nil {
					return err
				}
				out = s.introspection(tx, cred, user, nil, now)
				out.TokenType = map[string]string{CredAuthToken: "auth-token", CredOAuth2: "oauth2-client-secret"}[want]
				return nil
			}
		}
		r, _, err := s.resolveBearer(tx, token, now)
		if err != nil {
			return err
		}
		s.lastUse.clock(r.session.CredentialID).touch(now) // a resource server checking it: a use
		out = s.introspection(tx, *r.cred, r.user, &r.session, now)
		out.Audience = r.aud
		out.TokenType = map[string]string{SessionLogin: "session", SessionAccessToken: "access-token", SessionOAuth2: "oauth2-access-token"}[r.kind]
		return nil
	})
	if errors.As(err, &bad) {
		// RFC 7662: an unusable token is an answer ({active: false}), not
		// a refusal of the caller; the log says why it is inactive. (It
		// still counts against the caller's failed-authentication budget:
		// Introspect.)
		s.log.Debug("introspected token is inactive", "token_id", publicTokenID(token), "reason", err.Error())
		ap := auditPrincipal(caller)
		ap.TokenID = publicTokenID(token)
		s.record(audit.Event{Action: "oauth2.introspect", Outcome: audit.OutcomeOK, Reason: err.Error(), Principal: ap,
			Target: map[string]string{"active": "false"}})
		return Introspection{Active: false}, nil
	}
	if err != nil {
		return Introspection{}, storeErr(err)
	}
	return out, nil
}

func (s *Service) introspection(tx *kv.Txn, cred credentialRecord, user userRecord, sess *sessionRecord, now time.Time) Introspection {
	var proj projectRecord
	_ = tx.Get(tableProjects, cred.ProjectID, &proj)
	out := Introspection{
		Active: true, ClientID: cred.ClientID, Username: user.Name, Subject: user.ID, Project: proj.Name,
		Roles: cred.Roles, Policies: cred.Policies, AccessRules: cred.Rules, CredentialID: cred.ID,
		IssuedAt: cred.CreatedAt.Unix(), Issuer: s.issuer(),
	}
	if cred.ExpiresAt != nil {
		out.ExpiresAt = cred.ExpiresAt.Unix()
	}
	if sess != nil {
		out.Roles, out.Policies, out.AccessRules, out.SessionID = sess.Roles, sess.Policies, sess.Rules, sess.ID
		out.IssuedAt = sess.CreatedAt.Unix()
		out.ExpiresAt = 0
		if sess.ExpiresAt != nil {
			out.ExpiresAt = sess.ExpiresAt.Unix()
		}
	}
	out.Scope = strings.Join(out.Roles, " ")
	return out
}

// Decision is the answer of /v1/authorize.
type Decision struct {
	Allowed bool
	Reason  string
	User    string
	Project string
	Roles   []string
	// Policies names the policies that applied; Matched, when explained,
	// the rules whose condition held ("policy#rule").
	Policies []string
	Matched  []string
	// Audience is a JWT's aud (nil for an opaque token).
	Audience []string
}

// Call is what a service asks /v1/authorize about: may Token call Service
// with Method and Path? Audience is the asking service's audience (RFC
// 8707 resource or OIDC client): a JWT minted for named audiences is
// authorized only where one of them asks.
type Call struct {
	Token    string
	Service  string
	Method   string
	Path     string
	Audience string
}

// AuthorizeCall decides whether a bearer token may make call: the token
// must be live and for the asker's audience, and one of its access rules
// must match (a token without rules is unrestricted by rules). Services
// use it as their authorization point.
//
// An unusable token counts as a failed authentication of the caller (the
// principal of ctx), as on every endpoint that checks a token.
func (s *Service) AuthorizeCall(ctx context.Context, call Call) (Decision, error) {
	return s.authorizeCall(ctx, call, false)
}

// ExplainCall is AuthorizeCall that also evaluates every policy rule and
// says which held (coffer authorize --explain).
func (s *Service) ExplainCall(ctx context.Context, call Call) (Decision, error) {
	return s.authorizeCall(ctx, call, true)
}

// audienceRefusal says why a token's audience does not admit call, or ""
// when it does. A token for coffer alone (an opaque one, a JWT whose aud
// is coffer's issuer only) goes wherever its rules allow, as on coffer's
// own API. A JWT that names other audiences (RFC 8707) is for them: a
// service that names itself must be one of them, or any service it was
// shown to could use it; and one for other audiences only is refused to
// a service that does not say who it is.
func audienceRefusal(b *bearerInfo, call Call, issuer string) string {
	forCoffer := true
	for _, a := range b.aud {
		forCoffer = forCoffer && a == issuer
	}
	switch {
	case forCoffer:
		return ""
	case call.Audience == "":
		if b.elsewhere {
			return "the token is for other audiences: the service must name its own (audience)"
		}
		return ""
	case !containsString(b.aud, call.Audience):
		return "the token is not for this audience"
	}
	return ""
}

func (s *Service) authorizeCall(ctx context.Context, call Call, explain bool) (Decision, error) {
	token, service, method, path := call.Token, call.Service, call.Method, call.Path
	asker := PrincipalFrom(ctx)
	// What was asked is part of every record of the decision, a refused
	// token's too.
	ctx = withAuditTarget(ctx, map[string]string{"service": auditValue(service), "method": auditValue(method), "path": auditPath(path)})
	if err := s.admitAuth(ctx, asker, "authorize", ""); err != nil {
		return Decision{}, err
	}
	b, err := s.lookupBearer(ctx, asker, token, "authorize")
	if errors.Is(err, ErrUnauthenticated) {
		s.authFailed(asker, "")
		return Decision{Allowed: false, Reason: "invalid or expired token"}, nil
	}
	if err != nil {
		return Decision{}, err
	}
	var roles []string
	for _, name := range b.ident.Roles {
		if role, err := ParseRole(name); err == nil && role <= b.held {
			roles = append(roles, name)
		}
	}
	d := Decision{User: b.user.Name, Project: b.project.Name, Roles: roles, Audience: b.aud}
	d.Allowed, d.Reason = b.ident.Rules.Allows(service, method, path)
	why := "no access rule allows it"
	if d.Allowed && len(roles) == 0 {
		d.Allowed, d.Reason = false, "the user no longer holds the token's roles"
		why = d.Reason
	}
	if refusal := audienceRefusal(b, call, s.issuer()); refusal != "" {
		d.Allowed, d.Reason, why = false, refusal, refusal
	}
	if d.Allowed || explain {
		// Policies narrow what the rules allow. The peer they see is the
		// service asking.
		q := policyRequest{caller: caller{user: b.user, token: b.ident}, principal: asker, projectID: b.project.ID,
			project: b.project, service: service, method: method, path: path}
		if ids, inline := s.attachedPolicies(q); len(ids) > 0 || len(inline) > 0 {
			gen := s.polGen.Load()
			// From the compiled policies cached at gen; a transaction only
			// to read one that is not.
			pd, err := s.decidePolicies(nil, q, gen, explain)
			if errors.Is(err, errPolicyMiss) {
				err = s.store.View(ctx, func(tx *kv.Txn) error {
					var err error
					pd, err = s.decidePolicies(tx, q, gen, explain)
					return err
				})
			}
			if err != nil {
				return Decision{}, storeErr(err)
			}
			d.Policies, d.Matched = pd.Policies, pd.Matched
			if d.Allowed && !pd.Allowed {
				d.Allowed, d.Reason, why = false, policyDenied(pd), "a policy denies it"
			} else if d.Allowed && pd.Policy != "" {
				d.Reason = d.Reason + "; " + pd.Reason
			}
		}
	}
	// The decision, fully: what was asked, for which credential, and why.
	// Denials are coalesced by the log under a fixed reason.
	t := map[string]string{"service": auditValue(service), "method": auditValue(method), "path": auditPath(path),
		"credential": b.ident.CredentialID, "user": b.user.ID, "project": b.project.ID, "reason": auditValue(d.Reason)}
	if call.Audience != "" {
		t["audience"] = auditValue(call.Audience)
	}
	ap := auditPrincipal(asker)
	ap.TokenID = publicTokenID(token)
	if d.Allowed {
		s.record(audit.Event{Action: "authorize", Outcome: audit.OutcomeOK, Principal: ap, Target: t})
	} else {
		s.record(audit.Event{Action: "authorize", Outcome: audit.OutcomeDenied, Code: CodeForbidden, Reason: why, Principal: ap, Target: t})
	}
	return d, nil
}
