package unixapi

import (
	"bytes"
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hostseal"
	"github.com/coffer-hsm/coffer/metrics"
)

// Backend is what the server needs of the domain; *daemon.Service is one.
type Backend interface {
	Authorize(ctx context.Context, p daemon.Principal, a daemon.Action, r daemon.Resource) (daemon.Grant, error)
	Status(ctx context.Context, g daemon.Grant) (daemon.Status, error)
	// FlushAudit writes the changes waiting for the audit log to it.
	FlushAudit(ctx context.Context) error

	CreateProject(ctx context.Context, g daemon.Grant, name string) (daemon.Project, error)
	GetProject(ctx context.Context, g daemon.Grant) (daemon.Project, error)
	ListProjects(ctx context.Context, g daemon.Grant, page daemon.Page) ([]daemon.Project, string, error)
	DeleteProject(ctx context.Context, g daemon.Grant, ref string) error

	CreateSecret(ctx context.Context, g daemon.Grant, in daemon.SecretInput) (daemon.Secret, error)
	GetSecret(ctx context.Context, g daemon.Grant) (daemon.Secret, error)
	ListSecrets(ctx context.Context, g daemon.Grant, f daemon.SecretFilter, page daemon.Page) ([]daemon.Secret, string, error)
	RotateSecret(ctx context.Context, g daemon.Grant, in daemon.RotateInput) (daemon.Secret, error)
	RevokeSecret(ctx context.Context, g daemon.Grant) (daemon.Secret, error)
	DeleteSecret(ctx context.Context, g daemon.Grant) error
	ImportKey(ctx context.Context, g daemon.Grant) (daemon.ImportKey, error)
	ImportSecret(ctx context.Context, g daemon.Grant, f *hostseal.File) (daemon.Secret, error)

	IdentityBackend
	PolicyBackend
	KeysBackend
	KMSBackend // handlers_k8s.go
	K8sSignerBackend
	K8sWebhookBackend // handlers_k8s_webhook.go

	CreateBinding(ctx context.Context, g daemon.Grant, in daemon.BindingInput) (daemon.Binding, error)
	ListBindings(ctx context.Context, g daemon.Grant) ([]daemon.Binding, error)
	DeleteBinding(ctx context.Context, g daemon.Grant, id string) error
	Deliver(ctx context.Context, p daemon.Principal, req daemon.DeliveryRequest) (daemon.Delivery, error)
	WatchDelivery(ctx context.Context, p daemon.Principal, req daemon.DeliveryRequest, afterVersion int, wait time.Duration) (daemon.Delivery, error)

	BackupBackend
	MetricsBackend // metrics.go
}

// IdentityBackend is the users, roles, credentials, sessions and tokens
// part of the domain.
type IdentityBackend interface {
	Authenticate(ctx context.Context, p daemon.Principal, bearer string) (daemon.Principal, error)

	CreateUser(ctx context.Context, g daemon.Grant, in daemon.UserInput) (daemon.User, error)
	GetUser(ctx context.Context, g daemon.Grant) (daemon.User, error)
	WhoAmI(ctx context.Context, g daemon.Grant) (daemon.Self, error)
	ListUsers(ctx context.Context, g daemon.Grant, project string, page daemon.Page) ([]daemon.User, string, error)
	PatchUser(ctx context.Context, g daemon.Grant, p daemon.UserPatch) (daemon.User, error)
	DeleteUser(ctx context.Context, g daemon.Grant) error

	SetRole(ctx context.Context, g daemon.Grant, user, role string) (daemon.ProjectRole, error)
	RemoveRole(ctx context.Context, g daemon.Grant, user, role string) error
	ListRoles(ctx context.Context, g daemon.Grant) ([]daemon.ProjectRole, error)

	CreateCredential(ctx context.Context, g daemon.Grant, in daemon.CredentialInput) (daemon.Credential, daemon.Issued, error)
	GetCredential(ctx context.Context, g daemon.Grant) (daemon.Credential, error)
	ListCredentials(ctx context.Context, g daemon.Grant, f daemon.CredentialFilter, page daemon.Page) ([]daemon.Credential, string, error)
	RotateCredential(ctx context.Context, g daemon.Grant, in daemon.CredentialRotate) (daemon.Credential, daemon.Issued, error)
	RevokeCredential(ctx context.Context, g daemon.Grant) (daemon.Credential, error)
	DeleteCredential(ctx context.Context, g daemon.Grant) error

	CreateAccessRule(ctx context.Context, g daemon.Grant, r daemon.AccessRule) (daemon.SavedRule, error)
	ListAccessRules(ctx context.Context, g daemon.Grant, page daemon.Page) ([]daemon.SavedRule, string, error)
	DeleteAccessRule(ctx context.Context, g daemon.Grant, id string) error

	Login(ctx context.Context, authToken string) (daemon.Session, string, error)
	ListSessions(ctx context.Context, g daemon.Grant, page daemon.Page) ([]daemon.Session, string, error)
	RevokeSession(ctx context.Context, g daemon.Grant) error

	ClientCredentials(ctx context.Context, clientID, clientSecret, scope string, ask ...daemon.Audiences) (daemon.AccessToken, error)
	TokenExchange(ctx context.Context, req daemon.TokenExchangeRequest) (daemon.AccessToken, error)
	Introspect(ctx context.Context, token string) (daemon.Introspection, error)
	AuthorizeCall(ctx context.Context, call daemon.Call) (daemon.Decision, error)
	ExplainCall(ctx context.Context, call daemon.Call) (daemon.Decision, error)
	JWKS() daemon.JWKSet
	ServerMetadata() daemon.ServerMetadata
	OpenIDConfiguration() daemon.ServerMetadata
}

