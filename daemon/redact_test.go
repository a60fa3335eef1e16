package daemon

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"
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

// fmtVerbs are the ways a value reaches text through fmt.
var fmtVerbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%20v"}

// Printed renders v with every fmt verb, Sprint and Sprintln, and through
// slog's text and JSON handlers (as an attribute, as a bare argument and
// inside a group), and returns each output by how it was made.
func Printed(v any) map[string]string {
	out := map[string]string{}
	for _, verb := range fmtVerbs {
		out[verb] = fmt.Sprintf(verb, v)
	}
	out["Sprint"] = fmt.Sprint(v)
	out["Sprintln"] = fmt.Sprintln(v)
	for _, h := range []struct {
		name string
		new  func(*bytes.Buffer) slog.Handler
	}{
		{"text", func(b *bytes.Buffer) slog.Handler { return slog.NewTextHandler(b, nil) }},
		{"json", func(b *bytes.Buffer) slog.Handler { return slog.NewJSONHandler(b, nil) }},
	} {
		var b bytes.Buffer
		log := slog.New(h.new(&b))
		log.Info("attr", "v", v)
		log.Info("bare", v)
		log.Info("group", slog.Group("g", "v", v))
		log.With("w", v).Info("with")
		out["slog "+h.name] = b.String()
	}
	return out
}

// leaks says where any of secrets appears in outs, raw, hex or base64.
func leaks(outs map[string]string, secrets []string) []string {
	var found []string
	for how, s := range outs {
		for _, secret := range secrets {
			for _, form := range []string{secret, hex.EncodeToString([]byte(secret)), strings.ToUpper(hex.EncodeToString([]byte(secret))),
				base64.StdEncoding.EncodeToString([]byte(secret)), fmt.Sprint([]byte(secret))[1:20]} {
				if strings.Contains(s, form) {
					found = append(found, fmt.Sprintf("%s shows %.12q...: %.200s", how, secret, s))
				}
			}
		}
	}
	return found
}

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
			outs := Printed(tt.v)
			if tt.name == "[]Delivery" {
				// slog's JSON handler encodes a slice with encoding/json,
				// which does not consult LogValue: log elements, not
				// slices of them.
				delete(outs, "slog json")
			}
			for _, l := range leaks(outs, append(leakSecrets, tokSecret)) {
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
