package daemon

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejson "github.com/go-jose/go-jose/v4/json"
	josejwt "github.com/go-jose/go-jose/v4/jwt"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

// The signer's tests run on a real SoftHSM token: one token directory
// per test binary (SoftHSM reads its configuration once per load), one
// token per test.
var (
	softHSMOnce sync.Once
	softHSMDir  string
	softHSMErr  error
)

func k8sTokenCfg(t testing.TB, label string) hsm.Config {
	t.Helper()
	softHSMOnce.Do(func() {
		if _, err := os.Stat(hsm.DefaultModulePath); err != nil {
			softHSMErr = fmt.Errorf("SoftHSM module not available: %w", err)
			return
		}
		softHSMDir, softHSMErr = os.MkdirTemp("", "coffer-daemon-k8s-")
	})
	if softHSMErr != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("SoftHSM required in CI: %v", softHSMErr)
		}
		t.Skipf("skipping: %v", softHSMErr)
	}
	cfg, err := hsm.PrepareDevToken(context.Background(), softHSMDir, hsm.DefaultModulePath, label)
	if err != nil {
		t.Fatalf("PrepareDevToken(%s): %v", label, err)
	}
	return cfg
}

// k8sEnv is a Service over a real SoftHSM token and a Badger store.
type k8sEnv struct {
	cfg   hsm.Config
	dir   string
	svc   *Service
	keys  *hsm.HSM
	audit *recordingAudit
	logs  *lockedBuffer
}

func newK8sEnv(t *testing.T, token string) *k8sEnv {
	t.Helper()
	e := &k8sEnv{cfg: k8sTokenCfg(t, token), dir: t.TempDir()}
	e.open(t)
	t.Cleanup(func() { e.close() })
	return e
}

func (e *k8sEnv) open(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	h, err := hsm.Open(ctx, e.cfg)
	if err != nil {
		t.Fatal(err)
	}
	store, err := kv.Open(ctx, kv.Options{Dir: filepath.Join(e.dir, "data"), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		h.Close()
		t.Fatal(err)
	}
	e.logs = &lockedBuffer{}
	svc, err := New(ctx, Config{Version: "test", Logger: slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}, h, store)
	if err != nil {
		store.Close()
		h.Close()
		t.Fatal(err)
	}
	e.audit = &recordingAudit{}
	if err := svc.SetAuditLog(ctx, e.audit); err != nil {
		t.Fatal(err)
	}
	e.svc, e.keys = svc, h
}

func (e *k8sEnv) close() {
	if e.svc != nil {
		e.svc.CloseAudit(context.Background())
		e.svc.Close()
		e.svc = nil
	}
}

func (e *k8sEnv) reopen(t *testing.T) {
	t.Helper()
	e.close()
	e.open(t)
}

func (e *k8sEnv) admin(t *testing.T) Grant {
	t.Helper()
	g, err := e.svc.Authorize(context.Background(), rootPrincipal, ActManageKeys, Resource{})
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func (e *k8sEnv) actions(t *testing.T) []string {
	t.Helper()
	if err := e.svc.FlushAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.audit.mu.Lock()
	defer e.audit.mu.Unlock()
	var out []string
	for _, ev := range e.audit.appended {
		if strings.HasPrefix(ev.Action, "k8s.") {
			out = append(out, ev.Action)
		}
	}
	return out
}

// saClaims are claims as kube-apiserver makes them, base64url.
func saClaims(t testing.TB, iat time.Time, life time.Duration) []byte {
	t.Helper()
	c := map[string]any{
		"aud": []string{"https://kubernetes.default.svc"},
		"exp": iat.Add(life).Unix(),
		"iat": iat.Unix(),
		"iss": "https://kubernetes.default.svc",
		"jti": "b1f0f2a6-6e0c-4b0a-9d43-1b4b8c1c2d3e",
		"kubernetes.io": map[string]any{
			"namespace":      "default",
			"serviceaccount": map[string]string{"name": "app", "uid": "6b1b4c8e-0f5b-4b39-9a55-0d5c8c3c4f11"},
		},
		"nbf": iat.Unix(),
		"sub": "system:serviceaccount:default:app",
	}
	b, err := json.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	return []byte(base64.RawURLEncoding.EncodeToString(b))
}

// verifyK8sToken assembles header.claims.sig, checks the header holds
// only alg, kid and typ, and verifies it with go-jose against the key of
// its kid in set. It returns the kid.
func verifyK8sToken(t *testing.T, set K8sKeySet, header, claims, sig []byte) string {
	t.Helper()
	rawHdr, err := base64.RawURLEncoding.DecodeString(string(header))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(rawHdr)))
	dec.DisallowUnknownFields()
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
		Typ string `json:"typ"`
	}
	if err := dec.Decode(&h); err != nil || h.Typ != "JWT" || h.Kid == "" || (h.Alg != "ES256" && h.Alg != "RS256") {
		t.Fatalf("header %s: %v", rawHdr, err)
	}
	tok := string(header) + "." + string(claims) + "." + string(sig)
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{jose.ES256, jose.RS256})
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range set.Keys {
		if k.KeyID != h.Kid {
			continue
		}
		pub, err := x509.ParsePKIXPublicKey(k.PKIX)
		if err != nil {
			t.Fatal(err)
		}
		payload, err := jws.Verify(pub)
		if err != nil {
			t.Fatalf("token does not verify with key %s: %v", k.KeyID, err)
		}
		want, _ := base64.RawURLEncoding.DecodeString(string(claims))
		if string(payload) != string(want) {
			t.Fatal("verified payload differs from the claims")
		}
		return h.Kid
	}
	t.Fatalf("kid %s is not among the published keys", h.Kid)
	return ""
}

