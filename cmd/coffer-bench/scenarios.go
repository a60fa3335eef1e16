package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/coffer-hsm/coffer/unixapi"
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
	needs    string   // non-empty: the capability it waits for; not run
	prepare  func(ctx context.Context, e *env) (func(rng *rand.Rand) request, error)
}

var scenarios = []scenario{
	// Available now.
	{
		name: "secret-create", what: "POST /v1/projects/default/secrets, 256-byte payload",
		ceilings: []string{ceilHTTP, ceilHSMSeal, ceilKVSync}, goal: 0.60,
		prepare: func(_ context.Context, e *env) (func(*rand.Rand) request, error) {
			body := e.createBody
			return func(*rand.Rand) request {
				return request{method: http.MethodPost, path: "/v1/projects/default/secrets", body: body}
			}, nil
		},
	},
	{
		// Stands in for bearer-read until credentials exist: the same
		// read, authorized by the socket peer instead of a cft_ token.
		name: "secret-read", what: "GET /v1/secrets/{id}, random preloaded id, admin peer",
		ceilings: []string{ceilHTTP}, goal: 0.70, read: true,
		prepare: func(_ context.Context, e *env) (func(*rand.Rand) request, error) {
			return e.randomSecret(func(id string) request {
				return request{method: http.MethodGet, path: "/v1/secrets/" + id}
			})
		},
	},
	{
		name: "secret-rotate", what: "POST /v1/secrets/{id}/rotate, 256-byte payload, key values kept",
		ceilings: []string{ceilHTTP, ceilHSMSeal, ceilHSMOpen, ceilKVSync},
		prepare: func(_ context.Context, e *env) (func(*rand.Rand) request, error) {
			body := e.rotateBody
			return e.randomSecret(func(id string) request {
				return request{method: http.MethodPost, path: "/v1/secrets/" + id + "/rotate", body: body}
			})
		},
	},
	{
		name: "status", what: "GET /v1/status",
		ceilings: []string{ceilHTTP}, read: true,
		prepare: func(context.Context, *env) (func(*rand.Rand) request, error) {
			return func(*rand.Rand) request {
				return request{method: http.MethodGet, path: "/v1/status"}
			}, nil
		},
	},

	// Placeholders (issue 6): each becomes a prepare once its capability
	// lands.
	{
		name: "authorize", what: "POST /v1/authorize, opaque access token, 3 access rules",
		ceilings: []string{ceilHTTP}, goal: 0.70, read: true,
		needs: "credentials (access-token) and POST /v1/authorize",
	},
	{
		name: "bearer-read", what: "GET /v1/secrets/{id} with a cft_ bearer",
		ceilings: []string{ceilHTTP}, goal: 0.70, read: true,
		needs: "credentials (access-token) and bearer authentication",
	},
	{
		name: "jwt-bearer", what: "GET /v1/secrets/{id} with an HSM-signed JWT bearer",
		ceilings: []string{ceilHTTP}, goal: 0.60, read: true,
		needs: "oauth2 credentials and JWT bearer authentication",
	},
	{
		name: "deliver", what: "GET /v1/deliver/{name} (one unseal)",
		ceilings: []string{ceilHTTP, ceilHSMOpen}, goal: 0.60, read: true,
		needs: "bindings and GET /v1/deliver/{name}",
	},
	{
		name: "oauth2-token", what: "POST /oauth2/token (one HSM sign + session write)",
		ceilings: []string{ceilHTTP, ceilHSMSign, ceilKVSync}, goal: 0.50,
		needs: "oauth2 credentials and POST /oauth2/token",
	},
	{
		name: "login", what: "POST /v1/auth/login with an auth token, max_authn unset",
		ceilings: []string{ceilHTTP, ceilKVSync}, goal: 0.50,
		needs: "auth-token credentials and POST /v1/auth/login",
	},
}

// env is what scenarios share: the daemon's socket and the preloaded data.
type env struct {
	socket     string
	secretIDs  []string
	createBody []byte
	rotateBody []byte
}

func newEnv(socket string) (*env, error) {
	p := base64.StdEncoding.EncodeToString(payload(sealPayloadSize))
	create, err := json.Marshal(unixapi.SecretCreateRequest{DisplayName: "bench secret", Payload: p})
	if err != nil {
		return nil, err
	}
	rotate, err := json.Marshal(struct {
		Payload string `json:"payload"`
	}{p})
	if err != nil {
		return nil, err
	}
	return &env{socket: socket, createBody: create, rotateBody: rotate}, nil
}

// randomSecret returns a generator of requests on a random preloaded
// secret.
func (e *env) randomSecret(mk func(id string) request) (func(*rand.Rand) request, error) {
	ids := e.secretIDs
	if len(ids) == 0 {
		return nil, errors.New("no preloaded secrets")
	}
	return func(rng *rand.Rand) request { return mk(ids[rng.IntN(len(ids))]) }, nil
}

// preloadSecrets creates n secrets in the default project through the API
// with conc clients and records their ids.
func (e *env) preloadSecrets(ctx context.Context, n, conc int) error {
	ids := make([]string, n)
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make([]error, conc)
	for w := range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			hw := newHTTPWorker(e.socket)
			defer hw.close()
			req := request{method: http.MethodPost, path: "/v1/projects/default/secrets", body: e.createBody}
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := hw.do(ctx, req); err != nil {
					errs[w] = err
					return
				}
				var s unixapi.Secret
				if err := json.Unmarshal(hw.buf.Bytes(), &s); err != nil || s.ID == "" {
					errs[w] = fmt.Errorf("create secret: bad response %q", hw.buf.String())
					return
				}
				ids[i] = s.ID
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("preload secrets: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e.secretIDs = ids
	return nil
}
