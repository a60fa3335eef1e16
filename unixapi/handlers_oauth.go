package unixapi

import (
	"errors"
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

func (s *Server) oauthRoutes() {
	s.handleHTTP("POST /oauth2/token", http.HandlerFunc(s.oauthToken), selfAuthenticating)
	s.handle("POST /oauth2/introspect", s.introspect, selfAuthenticating)
	s.handle("GET /.well-known/jwks.json", s.jwks, selfAuthenticating)
	s.handle("GET /.well-known/oauth-authorization-server", s.metadata, selfAuthenticating)
	s.handle("GET /.well-known/openid-configuration", s.openIDConfiguration, selfAuthenticating)
	s.handle("POST /v1/authorize", s.authorizeCall, selfAuthenticating)
}

// readForm parses an application/x-www-form-urlencoded body of at most
// BodyLimit bytes.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/x-www-form-urlencoded" {
		return nil, daemon.Invalid(daemon.CodeInvalidRequest, "the body must be application/x-www-form-urlencoded")
	}
	if r.ContentLength > api.BodyLimit {
		return nil, tooLarge()
	}
	r.Body = http.MaxBytesReader(w, r.Body, api.BodyLimit)
	if err := r.ParseForm(); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge()
		}
		return nil, daemon.Invalid(daemon.CodeInvalidRequest, "malformed form body")
	}
	for k, v := range r.PostForm {
		if len(v) > 1 {
			return nil, daemon.Invalid(daemon.CodeInvalidRequest, "parameter %s is given more than once", k)
		}
	}
	return r.PostForm, nil
}

// oauthToken is the token endpoint: the RFC 6749 §4.4 client-credentials
// grant and RFC 8693 token exchange, both with RFC 8707 resource (and
// RFC 8693 audience) parameters. Its errors follow RFC 6749 §5.2 (and the
// codes RFC 8693 and RFC 8707 add), not coffer's error shape.
func (s *Server) oauthToken(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	fail := func(status int, code, desc string, basic bool) {
		if status == http.StatusUnauthorized && basic {
			w.Header().Set("WWW-Authenticate", `Basic realm="coffer"`)
		}
		writeJSON(w, status, api.OAuth2Error{Error: code, ErrorDescription: desc})
	}
	form, err := readForm(w, r)
	if err != nil {
		if daemon.CodeOf(err) == daemon.CodeBodyTooLarge {
			fail(http.StatusRequestEntityTooLarge, daemon.CodeInvalidRequest, daemon.MessageOf(err), false)
			return
		}
		fail(http.StatusBadRequest, daemon.CodeInvalidRequest, daemon.MessageOf(err), false)
		return
	}
	id, secret, basic := r.BasicAuth()
	if basic {
		// RFC 6749 §2.3.1: both parts are form-urlencoded inside Basic.
		var e1, e2 error
		id, e1 = url.QueryUnescape(id)
		secret, e2 = url.QueryUnescape(secret)
		if e1 != nil || e2 != nil {
			fail(http.StatusUnauthorized, daemon.CodeInvalidClient, "malformed client credentials", true)
			return
		}
		if form.Has("client_secret") || form.Has("client_id") && form.Get("client_id") != id {
			fail(http.StatusBadRequest, daemon.CodeInvalidRequest, "use one client authentication method, not two", true)
			return
		}
	} else if r.Header.Get("Authorization") != "" {
		fail(http.StatusUnauthorized, daemon.CodeInvalidClient, "client authentication must be HTTP Basic or form fields", false)
		return
	} else {
		id, secret = form.Get("client_id"), form.Get("client_secret")
	}
	exchange := false
	switch gt := form.Get("grant_type"); gt {
	case "client_credentials":
	case daemon.GrantTokenExchange:
		exchange = true
	case "":
		fail(http.StatusBadRequest, daemon.CodeInvalidRequest, "grant_type is required", basic)
		return
	default:
		fail(http.StatusBadRequest, daemon.CodeUnsupportedGrantType, "grant_type must be client_credentials or "+daemon.GrantTokenExchange, basic)
		return
	}
	ask := daemon.Audiences{}
	if form.Has("audience") {
		ask.Audience = []string{form.Get("audience")}
	}
	if form.Has("resource") {
		ask.Resource = []string{form.Get("resource")}
	}
	var tok daemon.AccessToken
	issued := ""
	if exchange {
		// The subject token authenticates; a client secret beside it
		// would be a second, unchecked authentication.
		if basic || form.Has("client_id") || form.Has("client_secret") {
			fail(http.StatusUnauthorized, daemon.CodeInvalidClient, "token exchange takes no client authentication: the subject token authenticates", basic)
			return
		}
		if form.Has("actor_token") || form.Has("actor_token_type") {
			fail(http.StatusBadRequest, daemon.CodeInvalidRequest, "actor_token (delegation) is not supported", false)
			return
		}
		tok, err = s.b.TokenExchange(r.Context(), daemon.TokenExchangeRequest{
			SubjectToken: form.Get("subject_token"), SubjectTokenType: form.Get("subject_token_type"),
			RequestedTokenType: form.Get("requested_token_type"), Scope: form.Get("scope"), Audiences: ask,
		})
		issued = daemon.TokenTypeAccessToken
	} else {
		if id == "" || secret == "" {
			fail(http.StatusUnauthorized, daemon.CodeInvalidClient, "client authentication failed", basic)
			return
		}
		tok, err = s.b.ClientCredentials(r.Context(), id, secret, form.Get("scope"), ask)
	}
	switch code := daemon.CodeOf(err); {
	case err == nil:
	case code == daemon.CodeInvalidClient:
		fail(http.StatusUnauthorized, code, daemon.MessageOf(err), basic)
		return
	case code == daemon.CodeInvalidScope, code == daemon.CodeInvalidTarget, code == daemon.CodeInvalidGrant,
		code == daemon.CodeInvalidRequest, code == daemon.CodeUnsupportedTokenType:
		fail(http.StatusBadRequest, code, daemon.MessageOf(err), basic)
		return
	case code == daemon.CodeRateLimited:
		setRetryAfter(w, err)
		fail(http.StatusTooManyRequests, code, daemon.MessageOf(err), basic)
		return
	default:
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, api.TokenResponse{AccessToken: tok.Token, IssuedTokenType: issued, TokenType: "Bearer", ExpiresIn: tok.ExpiresIn, Scope: tok.Scope})
}