func TestK8sSignerSignVerify(t *testing.T) {
	e := newK8sEnv(t, "k8s-sign")
	ctx := context.Background()
	if _, _, err := e.svc.K8sSign(ctx, saClaims(t, time.Now(), time.Hour)); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("K8sSign before start = %v, want unavailable", err)
	}
	if _, err := e.svc.K8sPublicKeys(ctx); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("K8sPublicKeys before start = %v, want unavailable", err)
	}
	if err := e.svc.StartK8sSigner(ctx, K8sSignerConfig{MaxTokenExpiration: 5 * time.Minute}); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("StartK8sSigner(5m) = %v, want invalid_argument", err)
	}
	if err := e.svc.StartK8sSigner(ctx, K8sSignerConfig{}); err != nil {
		t.Fatal(err)
	}
	if d, err := e.svc.K8sMaxTokenExpiration(); err != nil || d != DefaultK8sMaxTokenExpiration {
		t.Fatalf("K8sMaxTokenExpiration = %v, %v", d, err)
	}
	set, err := e.svc.K8sPublicKeys(ctx)
	if err != nil || len(set.Keys) != 1 || set.RefreshHint != K8sRefreshHint || set.DataTimestamp.IsZero() || set.Keys[0].ExcludeFromOIDCDiscovery {
		t.Fatalf("K8sPublicKeys = %+v, %v", set, err)
	}
	// Not coffer's token signing key: another key, another kid.
	if set.Keys[0].KeyID == KeyID(e.keys.SigningPublicKey()) {
		t.Fatal("the Kubernetes signer signs with coffer's own signing key")
	}
	if got := e.actions(t); strings.Join(got, " ") != "k8s.sa_key_create" {
		t.Fatalf("audited %v, want the key's creation", got)
	}

	for range 20 {
		claims := saClaims(t, time.Now(), time.Hour)
		header, sig, err := e.svc.K8sSign(ctx, claims)
		if err != nil {
			t.Fatal(err)
		}
		if kid := verifyK8sToken(t, set, header, claims, sig); kid != set.Keys[0].KeyID {
			t.Fatalf("kid %s, want %s", kid, set.Keys[0].KeyID)
		}
	}
	// coffer's own verifier does not take a cluster token, whatever its
	// claims say.
	{
		claims := saClaims(t, time.Now(), time.Hour)
		header, sig, err := e.svc.K8sSign(ctx, claims)
		if err != nil {
			t.Fatal(err)
		}
		tok := string(header) + "." + string(claims) + "." + string(sig)
		if in, err := e.svc.Introspect(ctx, tok); err == nil && in.Active {
			t.Fatalf("coffer introspects a cluster token as active: %+v", in)
		}
		if _, err := e.svc.Authenticate(ctx, rootPrincipal, tok); err == nil {
			t.Fatal("coffer authenticates a cluster token as a bearer")
		}
		if _, ok := e.svc.jwtKeys()[set.Keys[0].KeyID]; ok {
			t.Fatal("the Kubernetes key verifies coffer's JWTs")
		}
	}
	// Signing writes nothing to the audit log; it is counted in memory.
	if got := e.actions(t); len(got) != 1 {
		t.Fatalf("audited %v after signing, want only the key's creation", got)
	}
	if st := e.svc.K8sSignerStats(); !st.Enabled || st.Signed != 21 || st.Refused != 0 {
		t.Fatalf("stats %+v", st)
	}
	keys, err := e.svc.K8sSAKeys(ctx, e.admin(t))
	if err != nil || len(keys) != 1 || keys[0].Label != "coffer-k8s-sa-1" || keys[0].Alg != "ES256" || !keys[0].Current ||
		!keys[0].Published || keys[0].Signed != 21 || keys[0].Kid != set.Keys[0].KeyID {
		t.Fatalf("K8sSAKeys = %+v, %v", keys, err)
	}
	// A refusal is counted and logged without the claims.
	bad := saClaims(t, time.Now(), 48*time.Hour)
	if _, _, err := e.svc.K8sSign(ctx, bad); CodeOf(err) != CodeInvalidArgument {
		t.Fatalf("K8sSign(48h) = %v", err)
	}
	if st := e.svc.K8sSignerStats(); st.Refused != 1 {
		t.Fatalf("stats %+v", st)
	}
	if logs := e.logs.String(); !strings.Contains(logs, "Kubernetes token signing refused") || strings.Contains(logs, string(bad)) ||
		strings.Contains(logs, "system:serviceaccount") {
		t.Fatalf("refusal log:\n%s", logs)
	}
}