// Server serves the HTTP API of a Backend.
type Server struct {
	b       Backend
	log     *slog.Logger
	mux     *routeMux
	httpSrv *http.Server

	unavailable logSampler // 503s: one log line per interval
	auditor     Auditor    // optional, see SetAuditor: serves GET /v1/audit and verify
	profiling   sync.Mutex // held while a sampled profile is recorded

	watchMu sync.Mutex
	watches map[peerKey]int // watches in flight per caller (handlers_delivery.go)
	// maxWatches is SetMaxConnsPerPeer's limit (0: MaxWatchesPerPeer).
	maxWatches int
	// closing ends when Shutdown begins: watches answer at once.
	closing      context.Context
	closingDone  context.CancelFunc
	metrics      atomic.Pointer[metrics.Metrics] // see SetMetrics
	routeMetrics []*routeMetrics                 // one per route, filled by SetMetrics
	unmatched    routeMetrics                    // requests no route matched (404, 405)
}

// NewServer returns a Server for b.
func NewServer(b Backend, log *slog.Logger) *Server {
	if log == nil {
		log = slog.Default()
	}
	s := &Server{b: b, log: log, mux: newRouteMux()}
	s.closing, s.closingDone = context.WithCancel(context.Background())
	s.routes()
	s.httpSrv = &http.Server{
		Handler:           s,
		ConnContext:       connContext,
		ConnState:         trackConnState, // fair share: which connections are idle
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s
}

// Serve accepts connections on l until Shutdown. Listeners from ListenUnix
// (or NewPeerListener) give each request its caller's identity; requests on
// any other listener are anonymous.
func (s *Server) Serve(l net.Listener) error {
	err := s.httpSrv.Serve(l)
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Shutdown stops accepting connections and waits for in-flight requests to
// finish, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closingDone()
	return s.httpSrv.Shutdown(ctx)
}

// drainLimit bounds how much of an unread request body is discarded.
const drainLimit = 1 << 20

// apiFunc is a handler that returns its error; ServeHTTP writes it.
type apiFunc func(w http.ResponseWriter, r *http.Request) error

// routeOpt is something a route declares about itself.
type routeOpt int

const (
	// selfAuthenticating: the route takes a token or client secret as
	// its input (login, OAuth2, introspection, /v1/authorize) or needs
	// none (the public metadata), rather than as the caller's identity;
	// an Authorization header is not a bearer token there.
	selfAuthenticating routeOpt = iota + 1
)

// handle declares a route: its pattern, its handler and what it says of
// itself, in one place. Everything about a route follows from this call:
// authorization, audit records and cache invalidation are the domain's
// (daemon.Service), decided by the method the handler calls.
func (s *Server) handle(pattern string, f apiFunc, opts ...routeOpt) {
	s.handleHTTP(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := f(w, r); err != nil {
			s.writeError(w, r, err)
		}
	}), opts...)
}

// handleHTTP is handle for a handler that writes its own errors (the
// OAuth2 token endpoint, whose errors have RFC 6749's shape).
func (s *Server) handleHTTP(pattern string, h http.Handler, opts ...routeOpt) {
	self := slices.Contains(opts, selfAuthenticating)
	rm := &routeMetrics{pattern: pattern}
	s.routeMetrics = append(s.routeMetrics, rm)
	s.mux.Handle(pattern, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		w = sw
		defer func() { rm.observe(r, cmp.Or(sw.status, http.StatusOK), start) }()
		r = r.WithContext(daemon.WithRoute(r.Context(), pattern))
		if !self {
			// A bearer token makes the request act as the token's session.
			var err error
			if r, err = s.authenticate(r); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		h.ServeHTTP(w, r)
	}))
}

