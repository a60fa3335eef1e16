package daemon

// Kubernetes webhooks (package k8s/webhook serves them): kube-apiserver
// asks coffer who a bearer token is (TokenReview) and whether a request
// of that identity is outside what its credential allows
// (SubjectAccessReview). The decisions are made here, with the same token
// checks, failure counting, access rules and policies as every other
// token check of coffer.
//
// Identity. A coffer token (cfs_, cft_ or an OAuth2 JWT: whatever
// Authenticate accepts) is the Kubernetes user
//
//	service-account-<token id of its credential, lowercased>
//
// where the token id is the credential's public 22-character id, as
// `coffer cred create` prints it (token_id), in lowercase: for an access
// token its own id, for a session (cfs_) or a JWT the id of the auth token
// or OAuth2 client that made it. So every token a credential yields is one
// Kubernetes user, the name an RBAC binding can use; a rotation (new
// token id) makes a new one. Base62 ids are case-sensitive, so two ids
// could in principle lowercase alike: coffer never issues a credential
// token whose lowercased id another credential token has (the unique
// index lower_id of the tokens table, tokens.go), and the
// SubjectAccessReview maps the name back through that index. uid is the
// credential's id. The groups are coffer:<project>:<role> for each role
// the token holds (its roles that its user still holds in its project,
// with the roles they imply: an admin token is also member and reader),
// plus system:authenticated; but the admin group only for a token created
// unrestricted: a token that is not unrestricted makes no management
// write in coffer, and the admin group is what RBAC bindings give
// management rights to, so such a token's groups stop at member. Extra
// holds coffer.dev/project, coffer.dev/credential, coffer.dev/policies
// and, for an unrestricted token, coffer.dev/unrestricted: "true".
//
// Audiences. A JWT's audience is coffer's issuer (a JWT minted for other
// audiences only, oidc.go, is refused); opaque tokens have
// none of their own. With the daemon's --k8s-audience list empty, coffer
// is audience-agnostic: a review that names audiences gets them back
// (status.audiences), one that names none gets none (the token is then
// valid for the apiserver's own audiences). With the list set, a token's
// audiences are that list (plus the issuer, for a JWT), and a review that
// names audiences gets their intersection, or authenticated: false when
// it is empty.
//
// Authorization. A SubjectAccessReview for a user of the form above is
// checked against the credential's access rules with service
// "kubernetes", the verb as method and the request's path (the webhook
// builds it as the apiserver's URL), then against its policies
// (request.service == "kubernetes"). Coffer never allows: it denies what
// the credential's rules or policies refuse, and has no opinion on the
// rest (RBAC decides).

import (
	"context"
	"crypto"
	"errors"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	// K8sService is the service of access rules (and request.service of
	// policies) for Kubernetes requests.
	K8sService = "kubernetes"
	// K8sUserPrefix starts the Kubernetes user name of a coffer token
	// (K8sUserName).
	K8sUserPrefix = "service-account-"
	// K8sGroupPrefix starts the groups of a coffer token:
	// coffer:<project>:<role>.
	K8sGroupPrefix = "coffer:"
	// K8sExtraPrefix starts the keys of a coffer token's extra.
	K8sExtraPrefix = "coffer.dev/"
	// K8sAuthenticatedGroup is Kubernetes' group of every authenticated
	// user.
	K8sAuthenticatedGroup = "system:authenticated"

	// ChannelKubernetes is kube-apiserver calling the webhooks.
	ChannelKubernetes Channel = "kubernetes"
)

// K8sWebhook is how the webhooks are served, for `coffer k8s
// webhook-config` (K8sWebhookInfo) and the audiences of TokenReview. Set
// by the daemon when the listener is on (SetK8sWebhook).
type K8sWebhook struct {
	// Server is the listener's base URL (https://127.0.0.1:PORT).
	Server string
	// TokenReviewPath and SubjectAccessReviewPath are the routes.
	TokenReviewPath         string
	SubjectAccessReviewPath string
	// CertificatePEM is the serving certificate (self-issued: its own CA).
	CertificatePEM []byte
	// BearerFile and ClientCAFile are how the apiserver authenticates to
	// the listener (either may be empty, not both).
	BearerFile   string
	ClientCAFile string
	// Audiences of coffer tokens (see above); empty: audience-agnostic.
	Audiences []string
}

