package daemon

import (
	"regexp"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

var nameRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)

// validName reports whether s is a valid resource name (DESIGN §4).
func validName(s string) bool { return nameRE.MatchString(s) }

func checkName(kind, s string) error {
	if !validName(s) {
		return Invalid(CodeInvalidName, "invalid %s name %q: use 1-64 of a-z 0-9 . _ - starting and ending with a letter or digit", kind, s)
	}
	return nil
}

// validID reports whether s is a canonical UUID string.
func validID(s string) bool {
	if len(s) != 36 {
		return false
	}
	_, err := uuid.Parse(s)
	return err == nil
}

// newID returns a UUIDv7: time-ordered, so key order is creation order.
func newID() string { return uuid.Must(uuid.NewV7()).String() }

const maxDisplayName = 256

func checkDisplayName(s string) error {
	switch {
	case strings.TrimSpace(s) == "":
		return Invalid(CodeInvalidDisplayName, "display_name must not be empty or only whitespace")
	case !utf8.ValidString(s):
		return Invalid(CodeInvalidDisplayName, "display_name must be valid UTF-8")
	case utf8.RuneCountInString(s) > maxDisplayName:
		return Invalid(CodeInvalidDisplayName, "display_name is longer than %d characters", maxDisplayName)
	case strings.ContainsFunc(s, unicode.IsControl):
		return Invalid(CodeInvalidDisplayName, "display_name must not contain control characters")
	}
	return nil
}
