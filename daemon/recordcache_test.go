package daemon

import (
	"fmt"
	"strings"
	"testing"
)

// TestRecordCache: a decoding is what json.Unmarshal gives for exactly
// those bytes; changed bytes decode afresh; big records and a full cache
// do not grow it past its bounds; bad JSON is an error and is not kept.
func TestRecordCache(t *testing.T) {
	var c recordCache[bindingRecord]
	rec := func(secret string) []byte {
		return fmt.Appendf(nil, `{"id":"b1","secret_id":%q,"project_id":"p1","kind":"user","user_id":"u1","name":"db","created_at":"2026-01-02T03:04:05Z"}`, secret)
	}
	tests := []struct {
		name, data string
		want       string // SecretID; "" = an error
	}{
		{"first", string(rec("s1")), "s1"},
		{"same bytes", string(rec("s1")), "s1"},
		{"changed bytes", string(rec("s2")), "s2"},
		{"back", string(rec("s1")), "s1"},
		{"bad json", `{"id":`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var b bindingRecord
			err := c.decode([]byte(tt.data), &b)
			if tt.want == "" {
				if err == nil {
					t.Fatal("bad JSON decoded")
				}
				return
			}
			if err != nil || b.SecretID != tt.want || b.ID != "b1" || b.CreatedAt.Year() != 2026 {
				t.Fatalf("decode = %+v, %v; want secret %s", b, err, tt.want)
			}
		})
	}
	if len(c.m) != 2 {
		t.Fatalf("cache holds %d records, want 2", len(c.m))
	}

	// The buffer the store hands over is reused after the call: the cache
	// must have its own copy of the key.
	buf := rec("s3")
	var b bindingRecord
	if err := c.decode(buf, &b); err != nil {
		t.Fatal(err)
	}
	copy(buf, strings.Repeat("x", len(buf)))
	if err := c.decode(rec("s3"), &b); err != nil || b.SecretID != "s3" {
		t.Fatalf("after the buffer changed: %+v, %v", b, err)
	}

	big := fmt.Appendf(nil, `{"id":"b1","name":%q}`, strings.Repeat("n", recordCacheMaxSize))
	before := len(c.m)
	if err := c.decode(big, &b); err != nil || len(b.Name) != recordCacheMaxSize {
		t.Fatalf("big record: %v", err)
	}
	if len(c.m) != before {
		t.Fatal("a record over recordCacheMaxSize was kept")
	}

	for i := range 3 * recordCacheEntries {
		if err := c.decode(rec(fmt.Sprint("s", i)), &b); err != nil {
			t.Fatal(err)
		}
		if len(c.m) > recordCacheEntries {
			t.Fatalf("cache grew to %d entries", len(c.m))
		}
	}
}

// TestSealedCopy: a delivery gets its own envelope struct, not the
// cached one.
func TestSealedCopy(t *testing.T) {
	var c recordCache[sealedRecord]
	data := []byte(`{"version":1,"sealed":{"kek":"kek-1","wrap_nonce":"AAAAAAAAAAAAAAAA","wrapped_dek":"AQID","nonce":"AAAAAAAAAAAAAAAA","ciphertext":"BAUG"}}`)
	var a sealedRecord
	if err := c.decode(data, &a); err != nil {
		t.Fatal(err)
	}
	a = sealedCopy(a)
	a.Sealed.KEK = "changed"
	var b sealedRecord
	if err := c.decode(data, &b); err != nil {
		t.Fatal(err)
	}
	if b.Sealed.KEK != "kek-1" {
		t.Fatalf("the cached envelope was changed through a copy: %q", b.Sealed.KEK)
	}
	if z := sealedCopy(sealedRecord{}); z.Sealed != nil {
		t.Fatal("sealedCopy made an envelope from none")
	}
}