// k8sState is the webhooks' part of the Service.
type k8sState struct {
	hook atomic.Pointer[K8sWebhook]
}

// SetK8sWebhook records how the webhooks are served.
func (s *Service) SetK8sWebhook(w K8sWebhook) {
	w.Audiences = slices.Clone(w.Audiences)
	s.webhooks.hook.Store(&w)
}

// tlsKeys is the part of the HSM that keeps TLS serving keys (*hsm.HSM).
type tlsKeys interface {
	TLSKey(ctx context.Context, label string) (crypto.Signer, error)
}

// K8sServingKey returns the webhooks' TLS serving key (hsm.DefaultTLSKeyLabel):
// made in the HSM on first use, never extractable; every handshake is
// signed there.
func (s *Service) K8sServingKey(ctx context.Context) (crypto.Signer, error) {
	k, ok := s.rawKeys.(tlsKeys)
	if !ok {
		return nil, newErr(ErrUnavailable, CodeHSMUnavailable, "the HSM in use keeps no TLS keys")
	}
	key, err := k.TLSKey(ctx, hsm.DefaultTLSKeyLabel)
	if err != nil {
		return nil, hsmErr(err)
	}
	return key, nil
}

// K8sWebhookInfo returns how the webhooks are served (a system admin's
// ActManageKeys grant: the serving key is an HSM key). Without a listener
// it is 404.
func (s *Service) K8sWebhookInfo(_ context.Context, g Grant) (K8sWebhook, error) {
	if err := g.require(ActManageKeys); err != nil {
		return K8sWebhook{}, err
	}
	w := s.webhooks.hook.Load()
	if w == nil {
		return K8sWebhook{}, NotFound("the Kubernetes webhooks are off: start the daemon with --k8s-listen")
	}
	out := *w
	out.CertificatePEM = slices.Clone(w.CertificatePEM)
	out.Audiences = slices.Clone(w.Audiences)
	return out, nil
}

// TokenReviewResult is the answer to a TokenReview. When Authenticated is
// false, Error says why in words that reveal nothing about the token.
type TokenReviewResult struct {
	Authenticated bool
	Error         string
	Username      string
	UID           string
	Groups        []string
	Extra         map[string][]string
	Audiences     []string
}