// ServeHTTP routes r. Unknown paths and wrong methods get JSON errors like
// every other failure.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header()["Cache-Control"] = noStore
	// A request refused before its body was read (403, 413) must still
	// have the body consumed, or closing the connection resets it before
	// the client has read the answer (Go lingers only on TCP, not on Unix
	// sockets). Bounded: a client sending more is cut off.
	defer io.Copy(io.Discard, io.LimitReader(r.Body, drainLimit))
	h, pattern := s.mux.Handler(r)
	if pattern != "" {
		s.mux.ServeHTTP(w, r) // sets the path values
		return
	}
	// Let the mux decide between 404 and 405 (and set Allow), then answer
	// in JSON; counted under one label, never the path.
	start := time.Now()
	rec := &statusRecorder{header: http.Header{}}
	h.ServeHTTP(rec, r)
	if allow := rec.header.Get("Allow"); allow != "" {
		w.Header().Set("Allow", allow)
	}
	if rec.status == http.StatusMethodNotAllowed {
		writeJSON(w, rec.status, api.ErrorBody{Error: "method_not_allowed", Message: r.Method + " is not allowed on " + r.URL.Path})
		s.unmatched.observe(r, rec.status, start)
		return
	}
	s.unmatched.observe(r, http.StatusNotFound, start)
	writeJSON(w, http.StatusNotFound, api.ErrorBody{Error: daemon.CodeNotFound, Message: "no such endpoint: " + r.Method + " " + r.URL.Path})
}

// authenticate makes a request with an Authorization: Bearer header act as
// the token's session. Any other scheme is refused.
func (s *Server) authenticate(r *http.Request) (*http.Request, error) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return r, nil
	}
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(token) == "" {
		return r, unauthenticated("use Authorization: Bearer <token>")
	}
	p, err := s.b.Authenticate(r.Context(), daemon.PrincipalFrom(r.Context()), strings.TrimSpace(token))
	if err != nil {
		return r, err
	}
	return r.WithContext(daemon.WithPrincipal(r.Context(), p)), nil
}

func unauthenticated(msg string) error {
	return &daemon.Error{Class: daemon.ErrUnauthenticated, Code: daemon.CodeUnauthenticated, Message: msg}
}

type statusRecorder struct {
	header http.Header
	status int
}

