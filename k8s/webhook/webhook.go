// Package webhook serves coffer's Kubernetes authentication and
// authorization webhooks to kube-apiserver: TokenReview
// (authentication.k8s.io/v1, --authentication-token-webhook-config-file)
// and SubjectAccessReview (authorization.k8s.io/v1,
// --authorization-webhook-config-file), over HTTPS on a loopback listener
// whose TLS key lives in the HSM (Server, cert.go).
//
// The handlers only decode, check the shape and encode: the decisions are
// daemon.Service's (ReviewToken, ReviewAccess). Every answer the apiserver
// acts on is a 200 with a status; a body that is not a review of the
// expected version and kind is a 400, a failure of the store or the HSM a
// 5xx (the apiserver then fails the request closed).
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/coffer-hsm/coffer/daemon"
)

// Routes.
const (
	TokenReviewPath         = "/v1/k8s/tokenreview"
	SubjectAccessReviewPath = "/v1/k8s/subjectaccessreview"
)

const (
	// MaxBodyBytes bounds a review's body: a token (a JWT is a few KiB),
	// or a user's groups and extra.
	MaxBodyBytes = 64 << 10

	authnAPIVersion = "authentication.k8s.io/v1"
	authzAPIVersion = "authorization.k8s.io/v1"
)

// Reviewer decides the reviews; *daemon.Service is one.
type Reviewer interface {
	ReviewToken(ctx context.Context, caller daemon.Principal, token string, audiences []string) (daemon.TokenReviewResult, error)
	ReviewAccess(ctx context.Context, caller daemon.Principal, in daemon.AccessReview) (daemon.AccessReviewResult, error)
}

// apiserver is who calls: the listener authenticated it (client
// certificate or bearer) before any handler runs.
var apiserver = daemon.Principal{Channel: daemon.ChannelKubernetes}

// errorBody is coffer's error shape.
type errorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// Handler serves the two routes.
type Handler struct {
	r   Reviewer
	log *slog.Logger
	mux *http.ServeMux
}

// NewHandler returns the webhooks' handler over r.
func NewHandler(r Reviewer, log *slog.Logger) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{r: r, log: log, mux: http.NewServeMux()}
	h.mux.HandleFunc("POST "+TokenReviewPath, h.tokenReview)
	h.mux.HandleFunc("POST "+SubjectAccessReviewPath, h.subjectAccessReview)
	return h
}

// ServeHTTP routes r; unknown paths and methods get JSON errors.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	if _, pattern := h.mux.Handler(r); pattern != "" {
		h.mux.ServeHTTP(w, r)
		return
	}
	if r.URL.Path == TokenReviewPath || r.URL.Path == SubjectAccessReviewPath {
		w.Header().Set("Allow", http.MethodPost)
		writeJSON(w, http.StatusMethodNotAllowed, errorBody{"method_not_allowed", r.Method + " is not allowed on " + r.URL.Path + ": POST a review"})
		return
	}
	writeJSON(w, http.StatusNotFound, errorBody{"not_found", "no such endpoint: " + r.Method + " " + r.URL.Path})
}

// BadReviewError is a body that is not a review coffer answers.
type BadReviewError struct{ msg string }

func (e *BadReviewError) Error() string { return e.msg }

func badReview(format string, args ...any) error {
	return &BadReviewError{msg: fmt.Sprintf(format, args...)}
}

// DecodeTokenReview parses an authentication.k8s.io/v1 TokenReview.
func DecodeTokenReview(body []byte) (*TokenReview, error) {
	var tr TokenReview
	if err := decode(body, &tr); err != nil {
		return nil, err
	}
	if tr.APIVersion != authnAPIVersion || tr.Kind != "TokenReview" {
		return nil, badReview("want apiVersion %s and kind TokenReview, got %q and %q (start kube-apiserver with --authentication-token-webhook-version=v1)",
			authnAPIVersion, tr.APIVersion, tr.Kind)
	}
	return &tr, nil
}

// DecodeSubjectAccessReview parses an authorization.k8s.io/v1
// SubjectAccessReview with exactly one of resourceAttributes and
// nonResourceAttributes.
func DecodeSubjectAccessReview(body []byte) (*SubjectAccessReview, error) {
	var sar SubjectAccessReview
	if err := decode(body, &sar); err != nil {
		return nil, err
	}
	if sar.APIVersion != authzAPIVersion || sar.Kind != "SubjectAccessReview" {
		return nil, badReview("want apiVersion %s and kind SubjectAccessReview, got %q and %q (start kube-apiserver with --authorization-webhook-version=v1)",
			authzAPIVersion, sar.APIVersion, sar.Kind)
	}
	ra, nra := sar.Spec.ResourceAttributes, sar.Spec.NonResourceAttributes
	switch {
	case ra == nil && nra == nil:
		return nil, badReview("spec has neither resourceAttributes nor nonResourceAttributes")
	case ra != nil && nra != nil:
		return nil, badReview("spec has both resourceAttributes and nonResourceAttributes")
	}
	return &sar, nil
}

// decode unmarshals one JSON object. Unknown fields are ignored: a newer
// apiserver may send fields this version does not know.
func decode(body []byte, v any) error {
	if len(body) == 0 {
		return badReview("empty body: POST a review")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			return badReview("malformed JSON at offset %d", se.Offset)
		case errors.As(err, &te):
			return badReview("JSON field %s has the wrong type", te.Field)
		}
		return badReview("malformed JSON")
	}
	return nil
}

