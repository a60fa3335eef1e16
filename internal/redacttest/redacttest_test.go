package redacttest

import "testing"

// A type that does not redact is caught in every form it can take.
func TestLeaksFindsAnUnredactedSecret(t *testing.T) {
	type plain struct {
		Token []byte
		Name  string
	}
	const secret = "LEAK-secret-0123456789"
	for _, v := range []any{plain{Name: secret}, plain{Token: []byte(secret)}} {
		outs := Printed(v)
		found := Leaks(outs, []string{secret})
		if len(found) == 0 {
			t.Fatalf("%+v: no leak found", v)
		}
	}
	if found := Leaks(Printed(plain{Name: "harmless"}), []string{secret}); len(found) != 0 {
		t.Fatalf("false leak: %v", found)
	}
}
