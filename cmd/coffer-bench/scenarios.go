package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	cofferd "github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/policy"
)

// scenario is one request kind driven against the real daemon.
//
// To add one: append an entry to scenarios with its ceilings and goal, and a
// prepare that creates what it needs through the API (users, credentials,
// bindings: see env) and returns the request generator. An entry whose
// needs is set is a placeholder: listed, not run.
type scenario struct {
	name     string
	what     string   // the request, for the report
	ceilings []string // the scenario's ceiling is the lowest of these
	goal     float64  // minimum ratio to the ceiling (issue 6); 0: none
	read     bool     // p99 at 16 clients must stay under readP99Goal
	diag     bool     // not an issue-6 scenario: measured for comparison, no goal
	needs    string   // non-empty: the capability it waits for; not run
	// warmTokens: every preloaded access token is used once before the
	// measurements, so they measure a daemon whose bearer cache holds
	// the tokens in use (the cold path is the scale comparison's).
	warmTokens bool
	prepare    func(ctx context.Context, e *env) (generator, error)
	// workers replaces prepare for a scenario that is not HTTP on the API
	// socket (the KMS over gRPC): it returns the scenario's workers.
	workers func(ctx context.Context, e *env) (workerFactory, error)
}

// writes reports whether the scenario writes to the store (it is measured
// against a synced commit): the others are the reads that write bursts
// must not disturb (burst.go).
func (s scenario) writes() bool { return slices.Contains(s.ceilings, ceilKVSync) }

