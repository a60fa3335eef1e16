package daemon

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/policy"
)

var kubeAPIServer = Principal{Channel: ChannelKubernetes}

func TestReviewToken(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	e.policy(t, "p1", "kube", policy.Rule{Effect: policy.Deny, Condition: `request.method == "delete"`})
	at, atIss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "ci", Policies: []string{"kube"}})
	reader, readerIss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Roles: []string{"reader"}})
	auth, authIss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "alice"})
	sess, sessTok, err := e.svc.Login(WithPrincipal(ctx, anonPrincipal), authIss.Token)
	if err != nil {
		t.Fatal(err)
	}
	_ = sess
	adm, admIss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Name: "restricted-admin"})
	uadm, uadmIss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Name: "unrestricted-admin", Unrestricted: true})
	oc, ocIss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "carol"})
	jwt, err := e.svc.ClientCredentials(ctx, ocIss.ClientID, ocIss.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name         string
		token        string
		cred         Credential
		groups       []string
		unrestricted bool
	}{
		{"access token", atIss.Token, at, []string{"coffer:p1:reader", "coffer:p1:member", K8sAuthenticatedGroup}, false},
		{"access token with fewer roles than its user", readerIss.Token, reader, []string{"coffer:p1:reader", K8sAuthenticatedGroup}, false},
		// A token not created unrestricted makes no management write: no
		// admin group, whatever its roles.
		{"session of an auth token", sessTok, auth, []string{"coffer:p1:reader", "coffer:p1:member", K8sAuthenticatedGroup}, false},
		{"restricted admin access token", admIss.Token, adm, []string{"coffer:p1:reader", "coffer:p1:member", K8sAuthenticatedGroup}, false},
		{"unrestricted admin access token", uadmIss.Token, uadm, []string{"coffer:p1:reader", "coffer:p1:member", "coffer:p1:admin", K8sAuthenticatedGroup}, true},
		{"OAuth2 JWT", jwt.Token, oc, []string{"coffer:p1:reader", K8sAuthenticatedGroup}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := e.svc.ReviewToken(ctx, kubeAPIServer, tt.token, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !r.Authenticated || r.Error != "" {
				t.Fatalf("not authenticated: %+v", r)
			}
			if want := "service-account-" + strings.ToLower(tt.cred.TokenID); r.Username != want || r.UID != tt.cred.ID {
				t.Errorf("user %q uid %q, want %q %q", r.Username, r.UID, want, tt.cred.ID)
			}
			if !slices.Equal(r.Groups, tt.groups) {
				t.Errorf("groups %v, want %v", r.Groups, tt.groups)
			}
			if r.Extra["coffer.dev/project"][0] != "p1" || r.Extra["coffer.dev/credential"][0] != tt.cred.Name {
				t.Errorf("extra %v", r.Extra)
			}
			if u, ok := r.Extra["coffer.dev/unrestricted"]; ok != tt.unrestricted || (ok && !slices.Equal(u, []string{"true"})) {
				t.Errorf("extra coffer.dev/unrestricted %q (%v), want it %v", u, ok, tt.unrestricted)
			}
			for k := range r.Extra {
				if k != strings.ToLower(k) || !strings.HasPrefix(k, "coffer.dev/") {
					t.Errorf("extra key %q is not lower-case and domain-prefixed", k)
				}
			}
			if r.Audiences != nil {
				t.Errorf("audiences %v for a review that asked none", r.Audiences)
			}
		})
	}
	r, _ := e.svc.ReviewToken(ctx, kubeAPIServer, atIss.Token, nil)
	if !slices.Equal(r.Extra["coffer.dev/policies"], []string{"kube"}) {
		t.Errorf("policies %v", r.Extra["coffer.dev/policies"])
	}
	if _, ok := findEvent(e.events(), "k8s.tokenreview", audit.OutcomeOK, map[string]string{"credential": at.ID, "username": "service-account-" + strings.ToLower(at.TokenID)}); !ok {
		t.Error("no audit record of the review")
	}
	for _, ev := range e.events() {
		for _, v := range ev.Target {
			if strings.Contains(v, atIss.Token) {
				t.Fatal("a token in the audit log")
			}
		}
	}
	// Revoked: authenticated false, and no HSM or store error.
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: at.ID})); err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{atIss.Token, "garbage", corrupt(readerIss.Token), authIss.Token, ocIss.ClientSecret} {
		r, err := e.svc.ReviewToken(ctx, kubeAPIServer, tok, nil)
		if err != nil || r.Authenticated || r.Error != "invalid or expired token" || r.Username != "" {
			t.Fatalf("dead or non-bearer token: %+v %v", r, err)
		}
	}
}