func TestK8sSignerRotation(t *testing.T) {
	e := newK8sEnv(t, "k8s-rotate")
	ctx := context.Background()
	maxExp := time.Hour
	if err := e.svc.StartK8sSigner(ctx, K8sSignerConfig{MaxTokenExpiration: maxExp}); err != nil {
		t.Fatal(err)
	}
	claims := saClaims(t, time.Now(), maxExp)
	h1, s1, err := e.svc.K8sSign(ctx, claims)
	if err != nil {
		t.Fatal(err)
	}
	set1, _ := e.svc.K8sPublicKeys(ctx)
	kid1 := verifyK8sToken(t, set1, h1, claims, s1)

	if _, err := e.svc.RotateK8sSAKey(ctx, Grant{}); !errors.Is(err, ErrForbidden) {
		t.Fatalf("rotation without a grant = %v", err)
	}
	before := time.Now()
	rot, err := e.svc.RotateK8sSAKey(ctx, e.admin(t))
	if err != nil {
		t.Fatal(err)
	}
	if rot.Current.Label != "coffer-k8s-sa-2" || !rot.Current.Current || rot.Previous == nil || rot.Previous.Kid != kid1 ||
		!rot.Previous.Published || rot.Previous.RetireAfter == nil {
		t.Fatalf("rotation %+v", rot)
	}
	if ra := *rot.Previous.RetireAfter; ra.Before(before.Add(maxExp+k8sKeyGrace)) || ra.After(time.Now().Add(maxExp+k8sKeyGrace+time.Second)) {
		t.Fatalf("retire_after %v, want the rotation + %v + %v", ra, maxExp, k8sKeyGrace)
	}
	retire := *rot.Previous.RetireAfter
	// Both keys are published; the old token still verifies; new tokens
	// carry the new kid.
	set2, err := e.svc.K8sPublicKeys(ctx)
	if err != nil || len(set2.Keys) != 2 || set2.Keys[0].KeyID != rot.Current.Kid || set2.Keys[1].KeyID != kid1 || !set2.DataTimestamp.After(set1.DataTimestamp) {
		t.Fatalf("keys after rotation %+v, %v", set2, err)
	}
	verifyK8sToken(t, set2, h1, claims, s1)
	h2, s2, err := e.svc.K8sSign(ctx, claims)
	if err != nil {
		t.Fatal(err)
	}
	if kid := verifyK8sToken(t, set2, h2, claims, s2); kid != rot.Current.Kid {
		t.Fatalf("a token after the rotation carries kid %s", kid)
	}

	if got := strings.Join(e.actions(t), " "); got != "k8s.sa_key_create k8s.sa_key_rotate" {
		t.Fatalf("audited %q", got)
	}

	// A restart keeps both keys and the retirement.
	e.reopen(t)
	if err := e.svc.StartK8sSigner(ctx, K8sSignerConfig{MaxTokenExpiration: maxExp}); err != nil {
		t.Fatal(err)
	}
	set3, _ := e.svc.K8sPublicKeys(ctx)
	if len(set3.Keys) != 2 || set3.Keys[0].KeyID != rot.Current.Kid || set3.Keys[1].KeyID != kid1 {
		t.Fatalf("keys after restart %+v", set3)
	}
	keys, _ := e.svc.K8sSAKeys(ctx, e.admin(t))
	if len(keys) != 2 || !keys[1].RetireAfter.Equal(retire) {
		t.Fatalf("keys after restart %+v, want retire_after %v", keys, retire)
	}
	if n, err := e.svc.sweepK8sKeys(ctx); err != nil || n != 0 {
		t.Fatalf("early sweep destroyed %d (%v)", n, err)
	}

	// Past retire_after the old key leaves the set (and the timestamp
	// moves), and the sweep destroys it on the token.
	e.svc.now = func() time.Time { return retire }
	set4, _ := e.svc.K8sPublicKeys(ctx)
	if len(set4.Keys) != 1 || set4.Keys[0].KeyID != rot.Current.Kid || !set4.DataTimestamp.Equal(retire) {
		t.Fatalf("keys after retire_after %+v", set4)
	}
	if n, err := e.svc.sweepK8sKeys(ctx); err != nil || n != 1 {
		t.Fatalf("sweep destroyed %d (%v), want 1", n, err)
	}
	if vs, err := e.keys.K8sKeys(ctx); err != nil || len(vs) != 1 || vs[0].Label != "coffer-k8s-sa-2" {
		t.Fatalf("token keys after the sweep %+v, %v", vs, err)
	}
	want := "k8s.sa_key_destroy"
	if got := strings.Join(e.actions(t), " "); got != want {
		t.Fatalf("audited %q, want %q", got, want)
	}
}

