// Package api is coffer's HTTP API version 1 (the /v1 routes) as Go
// types: the JSON bodies of requests and answers, the policy document, and
// the error body. The daemon's server (package unixapi) and the Go client
// (package client) both use these types, so the two cannot drift apart.
//
// It imports the standard library and gopkg.in/yaml.v3 only: no cgo,
// nothing of the daemon. Within v1 the types change only by addition: a
// new field is optional (omitempty, or a zero value that means what its
// absence meant), and nothing is renamed or removed.
package api

import "time"

// Version is the API version these types are: the prefix of the routes.
const Version = "v1"

// BodyLimit is the largest request body accepted (DESIGN §4).
const BodyLimit = 8 << 10

// ErrorBody is every error response.
type ErrorBody struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// List is one page of a list; Next, when set, is the after= of the next page.
type List[T any] struct {
	Items []T    `json:"items"`
	Next  string `json:"next,omitempty"`
}

// Status is GET /v1/status.
type Status struct {
	Version       string      `json:"version"`
	StartedAt     time.Time   `json:"started_at"`
	UptimeSeconds int64       `json:"uptime_seconds"`
	Dev           bool        `json:"dev"`
	HSM           HSMStatus   `json:"hsm"`
	Store         StoreStatus `json:"store"`
	Counts        Counts      `json:"counts,omitzero"` // for system admins and metrics readers only
}

// HSMStatus is the HSM part of Status.
type HSMStatus struct {
	Module     string   `json:"module"`
	TokenLabel string   `json:"token_label"`
	KeyLabels  []string `json:"key_labels"`
	Healthy    bool     `json:"healthy"`
	Error      string   `json:"error,omitempty"`
	// Token describes the token; shown to system admins only.
	Token   *HSMToken  `json:"token,omitempty"`
	Schemes HSMSchemes `json:"schemes"`
}

// HSMToken is what the token says about itself (CK_TOKEN_INFO).
type HSMToken struct {
	Label        string `json:"label"`
	Manufacturer string `json:"manufacturer"`
	Model        string `json:"model"`
	Serial       string `json:"serial"`
	Library      string `json:"library"` // the PKCS#11 module's manufacturer, description and version
}

// HSMSchemes are the key schemes coffer chose for the token's mechanisms:
// kek "aes-256-gcm" or "rsa-3072-oaep-sha256", signing "ES256" or "PS256".
type HSMSchemes struct {
	KEK           string `json:"kek"`
	KEKReason     string `json:"kek_reason"`
	Signing       string `json:"signing"`
	SigningReason string `json:"signing_reason"`
}

// StoreStatus is the store part of Status. State is "ok", "full" (its
// filesystem is short of room: state changes are refused), "failed" (a
// write failed: state changes are refused) or "lost"; Since is when it
// left "ok". ReserveBytes is the room the store keeps free on its
// filesystem: below it, state changes are refused.
type StoreStatus struct {
	Healthy      bool       `json:"healthy"`
	Error        string     `json:"error,omitempty"`
	State        string     `json:"state"`
	Since        *time.Time `json:"since,omitempty"`
	ReserveBytes int64      `json:"reserve_bytes"`
}

// Counts is the counts part of Status.
type Counts struct {
	Projects    int `json:"projects"`
	Secrets     int `json:"secrets"`
	Users       int `json:"users"`
	Credentials int `json:"credentials"`
}

// Project is a project.
type Project struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	Policies  []string  `json:"policies"` // attached to every request in it
	CreatedAt time.Time `json:"created_at"`
}

// ProjectCreateRequest is POST /v1/projects.
type ProjectCreateRequest struct {
	Name string `json:"name"`
}

// Secret is the metadata of a brokered secret. It never carries the payload
// or key_values.
type Secret struct {
	ID          string     `json:"id"`
	Project     string     `json:"project"`
	ProjectID   string     `json:"project_id"`
	DisplayName string     `json:"display_name"`
	Version     int        `json:"version"`
	Status      string     `json:"status"`
	CreatedAt   time.Time  `json:"created_at"`
	UpdatedAt   time.Time  `json:"updated_at"`
	RotatedAt   *time.Time `json:"rotated_at,omitempty"`
	RevokedAt   *time.Time `json:"revoked_at,omitempty"`
	ExpiresAt   *time.Time `json:"expires_at,omitempty"`
	// UnitActions: in a rotation's answer only, what the on-rotate
	// actions of the secret's unit bindings came to.
	UnitActions []UnitAction `json:"unit_actions,omitempty"`
}

// UnitAction is one unit binding's on-rotate action: Result is
// "restarted", "reloaded", "try-restarted" or "failed" (then Error says
// why). The rotation stands whatever it is.
type UnitAction struct {
	Unit    string `json:"unit"`
	Binding string `json:"binding"`
	Action  string `json:"action"`
	Result  string `json:"result"`
	Error   string `json:"error,omitempty"`
}

// SecretCreateRequest is POST /v1/projects/{p}/secrets. Payload is standard
// base64; ExpiresAt is RFC 3339.
type SecretCreateRequest struct {
	DisplayName string            `json:"display_name"`
	Payload     string            `json:"payload" redact:"true"`
	KeyValues   map[string]string `json:"key_values,omitempty" redact:"true"`
	ExpiresAt   string            `json:"expires_at,omitempty"`
}

// SecretRotateRequest is POST /v1/secrets/{id}/rotate. KeyValues absent or
// null keeps the current ones; {} clears them. CAS is the version the caller
// expects to replace.
type SecretRotateRequest struct {
	Payload   string            `json:"payload" redact:"true"`
	KeyValues map[string]string `json:"key_values" redact:"true"`
	ExpiresAt string            `json:"expires_at,omitempty"`
	CAS       *int              `json:"cas,omitempty"`
}

// Health is the answer of GET /v1/health.
type Health struct {
	Status string   `json:"status"`           // HealthOK or HealthUnhealthy
	Failed []string `json:"failed,omitempty"` // the parts that do not answer: hsm, store, audit
}

// Health statuses.
const (
	HealthOK        = "ok"
	HealthUnhealthy = "unhealthy"
)