// TestReviewTokenCountsFailures: garbage bearers sent through
// kube-apiserver are counted and audited as failed authentications, but
// never lock out the apiserver, whose every review they share: a valid
// token still authenticates after many failures.
func TestReviewTokenCountsFailures(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	const n = 3 * DefaultAuthFailBurst
	for i := 0; i < n; i++ {
		if r, err := e.svc.ReviewToken(ctx, kubeAPIServer, "cft_nope", nil); err != nil || r.Authenticated {
			t.Fatalf("attempt %d: %+v %v", i, r, err)
		}
	}
	// Counted: the apiserver's bucket is empty.
	if w := e.svc.authGate.callers.wait(callerKey(kubeAPIServer)); w <= 0 {
		t.Fatal("the failed reviews were not charged to the apiserver")
	}
	// Audited: one denial each.
	denied := 0
	for _, ev := range e.events() {
		if ev.Action == "k8s.tokenreview" && ev.Outcome == audit.OutcomeDenied && ev.Code == CodeUnauthenticated {
			denied++
		}
	}
	if denied != n {
		t.Fatalf("%d failed reviews audited, want %d", denied, n)
	}
	// Not refused: a good token still authenticates through the apiserver.
	if r, err := e.svc.ReviewToken(ctx, kubeAPIServer, iss.Token, nil); err != nil || !r.Authenticated {
		t.Fatalf("a valid token after %d failed reviews: %+v %v", n, r, err)
	}
	// Any other caller is still limited after its own failures.
	for i := 0; i < DefaultAuthFailBurst; i++ {
		if r, err := e.svc.ReviewToken(ctx, vsockGuest, "cft_nope", nil); err != nil || r.Authenticated {
			t.Fatalf("guest attempt %d: %+v %v", i, r, err)
		}
	}
	_, err := e.svc.ReviewToken(ctx, vsockGuest, iss.Token, nil)
	wantCode(t, err, CodeRateLimited)
}