// A rotation the store did not record (a crash between the token and the
// store) is recorded at the next start, with a full lifetime ahead.
func TestK8sSignerUnrecordedRotation(t *testing.T) {
	e := newK8sEnv(t, "k8s-unrecorded")
	ctx := context.Background()
	if err := e.svc.StartK8sSigner(ctx, K8sSignerConfig{}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.keys.CreateK8sKey(ctx); err != nil { // behind the daemon's back
		t.Fatal(err)
	}
	e.reopen(t)
	start := time.Now()
	if err := e.svc.StartK8sSigner(ctx, K8sSignerConfig{}); err != nil {
		t.Fatal(err)
	}
	keys, err := e.svc.K8sSAKeys(ctx, e.admin(t))
	if err != nil || len(keys) != 2 || keys[0].Label != "coffer-k8s-sa-2" || !keys[1].Published ||
		keys[1].RetireAfter.Before(start.Add(DefaultK8sMaxTokenExpiration)) {
		t.Fatalf("keys %+v, %v", keys, err)
	}
}

func TestCheckK8sClaims(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	maxExp := time.Hour
	enc := func(s string) []byte { return []byte(base64.RawURLEncoding.EncodeToString([]byte(s))) }
	obj := func(iat, exp int64, extra string) []byte {
		return enc(fmt.Sprintf(`{"iss":"https://k","sub":"system:serviceaccount:a:b","iat":%d,"exp":%d%s}`, iat, exp, extra))
	}
	n := now.Unix()
	for _, tt := range []struct {
		name   string
		claims []byte
		want   string // "" = accepted; else the message's tail
	}{
		{"ok", obj(n, n+3600, ""), ""},
		{"ok with nbf and aud", obj(n, n+600, `,"nbf":1799999990,"aud":["x"]`), ""},
		{"clock a little behind", obj(n+30, n+30+3600, ""), ""},
		{"float seconds", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d.0,"exp":1.8000036e9}`, n)), ""},
		{"empty", nil, "empty"},
		{"too long", make([]byte, MaxK8sClaims+1), "longer than 65536 bytes"},
		{"padding", []byte(base64.URLEncoding.EncodeToString([]byte(`{"a":1}`))), "not base64url without padding"},
		{"std alphabet", []byte("+/+/"), "not base64url without padding"},
		{"array", enc(`[1]`), "not a JSON object"},
		{"trailing", enc(`{"iss":"i"} x`), "not valid JSON"},
		{"two objects", enc(`{"iss":"i"}{"iss":"j"}`), "not valid JSON"},
		{"null", enc(`null`), "not a JSON object"},
		{"duplicate in a nested object is fine", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"exp":%d,"x":{"a":1,"a":2},"y":["a,b",{"c":"}"}]}`, n, n+60)), ""},
		{"escaped quote in a name", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"exp":%d,"q\\\"x,":1,"exp":%d}`, n, n+60, n+60)), "a claim appears twice"},
		{"truncated", enc(`{"iss":"i"`), "not valid JSON"},
		{"duplicate", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"exp":%d,"exp":%d}`, n, n+60, n+60)), "a claim appears twice"},
		{"duplicate by case", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"exp":%d,"EXP":%d}`, n, n+60, n+60)), "a claim appears twice"},
		{"EXP in upper case", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"EXP":%d}`, n, n+600)), "a claim is named exp in another case"},
		{"Exp", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"Exp":%d}`, n, n+600)), "a claim is named exp in another case"},
		{"JTI", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"exp":%d,"JTI":"x"}`, n, n+600)), "a claim is named jti in another case"},
		{"ISS", enc(fmt.Sprintf(`{"ISS":"i","sub":"s","iat":%d,"exp":%d}`, n, n+600)), "a claim is named iss in another case"},
		{"long s in sub", enc(fmt.Sprintf(`{"iss":"i","\u017fub":"s","iat":%d,"exp":%d}`, n, n+600)), "a claim is named sub in another case"},
		{"IAT", enc(fmt.Sprintf(`{"iss":"i","sub":"s","IAT":%d,"exp":%d}`, n, n+600)), "a claim is named iat in another case"},
		{"Nbf", obj(n, n+600, `,"Nbf":1800000060`), "a claim is named nbf in another case"},
		{"AUD", obj(n, n+600, `,"AUD":["x"]`), "a claim is named aud in another case"},
		{"unregistered names keep their case", obj(n, n+600, `,"Kubernetes.io":{},"EXPIRY":1`), ""},
		{"no iss", enc(fmt.Sprintf(`{"sub":"s","iat":%d,"exp":%d}`, n, n+60)), "iss is missing"},
		{"empty sub", enc(fmt.Sprintf(`{"iss":"i","sub":"","iat":%d,"exp":%d}`, n, n+60)), "sub is not a non-empty string"},
		{"numeric sub", enc(fmt.Sprintf(`{"iss":"i","sub":5,"iat":%d,"exp":%d}`, n, n+60)), "sub is not a non-empty string"},
		{"no exp", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d}`, n)), "exp is missing"},
		{"string exp", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d,"exp":"%d"}`, n, n+60)), "exp is not a whole number of seconds"},
		{"fractional iat", enc(fmt.Sprintf(`{"iss":"i","sub":"s","iat":%d.5,"exp":%d}`, n, n+60)), "iat is not a whole number of seconds"},
		{"negative iat", obj(-1, n, ""), "iat is not a whole number of seconds"},
		{"exp before iat", obj(n, n, ""), "exp is not after iat"},
		{"too long a life", obj(n, n+3601, ""), "exp - iat is 3601s, more than the maximum token expiration of 3600s"},
		{"iat in the future", obj(n+120, n+180, ""), "iat is in the future"},
		{"exp beyond now+max", obj(n+59, n+3600+61, ""), "exp - iat is 3602s, more than the maximum token expiration of 3600s"},
		{"expired", obj(n-3600, n-61, ""), "exp is in the past"},
		{"nbf after exp", obj(n, n+60, `,"nbf":1800000060`), "nbf is not before exp"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckK8sClaims(tt.claims, now, maxExp)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if CodeOf(err) != CodeInvalidArgument || err.Error() != "Kubernetes token claims: "+tt.want {
				t.Fatalf("error %v, want %q", err, tt.want)
			}
		})
	}
}

