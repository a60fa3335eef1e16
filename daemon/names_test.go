package daemon

import (
	"regexp"
	"strings"
	"testing"
)

// The validators replaced these expressions; they must agree with them.
var (
	nameSpec    = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)
	keySpec     = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)
	credNameSpc = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,254}$`)
)

func checkAgainstSpec(t *testing.T, s string) {
	t.Helper()
	if got, want := validName(s), nameSpec.MatchString(s); got != want {
		t.Errorf("validName(%q) = %v, the expression says %v", s, got, want)
	}
	if got, want := validKeyName(s, maxKeyName), keySpec.MatchString(s); got != want {
		t.Errorf("validKeyName(%q, 128) = %v, the expression says %v", s, got, want)
	}
	if got, want := ValidCredentialName(s), credNameSpc.MatchString(s); got != want {
		t.Errorf("ValidCredentialName(%q) = %v, the expression says %v", s, got, want)
	}
}

func TestValidatorsMatchTheirExpressions(t *testing.T) {
	cases := []string{
		"", "a", "A", "0", "-", ".", "_", "a-", "-a", "a.b", "a_b", "a-b", "aB", "Ab", "a b", "a\n", "é",
		"db.password", "x..y", "a@b", strings.Repeat("a", 63), strings.Repeat("a", 64), strings.Repeat("a", 65),
		strings.Repeat("k", 128), strings.Repeat("k", 129), strings.Repeat("c", 255), strings.Repeat("c", 256),
		"a" + strings.Repeat("-", 62) + "b", "a" + strings.Repeat("-", 63) + "b",
	}
	for _, s := range cases {
		checkAgainstSpec(t, s)
	}
}

func FuzzValidators(f *testing.F) {
	for _, s := range []string{"a", "db.password", "A-b_c.d", "-x", strings.Repeat("z", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkAgainstSpec(t, s) })
}
