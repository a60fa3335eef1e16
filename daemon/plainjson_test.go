package daemon

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"maps"
	"testing"
)

// FuzzEncodePlain: whatever the payload and key_values, the framing
// decodes back to them (key_values as encoding/json would carry them:
// invalid UTF-8 becomes U+FFFD), and the buffer was never outgrown, so
// the caller's clear reaches the only copy.
func FuzzEncodePlain(f *testing.F) {
	f.Add([]byte("payload"), "user", "admin", "password", "hunter2")
	f.Add([]byte{}, "", "", "k", "")
	f.Add([]byte{0}, "q\"uote", "back\\slash", "ctl\x00\x1f\n", "\xff\xfe<&>\u2028")
	f.Add([]byte("\xff"), "é", "日本", "k", "\U0001F600")
	f.Fuzz(func(t *testing.T, payload []byte, k1, v1, k2, v2 string) {
		kvs := map[string]string{k1: v1, k2: v2}
		want := map[string]string{}
		b, _ := json.Marshal(kvs)
		if err := json.Unmarshal(b, &want); err != nil {
			t.Fatal(err)
		}
		out, err := encodePlain(payload, kvs)
		if err != nil {
			t.Fatal(err)
		}
		if max := binary.MaxVarintLen64 + len(payload) + keyValuesJSONMaxLen(kvs); cap(out) != max {
			t.Fatalf("the buffer was reallocated: cap %d, sized %d", cap(out), max)
		}
		p, got, err := decodePlain(out)
		if err != nil || !bytes.Equal(p, payload) || !maps.Equal(got, want) {
			t.Fatalf("encodePlain(%q, %q) decodes to %q %q (%v)", payload, kvs, p, got, err)
		}
	})
}