var scenarios = []scenario{
	// Issue 6's scenarios, in its order.
	{
		name: "authorize", what: "POST /v1/authorize, random cft_ of the first 100,000 preloaded (each used once before: bearer cache warm) with 3 access rules, 2nd rule matches",
		ceilings: []string{ceilHTTP}, goal: 0.70, read: true, warmTokens: true,
		prepare: prepareAuthorize,
	},
	{
		// Issue 14: what policies cost where it shows most. Its ceiling
		// is the plain authorize of the same run (measured just before it
		// at each concurrency): the ratio is the policies' overhead.
		name: "authorize-policies", what: "POST /v1/authorize as authorize, tokens carrying 3 policies of 2 CEL rules (deny checked first, then allow), 512 tokens (cache warm)",
		ceilings: []string{"authorize"}, goal: 0.90, read: true,
		prepare: prepareAuthorizePolicies,
	},
	{
		name: "bearer-read", what: "GET /v1/secrets/{id}, random preloaded id, random preloaded cft_ bearer (reader, 3 rules, 3rd matches; cache warm)",
		ceilings: []string{ceilHTTP}, goal: 0.70, read: true, warmTokens: true,
		prepare: prepareBearerRead,
	},
	{
		name: "jwt-bearer", what: "GET /v1/secrets/{id}, random preloaded id, JWT bearer from /oauth2/token (reader)",
		ceilings: []string{ceilHTTP}, goal: 0.60, read: true,
		prepare: func(_ context.Context, e *env) (generator, error) {
			if len(e.jwts) == 0 {
				return nil, errors.New("no JWTs")
			}
			auths := bearers(e.jwts)
			return e.randomSecret(func(w int, _ *rand.Rand, id string) request {
				return request{method: http.MethodGet, path: "/v1/secrets/" + id, auth: auths[w%len(auths)]}
			})
		},
	},
	{
		name: "deliver", what: "GET /v1/deliver/{name} (one unseal), 64 names bound to a workload user, cft_ bearer",
		ceilings: []string{ceilHTTP, ceilHSMOpen}, goal: 0.60, read: true,
		prepare: prepareDeliver,
	},
	{
		name: "secret-create", what: "POST /v1/projects/default/secrets, 256-byte payload, admin peer",
		ceilings: []string{ceilHTTP, ceilHSMSeal, ceilKVSync}, goal: 0.60,
		prepare: func(_ context.Context, e *env) (generator, error) {
			body := e.createBody
			return func(int, *rand.Rand) request {
				return request{method: http.MethodPost, path: "/v1/projects/default/secrets", body: body}
			}, nil
		},
	},
	{
		// One client credential per client (worker w uses client w): a
		// shared one would serialize on its authn_count.
		name: "oauth2-token", what: "POST /oauth2/token, client_credentials, HTTP Basic, one oauth2 credential per client",
		ceilings: []string{ceilHTTP, ceilHSMSign, ceilKVSync}, goal: 0.50,
		prepare: func(_ context.Context, e *env) (generator, error) {
			if len(e.oauthBasic) == 0 {
				return nil, errors.New("no oauth2 clients")
			}
			body := []byte("grant_type=client_credentials")
			basic := e.oauthBasic
			return func(w int, _ *rand.Rand) request {
				return request{method: http.MethodPost, path: "/oauth2/token", body: body,
					ctype: "application/x-www-form-urlencoded", auth: basic[w%len(basic)]}
			}, nil
		},
	},
	{
		name: "login", what: "POST /v1/auth/login, cfa_ bearer, max_authn unset, one auth token per client",
		ceilings: []string{ceilHTTP, ceilKVSync}, goal: 0.50,
		prepare: func(_ context.Context, e *env) (generator, error) {
			if len(e.authTokens) == 0 {
				return nil, errors.New("no auth tokens")
			}
			auths := bearers(e.authTokens)
			return func(w int, _ *rand.Rand) request {
				return request{method: http.MethodPost, path: "/v1/auth/login", auth: auths[w%len(auths)]}
			}, nil
		},
	},

	{
		// Issue 13: kube-apiserver has every ServiceAccount token signed
		// over the signer's gRPC socket; the HSM signature is the floor.
		name: "k8s-sign", what: "ExternalJWTSigner.Sign over the Kubernetes signer's gRPC Unix socket, claims of a projected SA token (1 h), ES256 in the HSM, one connection shared by the clients (as kube-apiserver)",
		ceilings: []string{ceilHSMSign}, goal: 0.60,
		workers: prepareK8sSign,
	},
	{
		// Issue 13: kube-apiserver asking coffer who a token is, over the
		// webhooks' HTTPS listener (TLS key in the HSM; keep-alive
		// connections, as the apiserver's client keeps them).
		name: "k8s-tokenreview", what: "POST /v1/k8s/tokenreview over HTTPS (bearer-authenticated apiserver), random preloaded cft_ (cache warm)",
		ceilings: []string{ceilHTTPS}, goal: 0.60, warmTokens: true,
		workers: func(ctx context.Context, e *env) (workerFactory, error) {
			gen, err := prepareTokenReview(ctx, e)
			if err != nil {
				return nil, err
			}
			return httpsFactory(e.k8s.base, e.k8s.tls, gen), nil
		},
	},

	{
		// Issue 13: kube-apiserver asking coffer whether a request may go
		// on (--authorization-mode=...,Webhook,RBAC), for a user a coffer
		// TokenReview named: the token's access rules with service
		// kubernetes are read and applied (not cached: no bearer here).
		name: "k8s-subjectaccessreview", what: "POST /v1/k8s/subjectaccessreview over HTTPS, the user, uid, groups and extra of a TokenReview of a random preloaded cft_ (512 of them), get pods/NAME",
		ceilings: []string{ceilHTTPS}, goal: 0.60,
		workers: func(ctx context.Context, e *env) (workerFactory, error) {
			gen, err := prepareSubjectAccessReview(ctx, e)
			if err != nil {
				return nil, err
			}
			return httpsFactory(e.k8s.base, e.k8s.tls, gen), nil
		},
	},

	// For comparison, without goals of their own.
	{
		// bearer-read without the bearer: the same read authorized by the
		// socket peer (admin), so the cost of bearer authentication is the
		// difference between the two.
		name: "secret-read", what: "GET /v1/secrets/{id}, random preloaded id, admin peer, no bearer",
		ceilings: []string{ceilHTTP}, diag: true,
		prepare: func(_ context.Context, e *env) (generator, error) {
			return e.randomSecret(func(_ int, _ *rand.Rand, id string) request {
				return request{method: http.MethodGet, path: "/v1/secrets/" + id}
			})
		},
	},
	{
		name: "secret-rotate", what: "POST /v1/secrets/{id}/rotate, 256-byte payload, key values kept",
		ceilings: []string{ceilHTTP, ceilHSMSeal, ceilHSMOpen, ceilKVSync}, diag: true,
		prepare: func(_ context.Context, e *env) (generator, error) {
			body := e.rotateBody
			return e.randomSecret(func(_ int, _ *rand.Rand, id string) request {
				return request{method: http.MethodPost, path: "/v1/secrets/" + id + "/rotate", body: body}
			})
		},
	},
	{
		// Issue 13: kube-apiserver's DEK cache miss (at its start, for
		// each DEK in etcd) is one Decrypt; per call one HSM unwrap.
		name: "kms-decrypt", what: "Kubernetes KMS v2 Decrypt over the gRPC socket (one HSM unwrap), a 32-byte seed, one connection shared by the clients (as kube-apiserver)",
		ceilings: []string{ceilHSMOpen}, goal: 0.60,
		workers: prepareKMSDecrypt,
	},
	{
		// Health and counts, cached by the daemon for 2 s (recounted after
		// writes): a diagnostic, not a request path of issue 6.
		name: "status", what: "GET /v1/status (diagnostic)",
		ceilings: []string{ceilHTTP}, diag: true,
		prepare: func(context.Context, *env) (generator, error) {
			return func(int, *rand.Rand) request {
				return request{method: http.MethodGet, path: "/v1/status"}
			}, nil
		},
	},
}