// ReviewToken answers kube-apiserver's TokenReview of token for the
// requested audiences. A token that does not check out is Authenticated
// false (never an error) and counts as a failed authentication of caller,
// audited, as on every endpoint that checks a token; but kube-apiserver is
// never refused by the failed-authentication limiter (limitRefuses: every
// review comes from it, whoever sent the bearer). Errors are the store's
// or the HSM's.
func (s *Service) ReviewToken(ctx context.Context, caller Principal, token string, audiences []string) (TokenReviewResult, error) {
	const action = "k8s.tokenreview"
	if err := s.admitAuth(ctx, caller, action, ""); err != nil {
		return TokenReviewResult{}, err
	}
	b, err := s.lookupBearer(ctx, caller, token, action)
	if errors.Is(err, ErrUnauthenticated) {
		s.authFailed(caller, "")
		return TokenReviewResult{Error: MessageOf(errUnauthenticated())}, nil
	}
	if err != nil {
		return TokenReviewResult{}, err
	}
	ap := auditPrincipal(caller)
	ap.TokenID = publicTokenID(token)
	t := map[string]string{"credential": b.ident.CredentialID, "user": b.user.ID, "project": b.project.ID}
	// A genuine token refused for what it is: not a guess, not counted.
	refuse := func(why string) (TokenReviewResult, error) {
		s.record(audit.Event{Action: action, Outcome: audit.OutcomeDenied, Code: CodeForbidden, Reason: why, Principal: ap, Target: t})
		return TokenReviewResult{Error: why}, nil
	}
	if b.elsewhere {
		// Minted for other services (its aud does not name coffer's
		// issuer): not a credential for the cluster either.
		return refuse("the JWT's audience is another service")
	}
	top := RoleNone
	for _, name := range b.ident.Roles {
		if r, err := ParseRole(name); err == nil && r <= b.held && r > top {
			top = r
		}
	}
	if top == RoleNone {
		return refuse("the token's user no longer holds its roles")
	}
	auds, ok := s.k8sAudiences(b.ident.Kind, audiences)
	if !ok {
		return refuse("the token is not valid for the requested audiences")
	}
	credID := b.ident.CredentialID
	out := TokenReviewResult{
		Authenticated: true,
		Username:      K8sUserName(b.ident.CredentialTokenID),
		UID:           credID,
		Audiences:     auds,
		Extra: map[string][]string{
			K8sExtraPrefix + "project":    {b.project.Name},
			K8sExtraPrefix + "credential": {b.ident.CredentialName},
		},
	}
	if top > RoleMember && !b.ident.Unrestricted {
		top = RoleMember // no management writes (see the package comment)
	}
	for _, r := range top.implied() {
		out.Groups = append(out.Groups, K8sGroupPrefix+b.project.Name+":"+r)
	}
	if b.ident.Unrestricted {
		out.Extra[K8sExtraPrefix+"unrestricted"] = []string{"true"}
	}
	out.Groups = append(out.Groups, K8sAuthenticatedGroup)
	if len(b.ident.Policies) > 0 {
		out.Extra[K8sExtraPrefix+"policies"] = slices.Clone(b.ident.Policies)
	}
	t["username"] = out.Username
	if len(auds) > 0 {
		t["audiences"] = auditValue(strings.Join(auds, " "))
	}
	s.record(audit.Event{Action: action, Outcome: audit.OutcomeOK, Principal: ap, Target: t})
	return out, nil
}

// k8sAudiences returns the audiences a token of kind is valid for among
// requested, and false when it is valid for none of them.
func (s *Service) k8sAudiences(kind string, requested []string) ([]string, bool) {
	if len(requested) == 0 {
		return nil, true // the apiserver's own audiences
	}
	var conf []string
	if w := s.webhooks.hook.Load(); w != nil {
		conf = w.Audiences
	}
	var out []string
	for _, a := range requested {
		if slices.Contains(out, a) {
			continue
		}
		if len(conf) == 0 || slices.Contains(conf, a) || (kind == SessionOAuth2 && a == s.issuer()) {
			out = append(out, a)
		}
	}
	return out, len(out) > 0
}

// AccessReview is the part of a SubjectAccessReview coffer decides on: who
// (as the TokenReview named them) wants to do what. Path is the request
// path as the apiserver's URL would be.
type AccessReview struct {
	User   string
	UID    string
	Groups []string
	Extra  map[string][]string
	Verb   string
	Path   string
}

// fromCoffer reports whether the identity carries what coffer's
// TokenReview gives (a coffer.dev/ extra or a coffer: group): then it came
// from a coffer token.
func (in AccessReview) fromCoffer() bool {
	for k := range in.Extra {
		if strings.HasPrefix(k, K8sExtraPrefix) {
			return true
		}
	}
	for _, g := range in.Groups {
		if strings.HasPrefix(g, K8sGroupPrefix) {
			return true
		}
	}
	return false
}

// AccessReviewResult is coffer's opinion: Denied with the reason, or none
// (Denied false: RBAC decides). Coffer never allows on its own.
type AccessReviewResult struct {
	Denied bool
	Reason string
}

// K8sUserName is the Kubernetes user name of the tokens of the credential
// whose token has public id tokenID: K8sUserPrefix and the id in lowercase.
func K8sUserName(tokenID string) string { return K8sUserPrefix + strings.ToLower(tokenID) }

// lowerTokenID reports whether s can be a lowercased public token id: 22
// characters of 0-9 and a-z.
func lowerTokenID(s string) bool {
	if len(s) != tokenIDLen {
		return false
	}
	for i := range len(s) {
		if c := s[i]; (c < '0' || c > '9') && (c < 'a' || c > 'z') {
			return false
		}
	}
	return true
}

