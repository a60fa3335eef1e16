package unixapi

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

// printedEverywhere renders v with fmt's verbs and through slog's text and
// JSON handlers (as an attribute, a bare argument, in a group and With).
func printedEverywhere(v any) map[string]string {
	out := map[string]string{}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%20v"} {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	for name, h := range map[string]func(*bytes.Buffer) slog.Handler{
		"text": func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) },
		"json": func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) },
	} {
		var b bytes.Buffer
		log := slog.New(h(&b))
		log.Info("attr", "v", v)
		log.Info("bare", v)
		log.Info("group", slog.Group("g", "v", v))
		log.With("w", v).Info("with")
		out["slog "+name] = b.String()
	}
	return out
}

func TestWireSecretsAreRedactedWhenPrinted(t *testing.T) {
	const (
		token   = "cft_LEAKtoken0123456789abcdefghijklmnopqrstuvwxyz"
		secret  = "cfo_LEAKclientsecret0123456789"
		payload = "LEAKpayload-hunter2-correct-horse"
		value   = "LEAKkeyvalue-battery-staple"
	)
	b64 := base64.StdEncoding.EncodeToString([]byte(payload))
	secrets := []string{token, secret, payload, value, b64, fmt.Sprintf("%x", payload), fmt.Sprint([]byte(payload))[1:20]}
	cas := 2
	for _, tt := range []struct {
		name  string
		v     any
		shown []string
	}{
		{"Credential", Credential{ID: "cred-1", Name: "ci", Token: token, ClientID: "cfo_id", ClientSecret: secret}, []string{"cred-1", "cfo_id"}},
		{"*Credential", &Credential{ID: "cred-1", Token: token}, []string{"cred-1"}},
		{"Session", Session{ID: "sess-1", Token: token, Roles: []string{"member"}}, []string{"sess-1", "member"}},
		{"TokenResponse", TokenResponse{AccessToken: token, TokenType: "Bearer", ExpiresIn: 300}, []string{"Bearer"}},
		{"AuthorizeRequest", AuthorizeRequest{Token: token, Service: "svc", Method: "GET", Path: "/x"}, []string{"svc", "/x"}},
		{"SecretCreateRequest", SecretCreateRequest{DisplayName: "db", Payload: b64, KeyValues: map[string]string{"pw": value}}, []string{"db"}},
		{"SecretRotateRequest", SecretRotateRequest{Payload: b64, KeyValues: map[string]string{"pw": value}, CAS: &cas}, []string{"[redacted]"}},
		{"SecretCreate", SecretCreate{DisplayName: "db", Payload: []byte(payload), KeyValues: map[string]string{"pw": value}}, []string{"db"}},
		{"SecretRotate", SecretRotate{Payload: []byte(payload), KeyValues: map[string]string{"pw": value}}, []string{"[redacted]"}},
		{"*Client", NewClient("/run/coffer/coffer.sock").WithToken(token), []string{"/run/coffer/coffer.sock"}},
		{"Client", *NewClient("/run/coffer/coffer.sock").WithToken(token), []string{"/run/coffer/coffer.sock"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for how, s := range printedEverywhere(tt.v) {
				for _, sec := range secrets {
					if strings.Contains(s, sec) {
						t.Errorf("%s shows %.12q...: %.300s", how, sec, s)
					}
				}
				for _, want := range tt.shown {
					if how != "%x" && how != "%X" && how != "%q" && !strings.Contains(s, want) {
						t.Errorf("%s lost %q: %s", how, want, s)
					}
				}
			}
		})
	}
	// The wire is untouched: JSON still carries what it must.
	b, err := json.Marshal(Credential{Token: token})
	if err != nil || !strings.Contains(string(b), `"token":"`+token+`"`) {
		t.Fatalf("JSON = %s, %v", b, err)
	}
}