func TestReviewTokenAudiences(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	_, ocIss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	jwt, err := e.svc.ClientCredentials(ctx, ocIss.ClientID, ocIss.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	review := func(tok string, auds ...string) TokenReviewResult {
		t.Helper()
		r, err := e.svc.ReviewToken(ctx, kubeAPIServer, tok, auds)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	// Audience-agnostic: the requested ones come back.
	if r := review(iss.Token, "https://kubernetes.default.svc", "x", "x"); !r.Authenticated || !slices.Equal(r.Audiences, []string{"https://kubernetes.default.svc", "x"}) {
		t.Fatalf("agnostic: %+v", r)
	}
	e.svc.SetK8sWebhook(K8sWebhook{Audiences: []string{"https://kubernetes.default.svc"}})
	if r := review(iss.Token, "other", "https://kubernetes.default.svc"); !r.Authenticated || !slices.Equal(r.Audiences, []string{"https://kubernetes.default.svc"}) {
		t.Fatalf("intersection: %+v", r)
	}
	if r := review(iss.Token, "other"); r.Authenticated || r.Error != "the token is not valid for the requested audiences" {
		t.Fatalf("no common audience: %+v", r)
	}
	if r := review(iss.Token); !r.Authenticated || r.Audiences != nil {
		t.Fatalf("no audience asked: %+v", r)
	}
	// A JWT's own audience is coffer's issuer.
	if r := review(jwt.Token, DefaultIssuer); !r.Authenticated || !slices.Equal(r.Audiences, []string{DefaultIssuer}) {
		t.Fatalf("JWT: %+v", r)
	}
	if r := review(iss.Token, DefaultIssuer); r.Authenticated {
		t.Fatalf("an opaque token got the issuer's audience: %+v", r)
	}
	// Refusals of genuine tokens are not counted as failures.
	for range 2 * DefaultAuthFailBurst {
		review(iss.Token, "other")
	}
	if r := review(iss.Token); !r.Authenticated {
		t.Fatalf("limited after audience refusals: %+v", r)
	}
}

func TestReviewAccess(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	e.policy(t, "p1", "nodelete", policy.Rule{Effect: policy.Deny, Condition: `request.service == "kubernetes" && request.method == "delete"`})
	podsOnly, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "pods",
		AccessRules: []AccessRule{{Service: "kubernetes", Method: "get", Path: "/api/v1/namespaces/*/pods/*"}}})
	free, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "free", Policies: []string{"nodelete"}})
	authTok, _ := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "alice", Name: "login",
		AccessRules: []AccessRule{{Service: "kubernetes", Method: "list", Path: "/apis/apps/v1/**"}}})
	revoked, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "gone"})
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: revoked.ID})); err != nil {
		t.Fatal(err)
	}
	user := func(c Credential) string { return "service-account-" + strings.ToLower(c.TokenID) }
	tests := []struct {
		name   string
		in     AccessReview
		denied string // "": no opinion; else a part of the reason
	}{
		{"allowed by its rule", AccessReview{User: user(podsOnly), UID: podsOnly.ID, Verb: "get", Path: "/api/v1/namespaces/default/pods/web"}, ""},
		{"outside its rules", AccessReview{User: user(podsOnly), Verb: "list", Path: "/api/v1/namespaces/default/secrets"}, "coffer: access rules of credential pods: no rule matches list /api/v1/namespaces/default/secrets on kubernetes"},
		{"another verb", AccessReview{User: user(podsOnly), Verb: "delete", Path: "/api/v1/namespaces/default/pods/web"}, "no rule matches delete"},
		{"no rules: unrestricted", AccessReview{User: user(free), Verb: "list", Path: "/api/v1/secrets"}, ""},
		{"a policy denies", AccessReview{User: user(free), Verb: "delete", Path: "/api/v1/namespaces/a/pods/b"}, "nodelete"},
		{"auth token's rules", AccessReview{User: user(authTok), Verb: "list", Path: "/apis/apps/v1/namespaces/a/deployments"}, ""},
		{"auth token's rules refuse", AccessReview{User: user(authTok), Verb: "get", Path: "/apis/apps/v1/namespaces/a/deployments/x"}, "no rule matches get"},
		{"revoked: its token is gone", AccessReview{User: user(revoked), Verb: "get", Path: "/api"}, ""},
		{"revoked, as the TokenReview named it", AccessReview{User: user(revoked), Groups: []string{"coffer:p1:member"}, Verb: "get", Path: "/api"}, "the token's credential is gone"},
		{"revoked, by its extra", AccessReview{User: user(revoked), Extra: map[string][]string{"coffer.dev/project": {"p1"}}, Verb: "get", Path: "/api"}, "gone"},
		{"not a coffer user", AccessReview{User: "alice", Verb: "delete", Path: "/api/v1/nodes/x"}, ""},
		{"unknown token id", AccessReview{User: "service-account-" + strings.ToLower(NewTokenID()), Verb: "delete", Path: "/x"}, ""},
		{"malformed id", AccessReview{User: "service-account-abc", Verb: "delete", Path: "/x"}, ""},
		{"id in its own case", AccessReview{User: "service-account-" + podsOnly.TokenID, Verb: "list", Path: "/x"}, ""},
		{"upper-cased id", AccessReview{User: "service-account-" + strings.ToUpper(podsOnly.TokenID), Verb: "list", Path: "/x"}, ""},
		{"another uid", AccessReview{User: user(podsOnly), UID: "someone-else", Verb: "list", Path: "/x"}, ""},
		{"another uid, coffer's groups", AccessReview{User: user(podsOnly), UID: "someone-else", Groups: []string{"coffer:p1:member"}, Verb: "list", Path: "/x"}, "gone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.name == "id in its own case" && podsOnly.TokenID == strings.ToLower(podsOnly.TokenID) {
				// About one random id in 10⁵ has no upper-case letter: then
				// its own case is the lower-cased user name (CI met one).
				t.Skip("this run's token id has no upper-case letter")
			}
			r, err := e.svc.ReviewAccess(ctx, kubeAPIServer, tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if tt.denied == "" {
				if r.Denied {
					t.Fatalf("denied: %+v", r)
				}
				return
			}
			if !r.Denied || !strings.Contains(r.Reason, tt.denied) {
				t.Fatalf("got %+v, want denied with %q", r, tt.denied)
			}
		})
	}
	if _, ok := findEvent(e.events(), "k8s.subjectaccessreview", audit.OutcomeDenied, map[string]string{"credential": podsOnly.ID, "verb": "list"}); !ok {
		t.Error("no audit record of the denial")
	}
	for _, ev := range e.events() {
		if ev.Action == "k8s.subjectaccessreview" && ev.Target["username"] == "alice" {
			t.Error("a review of a user that is not coffer's was recorded")
		}
	}
}

