package api

import (
	"time"
)

// Policy is a policy: its rules and what it is attached to.
type Policy struct {
	ID          string       `json:"id"`
	Name        string       `json:"name"`
	Project     string       `json:"project,omitempty"` // absent: a global policy
	ProjectID   string       `json:"project_id,omitempty"`
	Description string       `json:"description,omitempty"`
	Rules       []PolicyRule `json:"rules"`
	UsedBy      *PolicyUse   `json:"used_by,omitempty"` // in reads of one policy
	CreatedAt   time.Time    `json:"created_at"`
	UpdatedAt   time.Time    `json:"updated_at"`
}

// PolicyUse lists (ids, at most 100 of each) what a policy is attached to.
type PolicyUse struct {
	Credentials []string `json:"credentials"`
	Users       []string `json:"users"`
	Projects    []string `json:"projects"`
}

// PolicyRequest is POST /v1/policies and /v1/projects/{p}/policies (with
// name), and PUT of one policy (its name is the path's).
type PolicyRequest struct {
	Name        string       `json:"name,omitempty"`
	Description string       `json:"description,omitempty"`
	Rules       []PolicyRule `json:"rules"`
}

// ProjectPatchRequest is PATCH /v1/projects/{p}: the policies attached to
// every request in the project, replacing those it had.
type ProjectPatchRequest struct {
	Policies *[]string `json:"policies"`
}
