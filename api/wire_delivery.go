package api

import "time"

// Binding says who may receive a secret's payload.
type Binding struct {
	ID         string `json:"id"`
	SecretID   string `json:"secret_id"`
	Kind       string `json:"kind"`
	Unit       string `json:"unit,omitempty"`
	Credential string `json:"credential,omitempty"`
	User       string `json:"user,omitempty"`
	UserID     string `json:"user_id,omitempty"`
	Name       string `json:"name,omitempty"`
	// OnRotate (unit bindings): try-restart, restart, reload or none.
	OnRotate  string    `json:"on_rotate,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// BindingCreateRequest is POST /v1/secrets/{id}/bindings: {unit,
// credential} or {user, name}.
type BindingCreateRequest struct {
	Unit       string `json:"unit,omitempty"`
	Credential string `json:"credential,omitempty"`
	User       string `json:"user,omitempty"`
	Name       string `json:"name,omitempty"`
	// OnRotate, for a unit: try-restart (the default), restart, reload or
	// none.
	OnRotate string `json:"on_rotate,omitempty"`
}