func TestKubernetesRuleVerbs(t *testing.T) {
	for _, tt := range []struct {
		r  AccessRule
		ok bool
	}{
		{AccessRule{Service: "kubernetes", Method: "get", Path: "/api/**"}, true},
		{AccessRule{Service: "kubernetes", Method: "deletecollection", Path: "/api/**"}, true},
		{AccessRule{Service: "kubernetes", Method: "GET", Path: "/api/**"}, false},
		{AccessRule{Service: "kubernetes", Method: "*", Path: "/api/**"}, false},
		{AccessRule{Service: "kubernetes", Method: "", Path: "/api/**"}, false},
		{AccessRule{Service: "coffer", Method: "get", Path: "/v1/**"}, false},
		{AccessRule{Service: "coffer", Method: "GET", Path: "/v1/**"}, true},
	} {
		_, err := CompileRule(tt.r)
		if (err == nil) != tt.ok {
			t.Errorf("CompileRule(%+v) = %v, want ok %v", tt.r, err, tt.ok)
		}
	}
}

func TestK8sWebhookInfo(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	_, err := e.svc.K8sWebhookInfo(ctx, e.grant(t, ActManageKeys, Resource{}))
	wantCode(t, err, CodeNotFound)
	e.svc.SetK8sWebhook(K8sWebhook{Server: "https://127.0.0.1:1", CertificatePEM: []byte("pem")})
	w, err := e.svc.K8sWebhookInfo(ctx, e.grant(t, ActManageKeys, Resource{}))
	if err != nil || w.Server != "https://127.0.0.1:1" || string(w.CertificatePEM) != "pem" {
		t.Fatalf("%+v %v", w, err)
	}
	_, err = e.svc.K8sWebhookInfo(ctx, e.grant(t, ActReadStatus, Resource{}))
	wantCode(t, err, CodeForbidden)
}

