package kv

import (
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestEncryptionKeyIsRedactedWhenPrinted(t *testing.T) {
	key := []byte("LEAK-store-key-0123456789abcdef!") // 32 bytes
	st, err := Open(context.Background(), Options{Dir: t.TempDir(), EncryptionKey: key})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	forms := []string{string(key), fmt.Sprintf("%x", key), base64.StdEncoding.EncodeToString(key), fmt.Sprint(key)[1:20]}
	for _, v := range []any{Options{Dir: "/d", EncryptionKey: key}, &Options{EncryptionKey: key}, st} {
		outs := map[string]string{}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%d"} {
			outs[verb] = fmt.Sprintf(verb, v)
		}
		for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
			"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
			"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
		} {
			var b bytes.Buffer
			slog.New(h(&b)).Info("m", "v", v)
			outs["slog "+name] = b.String()
		}
		for how, s := range outs {
			for _, f := range forms {
				if strings.Contains(s, f) {
					t.Errorf("%T %s shows the key: %s", v, how, s)
				}
			}
		}
	}
	if got := fmt.Sprint(Options{Dir: "/d", EncryptionKey: key}); !strings.Contains(got, "EncryptionKey:[redacted 256-bit key]") {
		t.Errorf("Options print as %s", got)
	}
}
