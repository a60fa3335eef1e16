package daemon

import (
	"bytes"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/internal/redacttest"
)

// Secrets used below: each is long and distinctive, so that finding it (or
// its hex or base64 form) in output can only mean a leak.
const (
	leakToken   = "cft_LEAKtoken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXY"
	leakSecret  = "cfo_LEAKclientsecret0123456789"
	leakPayload = "LEAKpayload-hunter2-correct-horse"
	leakValue   = "LEAKkeyvalue-battery-staple"
)

var leakSecrets = []string{leakToken, leakSecret, leakPayload, leakValue}

func TestSecretsAreRedactedWhenPrinted(t *testing.T) {
	exp := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	_, tok, err := NewToken(PrefixAccessToken)
	if err != nil {
		t.Fatal(err)
	}
	tokSecret := string(tok.secret[:])
	for _, tt := range []struct {
		name string
		v    any
		// shown must still appear: redaction keeps what is not secret.
		shown []string
	}{
		{"Issued", Issued{Token: leakToken, ClientID: "cfo_client-id", ClientSecret: leakSecret}, []string{"cfo_client-id", "[redacted]"}},
		{"*Issued", &Issued{Token: leakToken}, []string{"[redacted]"}},
		{"AccessToken", AccessToken{Token: leakToken, ExpiresIn: 300, Scope: "read", SessionID: "sess-1"}, []string{"sess-1", "300"}},
		{"SecretInput", SecretInput{DisplayName: "db", Payload: []byte(leakPayload), KeyValues: map[string]string{"password": leakValue}, ExpiresAt: &exp}, []string{"db"}},
		{"*SecretInput", &SecretInput{DisplayName: "db", Payload: []byte(leakPayload)}, []string{"db"}},
		{"RotateInput", RotateInput{Payload: []byte(leakPayload), KeyValues: map[string]string{"k": leakValue}}, []string{"[redacted]"}},
		{"Delivery", Delivery{Payload: []byte(leakPayload), SecretID: "sec-1", Version: 7}, []string{"sec-1", "7"}},
		{"[]Delivery", []Delivery{{Payload: []byte(leakPayload)}}, nil},
		{"ParsedToken", tok, []string{tok.ID}},
		{"*ParsedToken", &tok, []string{tok.ID}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			outs := redacttest.Printed(tt.v)
			if tt.name == "[]Delivery" {
				// slog's JSON handler encodes a slice with encoding/json,
				// which does not consult LogValue: log elements, not
				// slices of them.
				delete(outs, "slog json")
			}
			for _, l := range redacttest.Leaks(outs, append(leakSecrets, tokSecret)) {
				t.Error(l)
			}
			for how, s := range outs {
				for _, want := range tt.shown {
					if how != "%x" && how != "%X" && how != "%q" && !strings.Contains(s, want) {
						t.Errorf("%s lost %q: %s", how, want, s)
					}
				}
			}
		})
	}
}

// TestRedactedZeroValues: an unset secret field prints as its zero value,
// so "no token" and "a token" can be told apart.
func TestRedactedZeroValues(t *testing.T) {
	if got := fmt.Sprintf("%v", Issued{ClientID: "c"}); got != "{Token: ClientID:c ClientSecret:}" {
		t.Errorf("%%v = %s", got)
	}
	if got := fmt.Sprintf("%#v", Issued{Token: "x"}); got != `daemon.Issued{Token:[redacted], ClientID:"", ClientSecret:""}` {
		t.Errorf("%%#v = %s", got)
	}
	var b bytes.Buffer
	slog.New(slog.NewJSONHandler(&b, nil)).Info("m", "d", Delivery{Payload: []byte("x"), SecretID: "s"})
	if !strings.Contains(b.String(), `"d":{"Payload":"[redacted]","SecretID":"s","Version":0}`) {
		t.Errorf("json log = %s", b.String())
	}
}
