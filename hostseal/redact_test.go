package hostseal

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestContentsAreRedactedWhenPrinted(t *testing.T) {
	const payload, value = "LEAK-offline-payload-42", "LEAK-kv-value-43"
	c := Contents{Payload: []byte(payload), KeyValues: map[string]string{"k": value}}
	forms := []string{payload, value, fmt.Sprintf("%x", payload), base64.StdEncoding.EncodeToString([]byte(payload)), fmt.Sprint([]byte(payload))[1:20]}
	for _, v := range []any{c, &c} {
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
					t.Errorf("%T %s shows the contents: %s", v, how, s)
				}
			}
		}
	}
}