// RequestPath is the path of the apiserver URL a resource request would
// have: /api/{version}/... for the core group, /apis/{group}/{version}/...
// otherwise; namespaces/{ns} when namespaced (a namespace itself is
// /api/v1/namespaces/{name}); then resource, name, subresource. An empty
// version is "*" (any). A '/' or '%' inside a value is percent-encoded,
// as in the URL, so a value cannot add segments.
func RequestPath(a *ResourceAttributes) string {
	var b strings.Builder
	version := a.Version
	if version == "" {
		version = "*"
	}
	if a.Group == "" {
		b.WriteString("/api/")
	} else {
		b.WriteString("/apis/")
		b.WriteString(segment(a.Group))
		b.WriteByte('/')
	}
	b.WriteString(segment(version))
	namespaceObject := a.Group == "" && a.Resource == "namespaces"
	if a.Namespace != "" && !namespaceObject {
		b.WriteString("/namespaces/")
		b.WriteString(segment(a.Namespace))
	}
	if a.Resource != "" {
		b.WriteByte('/')
		b.WriteString(segment(a.Resource))
		name := a.Name
		if namespaceObject && name == "" {
			name = a.Namespace
		}
		if name != "" {
			b.WriteByte('/')
			b.WriteString(segment(name))
		}
		if a.Subresource != "" {
			b.WriteByte('/')
			b.WriteString(segment(a.Subresource))
		}
	}
	return b.String()
}

// segment percent-encodes '%' and '/' in one path segment.
func segment(s string) string {
	if !strings.ContainsAny(s, "%/") {
		return s
	}
	return strings.NewReplacer("%", "%25", "/", "%2F").Replace(s)
}

// readBody reads a review's body, at most MaxBodyBytes.
func readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeJSON(w, http.StatusRequestEntityTooLarge, errorBody{"request_body_too_large", fmt.Sprintf("a review is at most %d bytes", MaxBodyBytes)})
		} else {
			writeJSON(w, http.StatusBadRequest, errorBody{"invalid_review", "cannot read the body"})
		}
		return nil, false
	}
	return body, true
}

// tokenReviewResponse is the answer: the request's apiVersion and kind,
// and a status (never the token back).
type tokenReviewResponse struct {
	APIVersion string            `json:"apiVersion"`
	Kind       string            `json:"kind"`
	Status     tokenReviewStatus `json:"status"`
}

// tokenReviewStatus is a TokenReviewStatus without an empty user when
// not authenticated.
type tokenReviewStatus struct {
	Authenticated bool      `json:"authenticated,omitempty"`
	User          *UserInfo `json:"user,omitempty"`
	Audiences     []string  `json:"audiences,omitempty"`
	Error         string    `json:"error,omitempty"`
}

type subjectAccessReviewResponse struct {
	APIVersion string                    `json:"apiVersion"`
	Kind       string                    `json:"kind"`
	Status     SubjectAccessReviewStatus `json:"status"`
}

func (h *Handler) tokenReview(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	tr, err := DecodeTokenReview(body)
	clear(body) // it held the token
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"invalid_review", err.Error()})
		return
	}
	res, err := h.r.ReviewToken(r.Context(), apiserver, tr.Spec.Token, tr.Spec.Audiences)
	tr.Spec.Token = ""
	out := tokenReviewResponse{APIVersion: authnAPIVersion, Kind: "TokenReview"}
	switch {
	case errors.Is(err, daemon.ErrRateLimited):
		// An answer, not an outage: the apiserver would retry a 429.
		out.Status.Error = daemon.MessageOf(err)
	case err != nil:
		h.fail(w, r, err)
		return
	case !res.Authenticated:
		out.Status.Error = res.Error
	default:
		out.Status.Authenticated = true
		out.Status.Audiences = res.Audiences
		out.Status.User = &UserInfo{Username: res.Username, UID: res.UID, Groups: res.Groups, Extra: res.Extra}
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) subjectAccessReview(w http.ResponseWriter, r *http.Request) {
	body, ok := readBody(w, r)
	if !ok {
		return
	}
	sar, err := DecodeSubjectAccessReview(body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, errorBody{"invalid_review", err.Error()})
		return
	}
	in := daemon.AccessReview{User: sar.Spec.User, UID: sar.Spec.UID, Groups: sar.Spec.Groups, Extra: sar.Spec.Extra}
	if ra := sar.Spec.ResourceAttributes; ra != nil {
		in.Verb, in.Path = ra.Verb, RequestPath(ra)
	} else {
		in.Verb, in.Path = sar.Spec.NonResourceAttributes.Verb, sar.Spec.NonResourceAttributes.Path
	}
	res, err := h.r.ReviewAccess(r.Context(), apiserver, in)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := subjectAccessReviewResponse{APIVersion: authzAPIVersion, Kind: "SubjectAccessReview",
		Status: SubjectAccessReviewStatus{Allowed: false, Denied: res.Denied, Reason: res.Reason}}
	writeJSON(w, http.StatusOK, out)
}

// fail answers a failure of the store or the HSM: 503 for an outage, 500
// otherwise; the apiserver fails the request closed.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	status := http.StatusInternalServerError
	if errors.Is(err, daemon.ErrUnavailable) {
		status = http.StatusServiceUnavailable
	}
	h.log.Warn("Kubernetes review failed", "route", r.URL.Path, "status", status, "err", err)
	writeJSON(w, status, errorBody{daemon.CodeOf(err), daemon.MessageOf(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"error":"internal","message":"cannot encode the answer"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(b, '\n'))
}