func (r *statusRecorder) Header() http.Header         { return r.header }
func (r *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (r *statusRecorder) WriteHeader(code int)        { r.status = code }

// writeError is the one place errors become responses. Causes of internal
// and unavailable errors go to the log; the caller gets the safe message.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	body := api.ErrorBody{Error: daemon.CodeOf(err), Message: daemon.MessageOf(err)}
	if status == http.StatusUnauthorized && w.Header().Get("WWW-Authenticate") == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="coffer"`)
	}
	setRetryAfter(w, err)
	switch {
	case status == http.StatusServiceUnavailable || status == http.StatusInsufficientStorage:
		// An outage (HSM token lost, store failing) fails every request
		// that needs the part; the part itself logs the loss and the
		// recovery. One line per interval says how many were refused.
		if n, ok := s.unavailable.tick(time.Now()); ok {
			s.log.Warn("requests failed: a part is unavailable", "route", routeOf(r), "status", status, "err", err, "failed_since_last_line", n)
		}
	case status >= 500:
		s.log.Error("request failed", "route", routeOf(r), "status", status, "err", err)
	default:
		s.log.Debug("request refused", "route", routeOf(r), "status", status, "code", body.Error)
	}
	writeJSON(w, status, body)
}

// routeOf names a request's route for the daemon log: its pattern, never
// its path, which holds names (projects, users, delivery names).
func routeOf(r *http.Request) string {
	if r.Pattern != "" {
		return r.Pattern
	}
	return r.Method + " (no route)"
}

// writeJSON answers v as one JSON document with its Content-Length, from
// a pooled buffer.
func writeJSON(w http.ResponseWriter, status int, v any) {
	jb := jsonBufs.Get().(*jsonBuf)
	defer jb.release()
	if err := jb.enc.Encode(v); err != nil {
		// Not expected of the wire types; answer what Encode would have
		// streamed (nothing), as before.
		jb.buf.Reset()
	}
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Content-Length"] = []string{strconv.Itoa(jb.buf.Len())}
	w.WriteHeader(status)
	_, _ = w.Write(jb.buf.Bytes())
}

// contentTypeJSON is the shared value of every JSON answer's
// Content-Type (never changed in place).
var contentTypeJSON = []string{"application/json"}

// noStore is the shared value of every answer's Cache-Control.
var noStore = []string{"no-store"}

type jsonBuf struct {
	buf bytes.Buffer
	enc *json.Encoder
}

var jsonBufs = sync.Pool{New: func() any {
	jb := &jsonBuf{}
	jb.enc = json.NewEncoder(&jb.buf)
	jb.enc.SetEscapeHTML(false)
	return jb
}}

// maxPooledJSON bounds the buffers kept for reuse; a large list answer's
// buffer is left to the collector.
const maxPooledJSON = 64 << 10

func (jb *jsonBuf) release() {
	// An answer may carry a secret (a delivery, an issued token): wipe it.
	clear(jb.buf.Bytes())
	if jb.buf.Cap() > maxPooledJSON {
		return
	}
	jb.buf.Reset()
	jsonBufs.Put(jb)
}

// authorize decides the request's permission from the connection's
// principal, before anything reads the body.
func (s *Server) authorize(r *http.Request, a daemon.Action, res daemon.Resource) (daemon.Grant, error) {
	res.Method, res.Path = r.Method, r.URL.EscapedPath()
	return s.b.Authorize(r.Context(), daemon.PrincipalFrom(r.Context()), a, res)
}

// decodeJSON reads a request body of at most BodyLimit bytes into v,
// strictly: unknown fields, trailing data and malformed JSON are 400
// invalid_json; an empty body is allowed only when optional.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, optional bool) error {
	return decodeJSONLimit(w, r, v, optional, api.BodyLimit)
}

// decodeJSONLimit is decodeJSON with a body limit of its own, for the
// routes whose bodies are larger by nature.
func decodeJSONLimit(w http.ResponseWriter, r *http.Request, v any, optional bool, limit int64) error {
	if r.ContentLength > limit {
		return tooLargeThan(limit)
	}
	body, err := api.ReadSecret(http.MaxBytesReader(w, r.Body, limit), r.ContentLength)
	defer clear(body) // it may hold a payload, even when incomplete
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return tooLargeThan(limit)
	}
	if err != nil {
		return daemon.Invalid(daemon.CodeInvalidJSON, "cannot read request body")
	}
	if len(bytes.TrimSpace(body)) == 0 {
		if optional {
			return nil
		}
		return daemon.Invalid(daemon.CodeInvalidJSON, "request body must be a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return daemon.Invalid(daemon.CodeInvalidJSON, "invalid JSON body: %s", jsonProblem(err))
	}
	if dec.More() {
		return daemon.Invalid(daemon.CodeInvalidJSON, "invalid JSON body: unexpected data after the object")
	}
	return nil
}

// jsonProblem describes a decode error without echoing any value from the
// body (which could be secret).
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	var pe *time.ParseError
	var be base64.CorruptInputError
	switch {
	case errors.As(err, &pe):
		return "a time is not RFC 3339" // its text would quote the value
	case errors.As(err, &be):
		return "a binary field is not standard base64"
	case errors.As(err, &se):
		return "syntax error at byte " + strconv.FormatInt(se.Offset, 10)
	case errors.As(err, &te):
		if te.Field != "" {
			return "field " + te.Field + " must be " + te.Type.String()
		}
		return "the body must be a JSON object"
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "unexpected end of input"
	}
	// "json: unknown field \"x\"" names only the field.
	return err.Error()
}

func tooLarge() error { return tooLargeThan(api.BodyLimit) }

func tooLargeThan(limit int64) error {
	return daemon.Invalid(daemon.CodeBodyTooLarge, "request body is larger than %d bytes", limit)
}

func pageOf(r *http.Request) (daemon.Page, error) {
	var p daemon.Page
	q := r.URL.Query()
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			return p, daemon.Invalid(daemon.CodeInvalidArgument, "limit must be a positive number")
		}
		p.Limit = n
	}
	p.After = q.Get("after")
	return p, nil
}

// logSampler lets one event through per interval and counts the rest.
type logSampler struct {
	mu    sync.Mutex
	last  time.Time
	count int
}

// unavailableLogInterval spaces the log lines of an outage.
const unavailableLogInterval = 10 * time.Second

// tick counts an event and reports whether to log it, with the number of
// events since the last logged one (this one included).
func (l *logSampler) tick(now time.Time) (int, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	if !l.last.IsZero() && now.Sub(l.last) < unavailableLogInterval {
		return 0, false
	}
	n := l.count
	l.last, l.count = now, 0
	return n, true
}
