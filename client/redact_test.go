package client_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/internal/redacttest"
)

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
		{"Credential", api.Credential{ID: "cred-1", Name: "ci", Token: token, ClientID: "cfo_id", ClientSecret: secret}, []string{"cred-1", "cfo_id"}},
		{"*Credential", &api.Credential{ID: "cred-1", Token: token}, []string{"cred-1"}},
		{"Session", api.Session{ID: "sess-1", Token: token, Roles: []string{"member"}}, []string{"sess-1", "member"}},
		{"TokenResponse", api.TokenResponse{AccessToken: token, TokenType: "Bearer", ExpiresIn: 300}, []string{"Bearer"}},
		{"AuthorizeRequest", api.AuthorizeRequest{Token: token, Service: "svc", Method: "GET", Path: "/x"}, []string{"svc", "/x"}},
		{"SecretCreateRequest", api.SecretCreateRequest{DisplayName: "db", Payload: b64, KeyValues: map[string]string{"pw": value}}, []string{"db"}},
		{"SecretRotateRequest", api.SecretRotateRequest{Payload: b64, KeyValues: map[string]string{"pw": value}, CAS: &cas}, []string{"[redacted]"}},
		{"SecretCreate", client.SecretCreate{DisplayName: "db", Payload: []byte(payload), KeyValues: map[string]string{"pw": value}}, []string{"db"}},
		{"SecretRotate", client.SecretRotate{Payload: []byte(payload), KeyValues: map[string]string{"pw": value}}, []string{"[redacted]"}},
		{"*Client", client.NewClient("/run/coffer/coffer.sock").WithToken(token), []string{"/run/coffer/coffer.sock"}},
		{"Client", *client.NewClient("/run/coffer/coffer.sock").WithToken(token), []string{"/run/coffer/coffer.sock"}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			for how, s := range redacttest.Printed(tt.v) {
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
	b, err := json.Marshal(api.Credential{Token: token})
	if err != nil || !strings.Contains(string(b), `"token":"`+token+`"`) {
		t.Fatalf("JSON = %s, %v", b, err)
	}
}