// scaleScenarios are measured at scaleSmall credentials and at the
// preloaded count: their rates must not drop with the number of
// credentials (issue 6: no full scans on any request path).
var scaleScenarios = []string{"authorize", "bearer-read"}

// benchRules are the access rules of every preloaded access token: the
// authorize scenario matches the second, bearer-read (service coffer) the
// third, so neither is decided by the first rule.
var benchRules = []api.AccessRule{
	{Service: "inventory", Method: http.MethodDelete, Path: "/v1/items/{id}"},
	{Service: "inventory", Method: http.MethodGet, Path: "/v1/items/{id}"},
	{Service: "coffer", Method: http.MethodGet, Path: "/v1/secrets/*"},
}

// authorizeBody is the body of one authorize request; the path varies so
// that nothing can cache the decision.
func authorizeBody(token string, item int) []byte {
	b := make([]byte, 0, 96+len(token))
	b = append(b, `{"token":"`...)
	b = append(b, token...)
	b = append(b, `","service":"inventory","method":"GET","path":"/v1/items/`...)
	b = strconv.AppendInt(b, int64(item), 10)
	return append(b, `"}`...)
}

func prepareAuthorize(ctx context.Context, e *env) (generator, error) {
	toks := e.tokensInUse()
	if len(toks) == 0 {
		return nil, errors.New("no preloaded access tokens")
	}
	// The scenario counts only 2xx; check once that the answer is the
	// intended decision, not a 200 "allowed": false.
	d, err := e.admin.Authorize(ctx, api.AuthorizeRequest{Token: toks[len(toks)-1], Service: "inventory", Method: "GET", Path: "/v1/items/1"})
	if err != nil {
		return nil, err
	}
	if !d.Allowed || d.Reason != "matched rule #1" {
		return nil, fmt.Errorf("authorize: want allowed by rule #1, got %+v", d)
	}
	return func(_ int, rng *rand.Rand) request {
		return request{method: http.MethodPost, path: "/v1/authorize", body: authorizeBody(toks[rng.IntN(len(toks))], rng.IntN(1_000_000))}
	}, nil
}

// k8sBench is how the k8s scenarios reach the webhooks.
type k8sBench struct {
	base   string // https://127.0.0.1:PORT
	tls    *tls.Config
	bearer string // Authorization header value
}

// tokenReviewBody is a TokenReview of token.
func tokenReviewBody(token string) []byte {
	b := make([]byte, 0, 96+len(token))
	b = append(b, `{"apiVersion":"authentication.k8s.io/v1","kind":"TokenReview","spec":{"token":"`...)
	b = append(b, token...)
	return append(b, `"}}`...)
}