// FuzzCheckK8sClaims: any input is accepted or refused with
// invalid_argument, never a panic; what is accepted is a JSON object with
// the claims kube-apiserver's verifier reads, within the limits.
func FuzzCheckK8sClaims(f *testing.F) {
	now := time.Unix(1_800_000_000, 0)
	for _, s := range []string{
		`{"iss":"i","sub":"s","iat":1800000000,"exp":1800003600}`,
		`{"iss":"i","sub":"s","iat":1800000000,"exp":1800003600,"nbf":1800000000,"aud":["a"],"kubernetes.io":{"namespace":"n"}}`,
		`{"iss":"i","sub":"s","iat":1.8e9,"exp":1800000600}`,
		`{"iss":"i","sub":"s","iat":1800000000,"exp":1800003600,"Exp":1}`,
		`{"iss":"i"}`, `[]`, `null`, `{"iss":"\u017fub"}`,
		`{"iss":"i","sub":"s","iat":1800000000,"EXP":1800000600}`,
		`{"ISS":"i","sub":"s","iat":1800000000,"exp":1800000600}`,
	} {
		f.Add([]byte(base64.RawURLEncoding.EncodeToString([]byte(s))))
	}
	f.Add([]byte("e30"))
	f.Fuzz(func(t *testing.T, b64 []byte) {
		err := CheckK8sClaims(b64, now, time.Hour)
		if err != nil {
			if CodeOf(err) != CodeInvalidArgument {
				t.Fatalf("error of another class: %v", err)
			}
			return
		}
		raw, derr := base64.RawURLEncoding.DecodeString(string(b64))
		if derr != nil {
			t.Fatalf("accepted claims that are not base64url: %v", derr)
		}
		var c struct {
			Iss string   `json:"iss"`
			Sub string   `json:"sub"`
			Iat *float64 `json:"iat"`
			Exp *float64 `json:"exp"`
		}
		if err := json.Unmarshal(raw, &c); err != nil {
			t.Fatalf("accepted claims encoding/json refuses: %v", err)
		}
		if c.Iss == "" || c.Sub == "" || c.Iat == nil || c.Exp == nil || *c.Exp <= *c.Iat || *c.Exp-*c.Iat > 3600 {
			t.Fatalf("accepted claims %s read as %+v", raw, c)
		}
		// As the verifiers read it: go-jose's JSON matches names exactly,
		// so exact exp and iat must be there, and the same values.
		var jc struct {
			Issuer   string               `json:"iss"`
			Subject  string               `json:"sub"`
			IssuedAt *josejwt.NumericDate `json:"iat"`
			Expiry   *josejwt.NumericDate `json:"exp"`
		}
		if err := josejson.Unmarshal(raw, &jc); err != nil {
			t.Fatalf("accepted claims go-jose refuses: %v", err)
		}
		if jc.Issuer != c.Iss || jc.Subject != c.Sub || jc.IssuedAt == nil || jc.Expiry == nil ||
			int64(*jc.Expiry) != int64(*c.Exp) || int64(*jc.IssuedAt) != int64(*c.Iat) {
			t.Fatalf("accepted claims %s read by go-jose as %+v", raw, jc)
		}
	})
}

