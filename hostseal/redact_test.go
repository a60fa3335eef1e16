package hostseal

import (
	"testing"

	"github.com/coffer-hsm/coffer/internal/redacttest"
)

func TestContentsAreRedactedWhenPrinted(t *testing.T) {
	const payload, value = "LEAK-offline-payload-42", "LEAK-kv-value-43"
	c := Contents{Payload: []byte(payload), KeyValues: map[string]string{"k": value}}
	for _, v := range []any{c, &c} {
		for _, l := range redacttest.Leaks(redacttest.Printed(v), []string{payload, value}) {
			t.Errorf("%T: %s", v, l)
		}
	}
}
