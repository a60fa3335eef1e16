package api

import "time"

// Self is the answer of GET /v1/whoami: who the daemon takes the caller
// to be.
type Self struct {
	Channel       string     `json:"channel"`
	UID           *uint32    `json:"uid,omitempty"`
	GID           *uint32    `json:"gid,omitempty"`
	PID           int32      `json:"pid,omitempty"`
	CID           *uint32    `json:"cid,omitempty"`
	VM            string     `json:"vm,omitempty"`
	SystemAdmin   bool       `json:"system_admin"`
	MetricsReader bool       `json:"metrics_reader"`
	User          *User      `json:"user,omitempty"`
	Token         *SelfToken `json:"token,omitempty"`
}

// SelfToken is the bearer token a whoami request carried.
type SelfToken struct {
	Kind           string     `json:"kind"`
	SessionID      string     `json:"session_id,omitempty"`
	CredentialID   string     `json:"credential_id,omitempty"`
	CredentialName string     `json:"credential_name,omitempty"`
	ProjectID      string     `json:"project_id"`
	Project        string     `json:"project,omitempty"`
	Roles          []string   `json:"roles"`
	Unrestricted   bool       `json:"unrestricted"`
	AccessRules    bool       `json:"access_rules"`
	ExpiresAt      *time.Time `json:"expires_at,omitempty"`
}
