// The policy document: the form in which a policy is written and sent
// (POST /v1/policies, inline policies of a credential). package policy
// compiles and decides; this is only its shape and bounds.

package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Effects of a rule.
const (
	PolicyAllow = "allow"
	PolicyDeny  = "deny"
)

// Bounds of a document.
const (
	MaxPolicyRules          = 32
	MaxPolicyConditionBytes = 2048
	MaxPolicyDescription    = 512
	MaxPolicyDocumentBytes  = 64 << 10
)

// PolicyRule is one rule of a policy: when Condition holds, Effect applies.
type PolicyRule struct {
	Effect    string `json:"effect" yaml:"effect"`
	Condition string `json:"condition" yaml:"condition"`
}

// PolicyDocument is a policy as written: a description and its rules.
type PolicyDocument struct {
	Description string       `json:"description,omitempty" yaml:"description,omitempty"`
	Rules       []PolicyRule `json:"rules" yaml:"rules"`
}

// ErrInvalidPolicy is the class of every error about a document or a condition.
var ErrInvalidPolicy = errors.New("invalid policy")

// PolicyError says what is wrong with a document: which rule (1-based; 0 for
// the document itself) and, for a condition, where in it (1-based line
// and column; 0 when not known).
type PolicyError struct {
	Rule   int
	Line   int
	Column int
	Reason string
}

func (e *PolicyError) Error() string {
	var b strings.Builder
	if e.Rule > 0 {
		fmt.Fprintf(&b, "rule %d", e.Rule)
		if e.Line > 0 {
			fmt.Fprintf(&b, ", line %d column %d", e.Line, e.Column)
		}
		b.WriteString(": ")
	}
	b.WriteString(e.Reason)
	return b.String()
}

func (e *PolicyError) Unwrap() error { return ErrInvalidPolicy }

func invalidPolicy(rule int, format string, args ...any) error {
	return &PolicyError{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// ParsePolicyDocument reads a document written as JSON or YAML (JSON is YAML;
// a document starting with '{' is read strictly as JSON). Unknown fields
// are errors, and so is anything Check refuses.
func ParsePolicyDocument(data []byte) (PolicyDocument, error) {
	var d PolicyDocument
	if len(data) > MaxPolicyDocumentBytes {
		return d, invalidPolicy(0, "the document is larger than %d bytes", MaxPolicyDocumentBytes)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return d, invalidPolicy(0, "the document is empty")
	}
	if trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return PolicyDocument{}, invalidPolicy(0, "not a JSON policy document: %s", jsonProblem(err))
		}
		if dec.More() {
			return PolicyDocument{}, invalidPolicy(0, "not a JSON policy document: data after the object")
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(trimmed))
		dec.KnownFields(true)
		if err := dec.Decode(&d); err != nil {
			return PolicyDocument{}, invalidPolicy(0, "not a YAML policy document: %s", yamlProblem(err))
		}
	}
	return d, d.Check()
}

// Check validates a document's shape (not its conditions: Compile does).
func (d PolicyDocument) Check() error {
	if len(d.Description) > MaxPolicyDescription || !utf8.ValidString(d.Description) {
		return invalidPolicy(0, "description must be valid UTF-8 of at most %d bytes", MaxPolicyDescription)
	}
	if len(d.Rules) == 0 {
		return invalidPolicy(0, "a policy needs at least one rule")
	}
	if len(d.Rules) > MaxPolicyRules {
		return invalidPolicy(0, "at most %d rules", MaxPolicyRules)
	}
	for i, r := range d.Rules {
		if r.Effect != PolicyAllow && r.Effect != PolicyDeny {
			return invalidPolicy(i+1, "effect must be %q or %q", PolicyAllow, PolicyDeny)
		}
		if strings.TrimSpace(r.Condition) == "" {
			return invalidPolicy(i+1, "condition is empty (write true for a rule that always applies)")
		}
		if len(r.Condition) > MaxPolicyConditionBytes || !utf8.ValidString(r.Condition) {
			return invalidPolicy(i+1, "condition must be valid UTF-8 of at most %d bytes", MaxPolicyConditionBytes)
		}
	}
	return nil
}

// jsonProblem describes a JSON error without quoting the input.
func jsonProblem(err error) string {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("syntax error at byte %d", se.Offset)
	case errors.As(err, &te):
		if te.Field != "" {
			return "field " + te.Field + " must be " + te.Type.String()
		}
		return "the document must be an object"
	}
	msg := err.Error()
	if strings.HasPrefix(msg, "json: unknown field ") {
		return strings.TrimPrefix(msg, "json: ")
	}
	return "malformed JSON"
}

// yamlProblem is the YAML decoder's message: it names lines and fields,
// never values beyond the offending token's kind.
func yamlProblem(err error) string {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	if len(msg) > 200 {
		msg = msg[:200] + "..."
	}
	return msg
}