// BenchmarkK8sSign: the claims check, the domain's Sign (check, hash,
// HSM) and, for comparison, coffer's own hsm.Sign on the same token.
func BenchmarkK8sSign(b *testing.B) {
	cfg := k8sTokenCfg(b, "k8s-bench")
	h, err := hsm.Open(context.Background(), cfg)
	if err != nil {
		b.Fatal(err)
	}
	store, err := kv.Open(context.Background(), kv.Options{Dir: b.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	svc, err := New(context.Background(), Config{Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, h, store)
	if err != nil {
		b.Fatal(err)
	}
	defer svc.Close()
	ctx := context.Background()
	if err := svc.StartK8sSigner(ctx, K8sSignerConfig{}); err != nil {
		b.Fatal(err)
	}
	claims := saClaims(b, time.Now(), time.Hour)
	b.Run("check", func(b *testing.B) {
		for b.Loop() {
			if err := CheckK8sClaims(claims, time.Now(), time.Hour); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("sign", func(b *testing.B) {
		for b.Loop() {
			if _, _, err := svc.K8sSign(ctx, claims); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("hsm-sign", func(b *testing.B) {
		d := make([]byte, 32)
		for b.Loop() {
			if _, err := h.Sign(ctx, d); err != nil {
				b.Fatal(err)
			}
		}
	})
}
