package unixapi

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/daemon"
)

// The audit hook: ServeHTTP wraps the response of every routed request
// when an Auditor is set, and once the handler has run records the
// security-relevant ones (auditable) as one event built from the route,
// the path ids, the caller, the status and error code, and a few
// non-secret fields of the answer. Nothing is taken from request bodies
// except an OAuth2 client id and the public id of a presented token.

// SetAuditor makes the server record security events in a; call it before
// Serve. With none set, /v1/audit answers 503.
func (s *Server) SetAuditor(a Auditor) { s.auditor = a }

// auditable says whether a request is a security event: every change,
// authentication and delivery, and every refusal for want of
// authentication or permission (or for too many failed authentications).
// Successful reads are not.
func auditable(method, pattern string, status int) bool {
	switch {
	case refusal(status):
		return true
	case pattern == patternDeliver:
		return true
	case pattern == patternAuditRead:
		return false
	}
	return method != http.MethodGet && method != http.MethodHead
}

// refusal: authentication or authorization said no.
func refusal(status int) bool {
	return status == http.StatusUnauthorized || status == http.StatusForbidden || status == http.StatusTooManyRequests
}

const (
	patternDeliver    = "GET /v1/deliver/{name}"
	patternAuditRead  = "GET /v1/audit"
	patternLogin      = "POST /v1/auth/login"
	patternToken      = "POST /oauth2/token"
	patternIntrospect = "POST /oauth2/introspect"
	patternAuthorize  = "POST /v1/authorize"
)

// auditRoute names a route's event and what its {id} is.
type auditRoute struct {
	action string
	id     string // the target key of the {id} wildcard
}

var auditRoutes = map[string]auditRoute{
	"POST /v1/projects":                        {"project.create", ""},
	"DELETE /v1/projects/{p}":                  {"project.delete", ""},
	"POST /v1/projects/{p}/secrets":            {"secret.create", ""},
	"POST /v1/projects/{p}/secrets:import":     {"secret.create", ""}, // an import is a create; target "sealed" names the file
	"POST /v1/secrets/{id}/rotate":             {"secret.rotate", "secret"},
	"POST /v1/secrets/{id}/revoke":             {"secret.revoke", "secret"},
	"DELETE /v1/secrets/{id}":                  {"secret.delete", "secret"},
	"POST /v1/secrets/{id}/bindings":           {"binding.create", "secret"},
	"DELETE /v1/secrets/{id}/bindings/{b}":     {"binding.delete", "secret"},
	patternDeliver:                             {"deliver", ""},
	"POST /v1/users":                           {"user.create", ""},
	"PATCH /v1/users/{u}":                      {"user.update", ""},
	"DELETE /v1/users/{u}":                     {"user.delete", ""},
	"PUT /v1/projects/{p}/roles/{u}/{role}":    {"role.grant", ""},
	"DELETE /v1/projects/{p}/roles/{u}/{role}": {"role.revoke", ""},
	"POST /v1/projects/{p}/credentials":        {"credential.create", ""},
	"POST /v1/credentials/{id}/rotate":         {"credential.rotate", "credential"},
	"POST /v1/credentials/{id}/revoke":         {"credential.revoke", "credential"},
	"DELETE /v1/credentials/{id}":              {"credential.delete", "credential"},
	"POST /v1/access-rules":                    {"access_rule.create", ""},
	"DELETE /v1/access-rules/{id}":             {"access_rule.delete", "access_rule"},
	patternLogin:                               {"auth.login", ""},
	"DELETE /v1/sessions/{id}":                 {"session.revoke", "session"},
	patternToken:                               {"oauth2.token", ""},
	patternIntrospect:                          {"oauth2.introspect", ""},
	patternAuthorize:                           {"authorize", ""},
	"POST /v1/audit/verify":                    {"audit.verify", ""},
	patternAuditRead:                           {"audit.read", ""},
	"POST /v1/hsm/kek:rotate":                  {"hsm.kek_rotate", ""},
	"DELETE /v1/hsm/keks/{label}":              {"hsm.kek_remove", ""},
	"POST /v1/hsm/signing-key:rotate":          {"hsm.signing_key_rotate", ""},
}

// wildcardKeys names the target key of each path wildcard ({id} depends
// on the route).
var wildcardKeys = map[string]string{"p": "project", "u": "user", "role": "role", "b": "binding", "name": "name", "label": "key"}

// locationKeys turn a Location header into a target id.
var locationKeys = []struct{ prefix, key string }{
	{"/v1/projects/", "project"},
	{"/v1/users/", "user"},
	{"/v1/credentials/", "credential"},
	{"/v1/access-rules/", "access_rule"},
	{"/v1/secrets/", "secret"}, // and /bindings/{b}
}

// maxAuditValue bounds one target value.
const maxAuditValue = 128

// auditSniffLimit bounds the bytes of an answer kept to read its
// non-secret fields.
const auditSniffLimit = 16 << 10