func TestReviewAccessOfUnusableCredentials(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	short, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "short", ExpireIn: "1hour"})
	dis, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "carol", Name: "carols"})
	review := func(c Credential) AccessReviewResult {
		t.Helper()
		r, err := e.svc.ReviewAccess(ctx, kubeAPIServer, AccessReview{User: "service-account-" + strings.ToLower(c.TokenID), Verb: "get", Path: "/api/v1/pods"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := review(short); r.Denied {
		t.Fatalf("a live credential: %+v", r)
	}
	yes := true
	if _, err := e.svc.PatchUser(ctx, e.grant(t, ActManageUser, Resource{User: "carol"}), UserPatch{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	if r := review(dis); !r.Denied || r.Reason != "coffer: the user of credential carols is disabled" {
		t.Fatalf("disabled user: %+v", r)
	}
	e.svc.now = func() time.Time { return time.Now().UTC().Add(2 * time.Hour) }
	defer func() { e.svc.now = func() time.Time { return time.Now().UTC() } }()
	if r := review(short); !r.Denied || r.Reason != "coffer: credential short has expired" {
		t.Fatalf("expired: %+v", r)
	}
}

// A rotation makes a new user name at once, for the new token and the old
// one in its grace: the credential's cached token id goes with the change.
func TestReviewTokenAfterRotation(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	c, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	name := func(tok string) string {
		t.Helper()
		r, err := e.svc.ReviewToken(ctx, kubeAPIServer, tok, nil)
		if err != nil || !r.Authenticated {
			t.Fatalf("%+v %v", r, err)
		}
		return r.Username
	}
	if got := name(iss.Token); got != "service-account-"+strings.ToLower(c.TokenID) {
		t.Fatalf("before: %s", got)
	}
	rot, iss2, err := e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: c.ID}), CredentialRotate{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range []string{iss2.Token, iss.Token} {
		if got := name(tok); got != "service-account-"+strings.ToLower(rot.TokenID) {
			t.Fatalf("after the rotation: %s, want the new token id %s", got, rot.TokenID)
		}
	}
	// And the old id, in its grace, still names the credential for the
	// authorizer.
	r, err := e.svc.ReviewAccess(ctx, kubeAPIServer, AccessReview{User: "service-account-" + strings.ToLower(c.TokenID), Groups: []string{"coffer:p1:member"}, Verb: "get", Path: "/api"})
	if err != nil || r.Denied {
		t.Fatalf("old id in its grace: %+v %v", r, err)
	}
}

// The authorizer keeps what it read of a user name's credential
// (k8sCredential); each change below comes right after a review that
// filled it, and the next review must see the change, not the kept record.
func TestReviewAccessFollowsChanges(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	review := func(c Credential, groups ...string) AccessReviewResult {
		t.Helper()
		r, err := e.svc.ReviewAccess(ctx, kubeAPIServer, AccessReview{User: K8sUserName(c.TokenID), Groups: groups, Verb: "get", Path: "/api/v1/pods"})
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	live := func(c Credential) {
		t.Helper()
		for range 2 { // the second from what the first kept
			if r := review(c); r.Denied {
				t.Fatalf("a live credential: %+v", r)
			}
		}
	}

	revoked, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "revoked"})
	live(revoked)
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: revoked.ID})); err != nil {
		t.Fatal(err)
	}
	if r := review(revoked, "coffer:p1:member"); !r.Denied || r.Reason != "coffer: the token's credential is gone (revoked, deleted or rotated)" {
		t.Fatalf("revoked: %+v", r)
	}

	deleted, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "deleted"})
	live(deleted)
	if err := e.svc.DeleteCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: deleted.ID})); err != nil {
		t.Fatal(err)
	}
	if r := review(deleted, "coffer:p1:member"); !r.Denied || r.Reason != "coffer: the token's credential is gone (revoked, deleted or rotated)" {
		t.Fatalf("deleted: %+v", r)
	}

	rotated, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "rotated"})
	live(rotated)
	if _, _, err := e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: rotated.ID}), CredentialRotate{Grace: time.Hour}); err != nil {
		t.Fatal(err)
	}
	live(rotated) // its old token id, in its grace

	// The user's role removed, the user disabled: from a kept credential
	// too (the identity generation ends what the review kept).
	carols, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "carol", Name: "carols"})
	live(carols)
	if err := e.svc.RemoveRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "carol", "reader"); err != nil {
		t.Fatal(err)
	}
	if r := review(carols, "coffer:p1:reader"); !r.Denied {
		t.Fatalf("the user's role removed: %+v", r)
	}
	alices, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Name: "alices"})
	live(alices)
	yes := true
	if _, err := e.svc.PatchUser(ctx, e.grant(t, ActManageUser, Resource{User: "alice"}), UserPatch{Disabled: &yes}); err != nil {
		t.Fatal(err)
	}
	if r := review(alices, "coffer:p1:admin"); !r.Denied {
		t.Fatalf("the user disabled: %+v", r)
	}
	e.svc.now = func() time.Time { return time.Now().UTC().Add(2 * time.Hour) }
	defer func() { e.svc.now = func() time.Time { return time.Now().UTC() } }()
	if r := review(rotated, "coffer:p1:member"); !r.Denied || r.Reason != "coffer: the token's credential is gone (revoked, deleted or rotated)" {
		t.Fatalf("old token id past its grace: %+v", r)
	}
}