func (s *Server) introspect(w http.ResponseWriter, r *http.Request) error {
	form, err := readForm(w, r)
	if err != nil {
		return err
	}
	token := strings.TrimSpace(form.Get("token"))
	if token == "" {
		return daemon.Invalid(daemon.CodeInvalidRequest, "token is required")
	}
	in, err := s.b.Introspect(r.Context(), token)
	if err != nil {
		return err
	}
	out := api.Introspection{
		Active: in.Active, TokenType: in.TokenType, ClientID: in.ClientID, Username: in.Username, Subject: in.Subject,
		Project: in.Project, Scope: in.Scope, Roles: in.Roles, Policies: in.Policies, AccessRules: rulesWire(in.AccessRules),
		CredentialID: in.CredentialID, SessionID: in.SessionID, IssuedAt: in.IssuedAt, ExpiresAt: in.ExpiresAt, Issuer: in.Issuer,
		Audience: in.Audience,
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) jwks(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, s.b.JWKS())
	return nil
}

func (s *Server) metadata(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, s.b.ServerMetadata())
	return nil
}

func (s *Server) openIDConfiguration(w http.ResponseWriter, r *http.Request) error {
	w.Header().Set("Cache-Control", "public, max-age=300")
	writeJSON(w, http.StatusOK, s.b.OpenIDConfiguration())
	return nil
}

func (s *Server) authorizeCall(w http.ResponseWriter, r *http.Request) error {
	var req api.AuthorizeRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	if req.Token == "" || req.Service == "" || req.Method == "" || req.Path == "" {
		return daemon.Invalid(daemon.CodeInvalidArgument, "token, service, method and path are required")
	}
	call := s.b.AuthorizeCall
	if req.Explain {
		call = s.b.ExplainCall
	}
	d, err := call(r.Context(), daemon.Call{Token: req.Token, Service: req.Service, Method: req.Method, Path: req.Path, Audience: req.Audience})
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusOK, api.Decision{Allowed: d.Allowed, Reason: d.Reason, User: d.User, Project: d.Project, Roles: d.Roles,
		Policies: d.Policies, Matched: d.Matched, Audience: d.Audience})
	return nil
}