// auditWriter records the status of an answer and keeps the JSON bodies
// the hook reads fields from (errors, logins, introspections,
// authorization decisions).
type auditWriter struct {
	http.ResponseWriter
	sniff  bool // the route's success body has fields to read
	status int
	keep   bool
	body   []byte
	noted  *auditBody // what the handler told the hook, instead of sniffing
}

// noteAudit hands the hook the fields of an answer directly, so that it
// need not keep and decode the body. w is the handler's writer; without
// an audit hook it does nothing.
func noteAudit(w http.ResponseWriter, b auditBody) {
	if aw, ok := w.(*auditWriter); ok {
		aw.noted, aw.sniff = &b, false
	}
}

func newAuditWriter(w http.ResponseWriter, pattern string) *auditWriter {
	return &auditWriter{ResponseWriter: w, sniff: pattern == patternLogin || pattern == patternIntrospect || pattern == patternAuthorize}
}

func (w *auditWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
		w.keep = (code >= 400 || w.sniff) && strings.HasPrefix(w.Header().Get("Content-Type"), "application/json")
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *auditWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	if w.keep && len(w.body)+len(b) <= auditSniffLimit {
		w.body = append(w.body, b...)
	} else {
		w.keep = false
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (w *auditWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// auditBody is what the hook reads of an answer: ids, names and outcomes.
// Secret members (token, client_secret, access_token) have no field here,
// so they are never decoded.
type auditBody struct {
	Error        string `json:"error"`
	ID           string `json:"id"`
	UserID       string `json:"user_id"`
	CredentialID string `json:"credential_id"`
	SessionID    string `json:"session_id"`
	Username     string `json:"username"`
	User         string `json:"user"`
	Project      string `json:"project"`
	Active       *bool  `json:"active"`
	Allowed      *bool  `json:"allowed"`
}

// auditAfter records r once its handler has answered, or has panicked
// (p, which it passes on once recorded as a failure).
func (s *Server) auditAfter(w *auditWriter, r *http.Request, pattern string, p any) {
	if p == nil {
		s.audit(w, r, pattern)
		return
	}
	if w.status < 500 {
		w.status, w.body = http.StatusInternalServerError, nil
	}
	s.audit(w, r, pattern)
	panic(p)
}

// audit records the request r (routed to pattern) once its handler has
// answered through w.
func (s *Server) audit(w *auditWriter, r *http.Request, pattern string) {
	status := w.status
	if status == 0 {
		status = http.StatusOK
	}
	if !auditable(r.Method, pattern, status) {
		return
	}
	route, ok := auditRoutes[pattern]
	if !ok {
		route = auditRoute{action: pattern, id: "id"}
	}
	e := audit.Event{Action: route.action, Status: status, Target: map[string]string{}}
	p := daemon.PrincipalFrom(r.Context())
	e.Principal = auditPrincipal(p)
	var body auditBody
	if len(w.body) > 0 {
		_ = json.Unmarshal(w.body, &body)
		clear(w.body)
	} else if w.noted != nil {
		body = *w.noted
	}
	e.Code = safeValue(body.Error)

	values := pathValues(r, pattern)
	for _, name := range wildcards(pattern) {
		key := wildcardKeys[name]
		if name == "id" {
			key = route.id
		}
		if v := values(name); v != "" && key != "" {
			e.Target[key] = safeValue(v)
		}
	}
	if loc := w.Header().Get("Location"); loc != "" {
		for _, lk := range locationKeys {
			if rest, ok := strings.CutPrefix(loc, lk.prefix); ok {
				id, binding, _ := strings.Cut(rest, "/bindings/")
				e.Target[lk.key] = safeValue(id)
				if binding != "" {
					e.Target["binding"] = safeValue(binding)
				}
				break
			}
		}
	}
	if v := w.Header().Get("X-Coffer-Secret-Version"); v != "" && status < 300 {
		e.Target["version"] = safeValue(v)
	}
	if v := w.Header().Get("X-Coffer-Secret-Id"); v != "" && status < 300 {
		e.Target["secret"] = safeValue(v)
	}
	if v := w.Header().Get(headerSealedID); v != "" {
		e.Target["sealed"] = safeValue(v)
	}

	denied := refusal(status)
	switch pattern {
	case patternDeliver:
		if k := r.URL.Query().Get("key"); k != "" {
			e.Target["key"] = safeValue(k)
		}
		denied = denied || status == http.StatusNotFound // refusals do not say why
	case patternLogin:
		if e.Principal.TokenID == "" {
			e.Principal.TokenID = publicTokenID(bearerOf(r))
		}
		setIf(e.Target, "session", body.ID)
		setIf(e.Target, "user", body.UserID)
		setIf(e.Target, "credential", body.CredentialID)
	case patternToken:
		id := r.PostForm.Get("client_id")
		if u, _, ok := r.BasicAuth(); ok {
			id = u
		}
		if isTokenID(id) {
			e.Target["client_id"] = id
		}
		denied = denied || e.Code == daemon.CodeInvalidClient
	case patternIntrospect:
		if id := publicTokenID(r.PostForm.Get("token")); id != "" {
			e.Target["token_id"] = id
		}
		setIf(e.Target, "session", body.SessionID)
		setIf(e.Target, "credential", body.CredentialID)
		setIf(e.Target, "user", body.Username)
		if body.Active != nil {
			e.Target["active"] = strconv.FormatBool(*body.Active)
			denied = denied || !*body.Active
		}
	case patternAuthorize:
		setIf(e.Target, "user", body.User)
		setIf(e.Target, "project", body.Project)
		if body.Allowed != nil {
			e.Target["allowed"] = strconv.FormatBool(*body.Allowed)
			denied = denied || !*body.Allowed
		}
	}
	if p.Token == nil && e.Principal.TokenID == "" && pattern != patternLogin {
		// A bearer token that did not authenticate.
		e.Principal.TokenID = publicTokenID(bearerOf(r))
	}
	switch {
	case denied:
		e.Outcome = audit.OutcomeDenied
	case status < 400:
		e.Outcome = audit.OutcomeOK
	default:
		e.Outcome = audit.OutcomeFailed
	}
	if e.Code == "" && status >= 400 {
		e.Code = "http_" + strconv.Itoa(status)
	}
	if len(e.Target) == 0 {
		e.Target = nil
	}
	s.auditor.Record(e)
}

// auditPrincipal is the audit form of a principal.
func auditPrincipal(p daemon.Principal) *audit.Principal {
	out := &audit.Principal{Channel: string(p.Channel), VM: p.VM}
	if out.Channel == "" {
		out.Channel = "none"
	}
	if p.HasCred {
		uid, gid := p.UID, p.GID
		out.UID, out.GID, out.PID = &uid, &gid, p.PID
	}
	if p.Channel == daemon.ChannelVsock {
		cid := p.CID
		out.CID = &cid
	}
	if t := p.Token; t != nil {
		out.TokenKind, out.Session, out.Credential, out.User, out.Project = t.Kind, t.SessionID, t.CredentialID, t.UserID, t.ProjectID
	}
	return out
}

// wildcards lists the wildcard names of a route pattern.
func wildcards(pattern string) []string {
	var out []string
	for {
		i := strings.IndexByte(pattern, '{')
		if i < 0 {
			return out
		}
		j := strings.IndexByte(pattern[i:], '}')
		if j < 0 {
			return out
		}
		out = append(out, strings.TrimSuffix(pattern[i+1:i+j], "..."))
		pattern = pattern[i+j+1:]
	}
}

// pathValues returns the path values of r: the mux's, or, when a request
// was refused before it was routed (a bad bearer token), matched here.
func pathValues(r *http.Request, pattern string) func(string) string {
	if r.Pattern != "" {
		return r.PathValue
	}
	_, pat, _ := strings.Cut(pattern, " ")
	segs := strings.Split(strings.Trim(pat, "/"), "/")
	got := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	return func(name string) string {
		for i, s := range segs {
			if s == "{"+name+"}" && i < len(got) {
				return got[i]
			}
		}
		return ""
	}
}

func bearerOf(r *http.Request) string {
	t, _ := bearerToken(r)
	return strings.TrimSpace(t)
}

// publicTokenID is the public part of a coffer token ("cfa_<id>"), or ""
// for anything else (a JWT, garbage): never the token itself.
func publicTokenID(token string) string {
	if token == "" {
		return ""
	}
	p, err := daemon.ParseToken(token)
	if err != nil {
		return ""
	}
	return p.Prefix + "_" + p.ID
}

// isTokenID says whether s has the form of a public token id (an OAuth2
// client id): 22 base62 characters.
func isTokenID(s string) bool {
	if len(s) != tokenIDLen {
		return false
	}
	for i := range len(s) {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// safeValue bounds a value taken from a request and withholds anything
// that looks like a token, should one be pasted where an id belongs.
func safeValue(v string) string {
	if daemon.LooksLikeJWT(v) || looksLikeToken(v) {
		return "[withheld]"
	}
	if len(v) > maxAuditValue {
		v = v[:maxAuditValue] + "..."
	}
	return v
}

// looksLikeToken: a coffer token prefix and more than an id's worth after
// it (a token with a typo fails its checksum but is still mostly secret).
func looksLikeToken(v string) bool {
	if len(v) <= 4+tokenIDLen || v[3] != '_' {
		return false
	}
	switch v[:3] {
	case daemon.PrefixAuthToken, daemon.PrefixOAuth2, daemon.PrefixAccessToken, daemon.PrefixSession:
		return true
	}
	return false
}

// tokenIDLen is the length of a public token id.
const tokenIDLen = 22

func setIf(m map[string]string, k, v string) {
	if v != "" {
		m[k] = safeValue(v)
	}
}
