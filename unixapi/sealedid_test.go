package unixapi

import (
	"regexp"
	"strings"
	"testing"
)

// sealedIDSpec is the expression isSealedID replaced; they must agree.
var sealedIDSpec = regexp.MustCompile(`^[0-9a-f]{32}$`)

func checkSealedID(t *testing.T, s string) {
	t.Helper()
	if got, want := isSealedID(s), sealedIDSpec.MatchString(s); got != want {
		t.Errorf("isSealedID(%q) = %v, the expression says %v", s, got, want)
	}
}

func TestIsSealedIDMatchesItsExpression(t *testing.T) {
	hex := "0123456789abcdef0123456789abcdef"
	cases := []string{
		"", hex, hex[:31], hex + "0", strings.ToUpper(hex), hex[:31] + "g", hex[:31] + "\n",
		"/" + hex[1:], ":" + hex[1:], "`" + hex[1:], hex[:31] + "é"[:1], strings.Repeat("f", 32), strings.Repeat("0", 32),
	}
	for _, s := range cases {
		checkSealedID(t, s)
	}
}

func FuzzIsSealedID(f *testing.F) {
	for _, s := range []string{"0123456789abcdef0123456789abcdef", "x", "0123456789ABCDEF0123456789abcdef"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) { checkSealedID(t, s) })
}
