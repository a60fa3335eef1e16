package kv

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/internal/redacttest"
)

func TestEncryptionKeyIsRedactedWhenPrinted(t *testing.T) {
	key := []byte("LEAK-store-key-0123456789abcdef!") // 32 bytes
	st, err := Open(context.Background(), Options{Dir: t.TempDir(), EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, v := range []any{Options{Dir: "/d", EncryptionKey: key}, &Options{EncryptionKey: key}, st} {
		for _, l := range redacttest.Leaks(redacttest.Printed(v), []string{string(key)}) {
			t.Errorf("%T: %s", v, l)
		}
	}
	if got := fmt.Sprint(Options{Dir: "/d", EncryptionKey: key}); !strings.Contains(got, "EncryptionKey:[redacted 256-bit key]") {
		t.Errorf("Options print as %s", got)
	}
}