// k8sWebhook finds the daemon's webhooks (e.k8s) and returns their routes.
func (e *env) k8sWebhook(ctx context.Context) (api.K8sWebhook, error) {
	w, err := e.admin.K8sWebhook(ctx)
	if err != nil {
		return w, fmt.Errorf("the daemon's webhooks: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(w.CertificateAuthority)) {
		return w, errors.New("the webhooks' CA holds no certificate")
	}
	bearer, err := os.ReadFile(w.BearerFile)
	if err != nil {
		return w, err
	}
	e.k8s = k8sBench{base: w.Server, tls: &tls.Config{RootCAs: pool}, bearer: "Bearer " + strings.TrimSpace(string(bearer))}
	return w, nil
}

// reviewToken has the daemon review token as kube-apiserver would and
// returns the answer's status.
func (e *env) reviewToken(ctx context.Context, wk *httpWorker, path, token string) (tokenReviewStatus, error) {
	if err := wk.do(ctx, request{method: http.MethodPost, path: path, body: tokenReviewBody(token), auth: e.k8s.bearer}); err != nil {
		return tokenReviewStatus{}, err
	}
	var tr struct {
		Status tokenReviewStatus `json:"status"`
	}
	if err := json.Unmarshal(wk.buf.Bytes(), &tr); err != nil {
		return tokenReviewStatus{}, fmt.Errorf("token review: %w", err)
	}
	return tr.Status, nil
}

// tokenReviewStatus is what a TokenReview answer says.
type tokenReviewStatus struct {
	Authenticated bool `json:"authenticated"`
	User          struct {
		Username string              `json:"username"`
		UID      string              `json:"uid"`
		Groups   []string            `json:"groups"`
		Extra    map[string][]string `json:"extra"`
	} `json:"user"`
	Error string `json:"error"`
}

func prepareTokenReview(ctx context.Context, e *env) (generator, error) {
	toks := e.tokensInUse()
	if len(toks) == 0 {
		return nil, errors.New("no preloaded access tokens")
	}
	w, err := e.k8sWebhook(ctx)
	if err != nil {
		return nil, err
	}
	// The scenario counts only 2xx; check once that the answer is an
	// authenticated identity, not a 200 "authenticated": false.
	wk := newHTTPSWorker(e.k8s.base, e.k8s.tls)
	defer wk.close()
	if st, err := e.reviewToken(ctx, wk, w.TokenReviewPath, toks[0]); err != nil {
		return nil, err
	} else if !st.Authenticated {
		return nil, fmt.Errorf("token review: want authenticated, got %q", st.Error)
	}
	path, auth := w.TokenReviewPath, e.k8s.bearer
	return func(_ int, rng *rand.Rand) request {
		return request{method: http.MethodPost, path: path, body: tokenReviewBody(toks[rng.IntN(len(toks))]), auth: auth}
	}, nil
}

// sarTokens is how many tokens' identities the SubjectAccessReview
// scenario draws from.
const sarTokens = 512

// prepareSubjectAccessReview reviews sarTokens preloaded tokens as
// kube-apiserver would, then asks about requests by the users those
// reviews named, with their uid, groups and extra, as kube-apiserver's
// webhook authorizer sends them. The preloaded tokens' access rules have
// no service kubernetes, so coffer denies with the reason after reading
// the credential, its user, project and rules.
func prepareSubjectAccessReview(ctx context.Context, e *env) (generator, error) {
	toks := e.tokensInUse()
	if len(toks) == 0 {
		return nil, errors.New("no preloaded access tokens")
	}
	toks = toks[:min(len(toks), sarTokens)]
	w, err := e.k8sWebhook(ctx)
	if err != nil {
		return nil, err
	}
	wk := newHTTPSWorker(e.k8s.base, e.k8s.tls)
	defer wk.close()
	bodies := make([][]byte, 0, len(toks))
	for _, t := range toks {
		st, err := e.reviewToken(ctx, wk, w.TokenReviewPath, t)
		if err != nil {
			return nil, err
		}
		if !st.Authenticated {
			return nil, fmt.Errorf("token review: want authenticated, got %q", st.Error)
		}
		b, err := json.Marshal(map[string]any{
			"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
			"spec": map[string]any{
				"resourceAttributes": map[string]string{"namespace": "default", "verb": "get", "version": "v1", "resource": "pods", "name": "web-0"},
				"user":               st.User.Username, "uid": st.User.UID, "groups": st.User.Groups, "extra": st.User.Extra,
			},
		})
		if err != nil {
			return nil, err
		}
		bodies = append(bodies, b)
	}
	// The scenario counts only 2xx; check once that the answer is coffer's
	// denial, not a 200 without an opinion (a user coffer did not find).
	if err := wk.do(ctx, request{method: http.MethodPost, path: w.SubjectAccessReviewPath, body: bodies[0], auth: e.k8s.bearer}); err != nil {
		return nil, err
	}
	if !bytes.Contains(wk.buf.Bytes(), []byte(`"denied":true`)) {
		return nil, fmt.Errorf("subject access review: want denied, got %s", wk.buf.Bytes())
	}
	path, auth := w.SubjectAccessReviewPath, e.k8s.bearer
	return func(_ int, rng *rand.Rand) request {
		return request{method: http.MethodPost, path: path, body: bodies[rng.IntN(len(bodies))], auth: auth}
	}, nil
}

// benchPolicies are the policies of the authorize-policies tokens: two
// rules each, of the kinds users write (a service and method, a path
// pattern, the subject's roles); every one lets the bench's requests
// through, the deny rules after evaluating.
var benchPolicies = []api.PolicyRequest{
	{Name: "bench-services", Rules: []policy.Rule{
		{Effect: policy.Deny, Condition: `request.service == "payroll" && request.method != "GET"`},
		{Effect: policy.Allow, Condition: `request.service in ["inventory", "billing"]`},
	}},
	{Name: "bench-paths", Rules: []policy.Rule{
		{Effect: policy.Deny, Condition: `request.path.matchesPath("/v1/items/*/secret")`},
		{Effect: policy.Allow, Condition: `request.path.matchesPath("/v1/items/*")`},
	}},
	{Name: "bench-subject", Rules: []policy.Rule{
		{Effect: policy.Deny, Condition: `subject.user_kind == "human" && subject.token_kind == ""`},
		{Effect: policy.Allow, Condition: `"reader" in subject.roles && subject.project == "default"`},
	}},
}

// policyTokens is how many tokens authorize-policies draws from.
const policyTokens = 512

func prepareAuthorizePolicies(ctx context.Context, e *env) (generator, error) {
	var names []string
	for _, p := range benchPolicies {
		if _, err := e.admin.CreatePolicy(ctx, "default", p); err != nil {
			return nil, fmt.Errorf("create policy %s: %w", p.Name, err)
		}
		names = append(names, p.Name)
	}
	toks := make([]string, policyTokens)
	mk := func(i int) request {
		body, _ := json.Marshal(api.CredentialCreateRequest{Type: "access-token", User: benchUser,
			Name: "bench-pol-" + strconv.Itoa(i), AccessRules: benchRules, Policies: names})
		return request{method: http.MethodPost, path: "/v1/projects/default/credentials", body: body}
	}
	err := preloadAPI(ctx, e.socket, policyTokens, 8, mk, func(i int, body []byte) error {
		var c struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(body, &c); err != nil || c.Token == "" {
			return fmt.Errorf("create credential: bad response %q", body)
		}
		toks[i] = c.Token
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("authorize-policies: %w", err)
	}
	// Warm, and check the decision is the one measured: allowed by the
	// rule, with the three policies evaluated.
	err = preloadAPI(ctx, e.socket, policyTokens, 8, func(i int) request {
		return request{method: http.MethodPost, path: "/v1/authorize", body: authorizeBody(toks[i], i)}
	}, func(int, []byte) error { return nil })
	if err != nil {
		return nil, fmt.Errorf("authorize-policies: warm: %w", err)
	}
	d, err := e.admin.Authorize(ctx, api.AuthorizeRequest{Token: toks[0], Service: "inventory", Method: "GET", Path: "/v1/items/1"})
	if err != nil {
		return nil, err
	}
	if !d.Allowed || len(d.Policies) != len(benchPolicies) {
		return nil, fmt.Errorf("authorize-policies: want allowed under %d policies, got %+v", len(benchPolicies), d)
	}
	return func(_ int, rng *rand.Rand) request {
		return request{method: http.MethodPost, path: "/v1/authorize", body: authorizeBody(toks[rng.IntN(len(toks))], rng.IntN(1_000_000))}
	}, nil
}

func prepareBearerRead(ctx context.Context, e *env) (generator, error) {
	toks := e.tokensInUse()
	if len(toks) == 0 {
		return nil, errors.New("no preloaded access tokens")
	}
	if _, err := e.admin.WithToken(toks[0]).GetSecret(ctx, e.secretIDs[0]); err != nil {
		return nil, fmt.Errorf("bearer-read: %w", err)
	}
	return e.randomSecret(func(_ int, rng *rand.Rand, id string) request {
		return request{method: http.MethodGet, path: "/v1/secrets/" + id, auth: "Bearer " + toks[rng.IntN(len(toks))]}
	})
}

func bearers(toks []string) []string {
	out := make([]string, len(toks))
	for i, t := range toks {
		out[i] = "Bearer " + t
	}
	return out
}

// env is what scenarios share: the daemon's socket and the preloaded data.
type env struct {
	socket     string
	admin      *client.Client // the bench runs as the daemon's admin peer
	secretIDs  []string
	createBody []byte
	rotateBody []byte

	// Identity: a reader of the default project and its credentials.
	accessTokens []string // preloaded cft_ tokens, each with benchRules
	oauthBasic   []string // Authorization: Basic of one oauth2 client per worker
	authTokens   []string // one cfa_ per worker
	jwts         []string // one JWT per oauth2 client

	k8s k8sBench // the Kubernetes webhooks (prepareTokenReview)
}

// benchUser is the user every bench credential is issued to.
const benchUser = "bench-reader"

func newEnv(socket string) (*env, error) {
	p := base64.StdEncoding.EncodeToString(payload(sealPayloadSize))
	create, err := json.Marshal(api.SecretCreateRequest{DisplayName: "bench secret", Payload: p})
	if err != nil {
		return nil, err
	}
	rotate, err := json.Marshal(struct {
		Payload string `json:"payload"`
	}{p})
	if err != nil {
		return nil, err
	}
	return &env{socket: socket, admin: client.NewClient(socket), createBody: create, rotateBody: rotate}, nil
}

// setSocket points the env at a restarted daemon.
func (e *env) setSocket(socket string) {
	e.socket = socket
	e.admin = client.NewClient(socket)
}

// randomSecret returns a generator of requests on a random preloaded
// secret.
func (e *env) randomSecret(mk func(w int, rng *rand.Rand, id string) request) (generator, error) {
	ids := e.secretIDs
	if len(ids) == 0 {
		return nil, errors.New("no preloaded secrets")
	}
	return func(w int, rng *rand.Rand) request { return mk(w, rng, ids[rng.IntN(len(ids))]) }, nil
}

// setupIdentity creates the bench user with the reader role on the
// default project, and for each of clients workers an oauth2 client (and a
// JWT from it) and an auth token.
func (e *env) setupIdentity(ctx context.Context, clients int) error {
	if _, err := e.admin.CreateUser(ctx, api.UserCreateRequest{Name: benchUser}); err != nil {
		return fmt.Errorf("create user: %w", err)
	}
	if _, err := e.admin.SetRole(ctx, "default", benchUser, "reader"); err != nil {
		return fmt.Errorf("set role: %w", err)
	}
	for range clients {
		oc, err := e.admin.CreateCredential(ctx, "default", api.CredentialCreateRequest{Type: "oauth2", User: benchUser})
		if err != nil {
			return fmt.Errorf("create oauth2 credential: %w", err)
		}
		tr, err := e.admin.ClientCredentials(ctx, oc.ClientID, oc.ClientSecret, "")
		if err != nil {
			return fmt.Errorf("oauth2 token: %w", err)
		}
		e.jwts = append(e.jwts, tr.AccessToken)
		basic := url.QueryEscape(oc.ClientID) + ":" + url.QueryEscape(oc.ClientSecret)
		e.oauthBasic = append(e.oauthBasic, "Basic "+base64.StdEncoding.EncodeToString([]byte(basic)))

		ac, err := e.admin.CreateCredential(ctx, "default", api.CredentialCreateRequest{Type: "auth-token", User: benchUser})
		if err != nil {
			return fmt.Errorf("create auth token: %w", err)
		}
		e.authTokens = append(e.authTokens, ac.Token)
	}
	return nil
}

// preloadSecrets creates n secrets in the default project through the API
// with conc clients and records their ids.
func (e *env) preloadSecrets(ctx context.Context, n, conc int) error {
	req := request{method: http.MethodPost, path: "/v1/projects/default/secrets", body: e.createBody}
	ids := make([]string, n)
	err := preloadAPI(ctx, e.socket, n, conc, func(int) request { return req }, func(i int, body []byte) error {
		var s api.Secret
		if err := json.Unmarshal(body, &s); err != nil || s.ID == "" {
			return fmt.Errorf("create secret: bad response %q", body)
		}
		ids[i] = s.ID
		return nil
	})
	if err != nil {
		return fmt.Errorf("preload secrets: %w", err)
	}
	e.secretIDs = append(e.secretIDs, ids...)
	return nil
}

// preloadCredentials creates access tokens with benchRules for the bench
// user through the API until there are n, and records their tokens.
//
// They are named: the daemon's generated names (user-type-6 random
// base-36 characters) collide within a project after some 10^5.
func (e *env) preloadCredentials(ctx context.Context, n, conc int) error {
	have := len(e.accessTokens)
	more := n - have
	if more <= 0 {
		return nil
	}
	mk := func(i int) request {
		body, _ := json.Marshal(api.CredentialCreateRequest{Type: "access-token", User: benchUser,
			Name: "bench-at-" + strconv.Itoa(have+i), AccessRules: benchRules})
		return request{method: http.MethodPost, path: "/v1/projects/default/credentials", body: body}
	}
	toks := make([]string, more)
	err := preloadAPI(ctx, e.socket, more, conc, mk, func(i int, body []byte) error {
		var c struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal(body, &c); err != nil || c.Token == "" {
			return fmt.Errorf("create credential: bad response %q", body)
		}
		toks[i] = c.Token
		return nil
	})
	if err != nil {
		return fmt.Errorf("preload credentials: %w", err)
	}
	e.accessTokens = append(e.accessTokens, toks...)
	return nil
}

// maxTokensInUse bounds the tokens authorize and bearer-read draw from:
// as many as the daemon's bearer cache holds by default. With more
// (BENCH=full preloads a million) most requests would be a token's first
// use, which the scale comparison measures on its own.
const maxTokensInUse = cofferd.DefaultBearerCacheSize

// tokensInUse are the preloaded access tokens authorize and bearer-read
// draw from.
func (e *env) tokensInUse() []string {
	return e.accessTokens[:min(len(e.accessTokens), maxTokensInUse)]
}

// warmBearers presents every token in use once (a /v1/authorize call),
// with conc clients.
func (e *env) warmBearers(ctx context.Context, conc int) error {
	toks := e.tokensInUse()
	mk := func(i int) request {
		return request{method: http.MethodPost, path: "/v1/authorize", body: authorizeBody(toks[i], i)}
	}
	err := preloadAPI(ctx, e.socket, len(toks), conc, mk, func(int, []byte) error { return nil })
	if err != nil {
		return fmt.Errorf("warm bearer cache: %w", err)
	}
	return nil
}

// preloadAPI sends req(i) for i in [0, n) with conc clients and hands each
// answer to got with its index.
func preloadAPI(ctx context.Context, socket string, n, conc int, req func(i int) request, got func(i int, body []byte) error) error {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, conc)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hw := newHTTPWorker(socket)
			defer hw.close()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := hw.do(ctx, req(i)); err != nil {
					errs[w] = err
					return
				}
				if err := got(i, hw.buf.Bytes()); err != nil {
					errs[w] = err
					return
				}
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	return ctx.Err()
}

// deliverNames is how many names the deliver scenario binds.
const deliverNames = 64

// prepareDeliver binds preloaded secrets to a workload user under
// deliverNames names and has every request fetch one of them with that
// user's access token.
func prepareDeliver(ctx context.Context, e *env) (generator, error) {
	if len(e.secretIDs) == 0 {
		return nil, errors.New("no preloaded secrets")
	}
	const user = "bench-deliver"
	if _, err := e.admin.CreateUser(ctx, api.UserCreateRequest{Name: user, Kind: "workload"}); err != nil {
		return nil, fmt.Errorf("deliver: create user: %w", err)
	}
	if _, err := e.admin.SetRole(ctx, "default", user, "reader"); err != nil {
		return nil, fmt.Errorf("deliver: role: %w", err)
	}
	for i := range deliverNames {
		id := e.secretIDs[i%len(e.secretIDs)]
		if _, err := e.admin.CreateBinding(ctx, id, api.BindingCreateRequest{User: user, Name: fmt.Sprintf("d%d", i)}); err != nil {
			return nil, fmt.Errorf("deliver: bind: %w", err)
		}
	}
	cred, err := e.admin.CreateCredential(ctx, "default", api.CredentialCreateRequest{Type: "access-token", User: user, Name: "bench-deliver-token"})
	if err != nil {
		return nil, fmt.Errorf("deliver: credential: %w", err)
	}
	if _, err := e.admin.WithToken(cred.Token).Deliver(ctx, "d0"); err != nil {
		return nil, fmt.Errorf("deliver: %w", err)
	}
	auth := "Bearer " + cred.Token
	return func(_ int, rng *rand.Rand) request {
		return request{method: http.MethodGet, path: fmt.Sprintf("/v1/deliver/d%d", rng.IntN(deliverNames)), auth: auth}
	}, nil
}
