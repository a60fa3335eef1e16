// Package policy holds coffer's policies: documents of rules, each an
// allow or deny effect with a CEL condition over the request, its subject
// and its peer; their compilation (type-checked, cost-bounded) and the
// decision they make together. It knows nothing of the store or of HTTP:
// the daemon keeps policies, attaches them and gathers the ones that apply
// to a request.
//
// A document's shape (its rules, bounds and parsing) is the wire form's,
// package api's: the names below are that form, not copies of it, so that
// a document a client sends is the one compiled here.
package policy

import (
	"fmt"

	"github.com/coffer-hsm/coffer/api"
)

// Effects of a rule.
const (
	Allow = api.PolicyAllow
	Deny  = api.PolicyDeny
)

// Bounds of a document.
const (
	MaxRules          = api.MaxPolicyRules
	MaxConditionBytes = api.MaxPolicyConditionBytes
	MaxDescription    = api.MaxPolicyDescription
	MaxDocumentBytes  = api.MaxPolicyDocumentBytes
)

type (
	// Rule is one rule of a policy: when Condition holds, Effect applies.
	Rule = api.PolicyRule
	// Document is a policy as written: a description and its rules.
	Document = api.PolicyDocument
	// Error says what is wrong with a document: which rule, and where in
	// its condition.
	Error = api.PolicyError
)

// ErrInvalid is the class of every error about a document or a condition.
var ErrInvalid = api.ErrInvalidPolicy

// ParseDocument reads a document written as JSON or YAML; see
// api.ParsePolicyDocument.
func ParseDocument(data []byte) (Document, error) { return api.ParsePolicyDocument(data) }

func invalid(rule int, format string, args ...any) error {
	return &Error{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}