// ReviewAccess answers kube-apiserver's SubjectAccessReview. A user that
// is not service-account-<lowercased token id>, or whose token id is unknown (or
// belongs to another uid), gets no opinion — unless the identity carries
// coffer's groups or extra: then it came from a coffer token that is gone
// since (revoked, deleted, rotated past its grace) while the apiserver
// still had its TokenReview cached, and it is denied. For a coffer
// credential: a
// credential no longer usable (revoked, expired, its user disabled or
// without its roles), a request its access rules (service "kubernetes")
// do not allow, or one its policies refuse, is denied, with the reason
// naming what refused; anything else gets no opinion. Errors are the
// store's.
func (s *Service) ReviewAccess(ctx context.Context, asker Principal, in AccessReview) (AccessReviewResult, error) {
	const action = "k8s.subjectaccessreview"
	id, ok := strings.CutPrefix(in.User, K8sUserPrefix)
	if !ok || !lowerTokenID(id) {
		return AccessReviewResult{}, nil // not a coffer user: not ours to judge
	}
	now := s.now()
	idGen, polGen := s.idGen.Load(), s.polGen.Load()
	var out AccessReviewResult
	var cred credentialRecord
	var found bool
	var why string // the fixed phrase of a denial, for the audit log
	var projectID string
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		cred, found, err = s.k8sCredential(tx, id, now, idGen)
		if err != nil || !found {
			return err
		}
		if in.UID != "" && in.UID != cred.ID {
			found = false // another authenticator's user of that name
			return nil
		}
		projectID = cred.ProjectID
		deny := func(fixed, reason string) error {
			why, out = fixed, AccessReviewResult{Denied: true, Reason: "coffer: " + reason}
			return nil
		}
		var user userRecord
		if err := s.getUser(tx, cred.UserID, &user, &idGen); errors.Is(err, kv.ErrNotFound) {
			return deny("the credential is not usable", "the credential's user is gone")
		} else if err != nil {
			return err
		}
		var proj projectRecord
		if err := s.getProject(tx, cred.ProjectID, &proj, idGen); errors.Is(err, kv.ErrNotFound) {
			return deny("the credential is not usable", "the credential's project is gone")
		} else if err != nil {
			return err
		}
		switch {
		case cred.RevokedAt != nil:
			return deny("the credential is not usable", "credential "+cred.Name+" is revoked")
		case user.Disabled:
			return deny("the credential is not usable", "the user of credential "+cred.Name+" is disabled")
		case cred.ExpiresAt != nil && !now.Before(*cred.ExpiresAt):
			return deny("the credential is not usable", "credential "+cred.Name+" has expired")
		}
		held, err := s.roleOfAt(tx, user.ID, proj.ID, idGen)
		if err != nil {
			return err
		}
		var roles []string
		for _, name := range cred.Roles {
			if r, err := ParseRole(name); err == nil && r <= held {
				roles = append(roles, name)
			}
		}
		if len(roles) == 0 {
			return deny("the credential is not usable", "the user of credential "+cred.Name+" no longer holds its roles in project "+proj.Name)
		}
		rules, err := s.rules.compile(cred.Rules)
		if err != nil {
			return err
		}
		if ok, reason := rules.Allows(K8sService, in.Verb, in.Path); !ok {
			return deny("no access rule allows it", "access rules of credential "+cred.Name+": "+reason)
		}
		ident := &TokenIdentity{
			Kind: sessionKindOf(cred.Type), CredentialID: cred.ID, UserID: user.ID, ProjectID: proj.ID,
			Roles: roles, Rules: rules, Policies: cred.Policies, Unrestricted: cred.Unrestricted,
			PolicyIDs: cred.PolicyIDs, InlinePolicies: cred.InlinePolicies, CredentialName: cred.Name, SessionType: cred.SessionType,
		}
		q := policyRequest{caller: caller{user: &user, token: ident}, principal: asker, projectID: proj.ID, project: &proj,
			service: K8sService, method: in.Verb, path: in.Path}
		if ids, inline := s.attachedPolicies(q); len(ids) > 0 || len(inline) > 0 {
			d, err := s.decidePolicies(tx, q, polGen, false)
			if err != nil {
				return err
			}
			if !d.Allowed {
				return deny("a policy denies it", policyDenied(d))
			}
		}
		out.Reason = "coffer: credential " + cred.Name + " allows it; RBAC decides"
		return nil
	})
	if err != nil {
		return AccessReviewResult{}, storeErr(err)
	}
	if !found && in.fromCoffer() {
		out, why = AccessReviewResult{Denied: true, Reason: "coffer: the token's credential is gone (revoked, deleted or rotated)"}, "the credential is gone"
		cred = credentialRecord{}
	} else if !found {
		return AccessReviewResult{}, nil
	}
	t := map[string]string{"username": auditValue(in.User), "verb": auditValue(in.Verb), "path": auditValue(in.Path),
		"credential": cred.ID, "project": projectID, "reason": auditValue(out.Reason)}
	if out.Denied {
		s.record(audit.Event{Action: action, Outcome: audit.OutcomeDenied, Code: CodeForbidden, Reason: why, Principal: auditPrincipal(asker), Target: t})
	} else {
		s.record(audit.Event{Action: action, Outcome: audit.OutcomeOK, Principal: auditPrincipal(asker), Target: t})
	}
	return out, nil
}

