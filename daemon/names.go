package daemon

import (
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/google/uuid"
)

// The validators below are written out rather than regular expressions:
// a counted repetition such as {0,254} compiles to hundreds of regexp
// instructions at every process start, client commands included.

// validName reports whether s is a valid resource name (DESIGN §4):
// ^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$
func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 || !isLowerAlnum(s[0]) || !isLowerAlnum(s[len(s)-1]) {
		return false
	}
	for i := 1; i < len(s)-1; i++ {
		if c := s[i]; !isLowerAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

// validKeyName reports whether s is a key_values key, or a systemd
// credential name when max is 255: ^[A-Za-z0-9][A-Za-z0-9._-]{0,max-1}$
func validKeyName(s string, max int) bool {
	if len(s) == 0 || len(s) > max || !isAlnum(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }

// ValidName reports whether s is a valid resource name (DESIGN §4), for
// callers outside the daemon that apply the same rule (VM names).
func ValidName(s string) bool { return validName(s) }

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
