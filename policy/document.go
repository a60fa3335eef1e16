// Package policy holds coffer's policies: documents of rules, each an
// allow or deny effect with a CEL condition over the request, its subject
// and its peer; their compilation (type-checked, cost-bounded) and the
// decision they make together. It knows nothing of the store or of HTTP:
// the daemon keeps policies, attaches them and gathers the ones that apply
// to a request.
package policy

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
	Allow = "allow"
	Deny  = "deny"
)

// Bounds of a document.
const (
	MaxRules          = 32
	MaxConditionBytes = 2048
	MaxDescription    = 512
	MaxDocumentBytes  = 64 << 10
)

// Rule is one rule of a policy: when Condition holds, Effect applies.
type Rule struct {
	Effect    string `json:"effect" yaml:"effect"`
	Condition string `json:"condition" yaml:"condition"`
}

// Document is a policy as written: a description and its rules.
type Document struct {
	Description string `json:"description,omitempty" yaml:"description,omitempty"`
	Rules       []Rule `json:"rules" yaml:"rules"`
}

// ErrInvalid is the class of every error about a document or a condition.
var ErrInvalid = errors.New("invalid policy")

// Error says what is wrong with a document: which rule (1-based; 0 for
// the document itself) and, for a condition, where in it (1-based line
// and column; 0 when not known).
type Error struct {
	Rule   int
	Line   int
	Column int
	Reason string
}

func (e *Error) Error() string {
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

func (e *Error) Unwrap() error { return ErrInvalid }

func invalid(rule int, format string, args ...any) error {
	return &Error{Rule: rule, Reason: fmt.Sprintf(format, args...)}
}

// ParseDocument reads a document written as JSON or YAML (JSON is YAML;
// a document starting with '{' is read strictly as JSON). Unknown fields
// are errors, and so is anything Check refuses.
func ParseDocument(data []byte) (Document, error) {
	var d Document
	if len(data) > MaxDocumentBytes {
		return d, invalid(0, "the document is larger than %d bytes", MaxDocumentBytes)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 {
		return d, invalid(0, "the document is empty")
	}
	if trimmed[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(trimmed))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&d); err != nil {
			return Document{}, invalid(0, "not a JSON policy document: %s", jsonProblem(err))
		}
		if dec.More() {
			return Document{}, invalid(0, "not a JSON policy document: data after the object")
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(trimmed))
		dec.KnownFields(true)
		if err := dec.Decode(&d); err != nil {
			return Document{}, invalid(0, "not a YAML policy document: %s", yamlProblem(err))
		}
	}
	return d, d.Check()
}

// Check validates a document's shape (not its conditions: Compile does).
func (d Document) Check() error {
	if len(d.Description) > MaxDescription || !utf8.ValidString(d.Description) {
		return invalid(0, "description must be valid UTF-8 of at most %d bytes", MaxDescription)
	}
	if len(d.Rules) == 0 {
		return invalid(0, "a policy needs at least one rule")
	}
	if len(d.Rules) > MaxRules {
		return invalid(0, "at most %d rules", MaxRules)
	}
	for i, r := range d.Rules {
		if r.Effect != Allow && r.Effect != Deny {
			return invalid(i+1, "effect must be %q or %q", Allow, Deny)
		}
		if strings.TrimSpace(r.Condition) == "" {
			return invalid(i+1, "condition is empty (write true for a rule that always applies)")
		}
		if len(r.Condition) > MaxConditionBytes || !utf8.ValidString(r.Condition) {
			return invalid(i+1, "condition must be valid UTF-8 of at most %d bytes", MaxConditionBytes)
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