// k8sUserCred is what k8sCredential found: the credential, and until
// when the token that named it is valid (a rotated token's grace).
type k8sUserCred struct {
	cred     credentialRecord
	notAfter *time.Time
}

// k8sCredential finds the credential whose token has the public id that
// lowercases to lowerID (indexLowerID: one at most): the owner of an auth
// token or OAuth2 client secret, the credential of an access token's
// session. A rotated token past its grace is not found. What it finds is
// kept in the identity records at gen (the identity generation loaded
// before tx began): a changed or deleted token, session or credential
// ends it (caches.go), a new token cannot make it stale (only found
// credentials are kept; ids are never reused).
func (s *Service) k8sCredential(tx *kv.Txn, lowerID string, now time.Time, gen uint64) (credentialRecord, bool, error) {
	if e := s.ids.k8sCreds.ref(lowerID, gen); e != nil {
		if e.notAfter != nil && !now.Before(*e.notAfter) {
			return credentialRecord{}, false, nil
		}
		return e.cred, true, nil
	}
	cred, notAfter, found, err := readK8sCredential(tx, lowerID)
	if err != nil || !found {
		return cred, false, err
	}
	s.ids.k8sCreds.put(lowerID, k8sUserCred{cred: cred, notAfter: notAfter}, gen)
	if notAfter != nil && !now.Before(*notAfter) {
		return credentialRecord{}, false, nil
	}
	return cred, true, nil
}

// readK8sCredential reads what k8sCredential finds, and the token's end
// of validity.
func readK8sCredential(tx *kv.Txn, lowerID string) (cred credentialRecord, notAfter *time.Time, found bool, err error) {
	var tr tokenRecord
	tokenID, err := tx.LookupUnique(tableTokens, indexLowerID, lowerID)
	if err != nil {
		return cred, nil, false, ignoreNotFound(err)
	}
	if err := tx.Get(tableTokens, tokenID, &tr); err != nil {
		return cred, nil, false, ignoreNotFound(err)
	}
	credID := tr.Owner
	switch tr.Prefix {
	case PrefixAuthToken, PrefixOAuth2:
	case PrefixAccessToken:
		var sess sessionRecord
		if err := tx.Get(tableSessions, tr.Owner, &sess); err != nil {
			return cred, nil, false, ignoreNotFound(err)
		}
		credID = sess.CredentialID
	default:
		return cred, nil, false, nil // a session's token: never a Kubernetes user name
	}
	if !validID(credID) {
		return cred, nil, false, nil
	}
	if err := tx.Get(tableCredentials, credID, &cred); err != nil {
		return cred, nil, false, ignoreNotFound(err)
	}
	return cred, tr.NotAfter, true, nil
}

// sessionKindOf is the kind of the sessions a credential of type t makes
// (what policies see as the token kind).
func sessionKindOf(t string) string {
	switch t {
	case CredAuthToken:
		return SessionLogin
	case CredOAuth2:
		return SessionOAuth2
	}
	return SessionAccessToken
}
