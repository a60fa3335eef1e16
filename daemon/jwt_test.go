package daemon

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/asn1"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// jwtSoftSigner is a software P-256 JWTSigner (the HSM is tested in hsm/).
type jwtSoftSigner struct {
	priv *ecdsa.PrivateKey
	pub  *ecdsa.PublicKey // returned by SigningPublicKey; defaults to priv's

	mu      sync.Mutex
	digests [][]byte
	err     error               // returned by Sign when set
	mangle  func([]byte) []byte // applied to the signature when set
	// highS makes Sign return the high-S form of each signature (an HSM
	// returns either form; by default Sign does too, at random).
	highS bool
}

func newJWTSigner(tb testing.TB) *jwtSoftSigner {
	tb.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatal(err)
	}
	return &jwtSoftSigner{priv: priv, pub: &priv.PublicKey}
}

func (s *jwtSoftSigner) Sign(_ context.Context, digest []byte) ([]byte, error) {
	s.mu.Lock()
	s.digests = append(s.digests, slices.Clone(digest))
	err, mangle, highS := s.err, s.mangle, s.highS
	s.mu.Unlock()
	if err != nil {
		return nil, err
	}
	if len(digest) != 32 {
		return nil, fmt.Errorf("digest is %d bytes", len(digest))
	}
	sig := jwtRawSign(s.priv, digest)
	if highS && jwtIsLowS(sig) {
		sig = jwtTwin(sig)
	}
	if mangle != nil {
		sig = mangle(sig)
	}
	return sig, nil
}

func (s *jwtSoftSigner) SigningPublicKey() PublicKey { return s.pub }

func (s *jwtSoftSigner) calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.digests)
}

func (s *jwtSoftSigner) keys() map[string]PublicKey {
	return map[string]PublicKey{KeyID(s.pub): s.pub}
}

// jwtRawSign signs like an HSM: r||s with s low or high at random.
func jwtRawSign(priv *ecdsa.PrivateKey, digest []byte) []byte {
	r, s, err := ecdsa.Sign(rand.Reader, priv, digest)
	if err != nil {
		panic(err)
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return sig
}

// jwtTwin is the other valid ES256 signature of the same message: (r, n−s)
// for (r, s).
func jwtTwin(sig []byte) []byte {
	n := elliptic.P256().Params().N
	out := slices.Clone(sig)
	new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:])).FillBytes(out[32:])
	return out
}

// jwtIsLowS reports whether s ≤ n/2 (computed apart from es256LowS).
func jwtIsLowS(sig []byte) bool {
	half := new(big.Int).Rsh(elliptic.P256().Params().N, 1)
	return new(big.Int).SetBytes(sig[32:]).Cmp(half) <= 0
}

var jwtEnc = base64.RawURLEncoding

// jwtForge builds a compact JWS from literal header and payload JSON,
// signed ES256 by priv (low-S) — for tokens MintJWT would never produce.
func jwtForge(priv *ecdsa.PrivateKey, header, payload string) string {
	in := jwtEnc.EncodeToString([]byte(header)) + "." + jwtEnc.EncodeToString([]byte(payload))
	d := sha256.Sum256([]byte(in))
	sig := jwtRawSign(priv, d[:])
	if !jwtIsLowS(sig) {
		sig = jwtTwin(sig)
	}
	return in + "." + jwtEnc.EncodeToString(sig)
}

// jwtWithSig replaces the signature part of token.
func jwtWithSig(token string, sig []byte) string {
	return token[:strings.LastIndexByte(token, '.')+1] + jwtEnc.EncodeToString(sig)
}

func jwtParts(t *testing.T, token string) []string {
	t.Helper()
	p := strings.Split(token, ".")
	if len(p) != 3 {
		t.Fatalf("token has %d parts", len(p))
	}
	return p
}

var jwtNow = time.Unix(1_760_000_000, 0)

func jwtFullClaims() AccessClaims {
	return AccessClaims{
		Issuer:    "https://coffer.example",
		Subject:   "0198b0d2-6c1e-7d3a-9a57-2f9f1c0e8a11",
		Audience:  []string{"https://api.example"},
		ClientID:  "cfo_client",
		IssuedAt:  jwtNow.Unix(),
		ExpiresAt: jwtNow.Add(time.Hour).Unix(),
		NotBefore: jwtNow.Unix(),
		JTI:       "0198b0d2-6c1e-7d3a-9a57-2f9f1c0e8a12",
		Scope:     "read write",
		Roles:     []string{"member"},
		Policies:  []string{"p1", "p2"},
		Project:   "default",
	}
}

func jwtMinClaims() AccessClaims {
	return AccessClaims{
		Issuer:    "https://coffer.example",
		Subject:   "u1",
		Audience:  []string{"coffer"},
		ClientID:  "c1",
		IssuedAt:  jwtNow.Unix(),
		ExpiresAt: jwtNow.Add(5 * time.Minute).Unix(),
		JTI:       "s1",
	}
}

func TestMintVerifyJWT(t *testing.T) {
	multi := jwtFullClaims()
	multi.Audience = []string{"a", "b", "c"}
	unicode := jwtMinClaims()
	unicode.Subject = "ünï<code>&\u2028\"\\"
	tests := []struct {
		name    string
		claims  AccessClaims
		wantAud string // raw JSON of "aud" in the payload
	}{
		{"full", jwtFullClaims(), `"https://api.example"`},
		{"minimal", jwtMinClaims(), `"coffer"`},
		{"several audiences", multi, `["a","b","c"]`},
		{"escaping", unicode, `"coffer"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newJWTSigner(t)
			token, err := MintJWT(context.Background(), s, tt.claims)
			if err != nil {
				t.Fatal(err)
			}
			if !LooksLikeJWT(token) {
				t.Errorf("LooksLikeJWT(minted) = false")
			}
			if s.calls() != 1 {
				t.Errorf("Sign called %d times, want 1", s.calls())
			}
			p := jwtParts(t, token)
			if d := sha256.Sum256([]byte(p[0] + "." + p[1])); !slices.Equal(s.digests[0], d[:]) {
				t.Errorf("signed digest is not SHA-256(header.payload)")
			}
			header, _ := jwtEnc.DecodeString(p[0])
			if want := `{"alg":"ES256","kid":"` + KeyID(s.pub) + `","typ":"at+jwt"}`; string(header) != want {
				t.Errorf("header = %s, want %s", header, want)
			}
			payload, _ := jwtEnc.DecodeString(p[1])
			var m map[string]json.RawMessage
			if err := json.Unmarshal(payload, &m); err != nil {
				t.Fatal(err)
			}
			if string(m["aud"]) != tt.wantAud {
				t.Errorf("aud = %s, want %s", m["aud"], tt.wantAud)
			}
			got, err := VerifyJWT(token, s.keys(), jwtNow)
			if err != nil {
				t.Fatalf("VerifyJWT: %v", err)
			}
			if !reflect.DeepEqual(got, tt.claims) {
				t.Errorf("claims = %+v, want %+v", got, tt.claims)
			}
		})
	}
}

func TestJWTInteropGoJose(t *testing.T) {
	s := newJWTSigner(t)
	claims := jwtFullClaims()
	claims.Audience = []string{"https://api.example", "other"}
	token, err := MintJWT(context.Background(), s, claims)
	if err != nil {
		t.Fatal(err)
	}

	// The JWKS document as served, read by go-jose.
	doc, err := json.Marshal(JWKSet{Keys: []JWK{PublicJWK(s.pub)}})
	if err != nil {
		t.Fatal(err)
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &set); err != nil {
		t.Fatalf("go-jose cannot read JWKS %s: %v", doc, err)
	}
	keys := set.Key(KeyID(s.pub))
	if len(keys) != 1 || !keys[0].Valid() || keys[0].Algorithm != "ES256" || keys[0].Use != "sig" {
		t.Fatalf("JWKS key by kid: %+v", keys)
	}

	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		t.Fatal(err)
	}
	if h := tok.Headers[0]; h.KeyID != KeyID(s.pub) || h.Algorithm != "ES256" || h.ExtraHeaders["typ"] != "at+jwt" {
		t.Errorf("go-jose header: %+v", h)
	}
	var std josejwt.Claims
	var extra struct {
		ClientID string   `json:"client_id"`
		Scope    string   `json:"scope"`
		Roles    []string `json:"roles"`
		Policies []string `json:"policies"`
		Project  string   `json:"project"`
	}
	if err := tok.Claims(keys[0], &std, &extra); err != nil {
		t.Fatalf("go-jose verify: %v", err)
	}
	err = std.ValidateWithLeeway(josejwt.Expected{
		Issuer:      claims.Issuer,
		Subject:     claims.Subject,
		AnyAudience: josejwt.Audience{"other"},
		ID:          claims.JTI,
		Time:        jwtNow,
	}, 0)
	if err != nil {
		t.Errorf("go-jose claims: %v", err)
	}
	if extra.ClientID != claims.ClientID || extra.Scope != claims.Scope || extra.Project != claims.Project ||
		!slices.Equal(extra.Roles, claims.Roles) || !slices.Equal(extra.Policies, claims.Policies) {
		t.Errorf("go-jose private claims: %+v", extra)
	}
	// And a key from another set does not verify it.
	other := newJWTSigner(t)
	if err := tok.Claims(other.pub, &std); err == nil {
		t.Errorf("go-jose verified with the wrong key")
	}

	// The other direction: a token go-jose signs with the same key and
	// the RFC 9068 header verifies with VerifyJWT.
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: s.priv},
		(&jose.SignerOptions{}).WithType("at+jwt").WithHeader("kid", KeyID(s.pub)))
	if err != nil {
		t.Fatal(err)
	}
	joseToken, err := josejwt.Signed(signer).Claims(josejwt.Claims{
		Issuer:   claims.Issuer,
		Subject:  claims.Subject,
		Audience: josejwt.Audience{"only"},
		Expiry:   josejwt.NewNumericDate(jwtNow.Add(time.Minute)),
		IssuedAt: josejwt.NewNumericDate(jwtNow),
		ID:       claims.JTI,
	}).Claims(map[string]any{"client_id": "c9", "roles": []string{"admin"}}).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	// go-jose signs with s high or low at random; coffer takes low-S only.
	if sig, _ := jwtEnc.DecodeString(jwtParts(t, joseToken)[2]); !jwtIsLowS(sig) {
		if _, err := VerifyJWT(joseToken, s.keys(), jwtNow); err == nil {
			t.Fatal("VerifyJWT accepted a high-S go-jose token")
		}
		joseToken = jwtWithSig(joseToken, jwtTwin(sig))
	}
	got, err := VerifyJWT(joseToken, s.keys(), jwtNow)
	if err != nil {
		t.Fatalf("VerifyJWT(go-jose token): %v", err)
	}
	if got.ClientID != "c9" || !slices.Equal(got.Audience, []string{"only"}) || !slices.Equal(got.Roles, []string{"admin"}) {
		t.Errorf("claims from go-jose token: %+v", got)
	}
}

func TestKeyIDAndPublicJWK(t *testing.T) {
	// Keys whose coordinates start with a zero byte exercise fixed-width
	// encoding (a big.Int.Bytes() implementation would drop it).
	var zeroX, zeroY *ecdsa.PublicKey
	var plain []*ecdsa.PublicKey
	for i := 0; (zeroX == nil || zeroY == nil || len(plain) < 3) && i < 20000; i++ {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := k.PublicKey.Bytes()
		switch {
		case b[1] == 0 && zeroX == nil:
			zeroX = &k.PublicKey
		case b[33] == 0 && zeroY == nil:
			zeroY = &k.PublicKey
		case len(plain) < 3:
			plain = append(plain, &k.PublicKey)
		}
	}
	if zeroX == nil || zeroY == nil {
		t.Fatal("no key with a leading zero coordinate found")
	}
	tests := []struct {
		name string
		pub  *ecdsa.PublicKey
	}{
		{"random 1", plain[0]},
		{"random 2", plain[1]},
		{"random 3", plain[2]},
		{"x has a leading zero byte", zeroX},
		{"y has a leading zero byte", zeroY},
	}
	seen := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			kid := KeyID(tt.pub)
			if seen[kid] {
				t.Errorf("duplicate kid %s", kid)
			}
			seen[kid] = true
			tp, err := (&jose.JSONWebKey{Key: tt.pub}).Thumbprint(crypto.SHA256)
			if err != nil {
				t.Fatal(err)
			}
			if want := jwtEnc.EncodeToString(tp); kid != want {
				t.Errorf("KeyID = %s, go-jose thumbprint = %s", kid, want)
			}

			jwk := PublicJWK(tt.pub)
			if jwk.Kty != "EC" || jwk.Crv != "P-256" || jwk.Use != "sig" || jwk.Alg != "ES256" || jwk.Kid != kid {
				t.Errorf("JWK = %+v", jwk)
			}
			if len(jwk.X) != 43 || len(jwk.Y) != 43 {
				t.Errorf("x, y lengths %d, %d; want 43 (32 bytes)", len(jwk.X), len(jwk.Y))
			}
			doc, _ := json.Marshal(jwk)
			var jk jose.JSONWebKey
			if err := jk.UnmarshalJSON(doc); err != nil {
				t.Fatalf("go-jose cannot read %s: %v", doc, err)
			}
			if pub, ok := jk.Key.(*ecdsa.PublicKey); !ok || !pub.Equal(tt.pub) || jk.KeyID != kid {
				t.Errorf("go-jose read back a different key: %+v", jk)
			}
		})
	}
}

func TestKeyIDPanicsOnNonP256(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]func(){
		"KeyID P-384":     func() { KeyID(&k.PublicKey) },
		"PublicJWK P-384": func() { PublicJWK(&k.PublicKey) },
		"KeyID nil":       func() { KeyID(nil) },
	} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("%s did not panic", name)
				}
			}()
			f()
		}()
	}
}

func TestVerifyJWTRejects(t *testing.T) {
	s := newJWTSigner(t)
	kid := KeyID(s.pub)
	good, err := MintJWT(context.Background(), s, jwtFullClaims())
	if err != nil {
		t.Fatal(err)
	}
	p := strings.Split(good, ".")
	payloadJSON, _ := jwtEnc.DecodeString(p[1])
	goodSig, _ := jwtEnc.DecodeString(p[2])
	hdr := func(alg, typ, kid string) string {
		return fmt.Sprintf(`{"alg":%q,"typ":%q,"kid":%q}`, alg, typ, kid)
	}
	goodHdr := hdr("ES256", "at+jwt", kid)
	b64 := func(s string) string { return jwtEnc.EncodeToString([]byte(s)) }

	// HS256 keyed with encodings of the public key: the classic
	// algorithm-confusion attack against verifiers that let the token
	// pick the algorithm.
	hs256 := func(key []byte) string {
		in := b64(hdr("HS256", "at+jwt", kid)) + "." + p[1]
		m := hmac.New(sha256.New, key)
		m.Write([]byte(in))
		return in + "." + jwtEnc.EncodeToString(m.Sum(nil))
	}
	uncompressed, _ := s.pub.Bytes()
	der, _ := x509.MarshalPKIXPublicKey(s.pub)
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	jwkJSON, _ := json.Marshal(PublicJWK(s.pub))

	r := new(big.Int).SetBytes(goodSig[:32])
	sv := new(big.Int).SetBytes(goodSig[32:])
	asn1Sig, _ := asn1.Marshal(struct{ R, S *big.Int }{r, sv})
	n := elliptic.P256().Params().N
	sigWith := func(r, s *big.Int) []byte {
		b := make([]byte, 64)
		r.FillBytes(b[:32])
		s.FillBytes(b[32:])
		return b
	}

	flip := func(b []byte, i int) []byte { c := slices.Clone(b); c[i] ^= 1; return c }
	tamperedPayload := strings.Replace(string(payloadJSON), `"sub":"`, `"sub":"x`, 1)

	// A signature whose 4 unused trailing bits are non-zero decodes to
	// the same bytes leniently; strict decoding must refuse it.
	last := strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", p[2][85])
	nonCanonical := p[0] + "." + p[1] + "." + p[2][:85] +
		string("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[last^1])

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	// A token of a key that signed before and is no longer published.
	retired, err := MintJWT(context.Background(), newJWTSigner(t), jwtFullClaims())
	if err != nil {
		t.Fatal(err)
	}
	claimsWith := func(mod func(m map[string]any)) string {
		var m map[string]any
		if err := json.Unmarshal(payloadJSON, &m); err != nil {
			t.Fatal(err)
		}
		mod(m)
		b, _ := json.Marshal(m)
		return jwtForge(s.priv, goodHdr, string(b))
	}
	mint := func(mod func(c *AccessClaims)) string {
		c := jwtFullClaims()
		mod(&c)
		tok, err := MintJWT(context.Background(), s, c)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	tests := []struct {
		name   string
		token  string
		keys   map[string]PublicKey // nil: s.keys()
		reason string               // logged reason, after "invalid jwt: "
	}{
		{"empty", "", nil, "bad size"},
		{"alg none, empty signature", b64(hdr("none", "at+jwt", kid)) + "." + p[1] + ".", nil, "alg is not ES256 or PS256"},
		{"alg none, no kid", b64(`{"alg":"none"}`) + "." + p[1] + ".", nil, "alg is not ES256 or PS256"},
		{"alg none with the real signature", b64(hdr("none", "at+jwt", kid)) + "." + p[1] + "." + p[2], nil, "alg is not ES256 or PS256"},
		{"HS256 keyed with uncompressed point", hs256(uncompressed), nil, "alg is not ES256 or PS256"},
		{"HS256 keyed with PKIX DER", hs256(der), nil, "alg is not ES256 or PS256"},
		{"HS256 keyed with PEM", hs256(pemKey), nil, "alg is not ES256 or PS256"},
		{"HS256 keyed with JWK JSON", hs256(jwkJSON), nil, "alg is not ES256 or PS256"},
		{"ES256 token, header alg PS256", b64(hdr("PS256", "at+jwt", kid)) + "." + p[1] + "." + p[2], nil, "alg is not the one of the key for kid"},
		{"ES256 signature, header alg PS256", jwtForge(s.priv, hdr("PS256", "at+jwt", kid), string(payloadJSON)), nil, "alg is not the one of the key for kid"},
		{"alg es256 lowercase", jwtForge(s.priv, hdr("es256", "at+jwt", kid), string(payloadJSON)), nil, "alg is not ES256 or PS256"},
		{"alg ES384", jwtForge(s.priv, hdr("ES384", "at+jwt", kid), string(payloadJSON)), nil, "alg is not ES256 or PS256"},
		{"alg missing", jwtForge(s.priv, `{"typ":"at+jwt","kid":"`+kid+`"}`, string(payloadJSON)), nil, "alg is not ES256 or PS256"},
		{"alg not a string", jwtForge(s.priv, `{"alg":["ES256"],"typ":"at+jwt","kid":"`+kid+`"}`, string(payloadJSON)), nil, "malformed header"},
		{"alg only in other case", jwtForge(s.priv, `{"ALG":"ES256","typ":"at+jwt","kid":"`+kid+`"}`, string(payloadJSON)), nil, "alg is not ES256 or PS256"},
		{"duplicate alg", jwtForge(s.priv, `{"alg":"none","alg":"ES256","typ":"at+jwt","kid":"`+kid+`"}`, string(payloadJSON)), nil, "malformed header"},
		{"typ JWT", jwtForge(s.priv, hdr("ES256", "JWT", kid), string(payloadJSON)), nil, "typ is not at+jwt"},
		{"typ missing", jwtForge(s.priv, `{"alg":"ES256","kid":"`+kid+`"}`, string(payloadJSON)), nil, "typ is not at+jwt"},
		{"typ with space", jwtForge(s.priv, hdr("ES256", "at+jwt ", kid), string(payloadJSON)), nil, "typ is not at+jwt"},
		{"crit header", jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`","crit":["exp"],"exp":1}`, string(payloadJSON)), nil, "unsupported crit header"},
		{"unknown kid", jwtForge(s.priv, hdr("ES256", "at+jwt", "nope"), string(payloadJSON)), nil, "unknown kid"},
		{"kid of a retired key", retired, nil, "unknown kid"},
		{"b64 false", jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`","b64":false}`, string(payloadJSON)), nil, "unsupported b64 header"},
		{"b64 false, crit b64", jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`","b64":false,"crit":["b64"]}`, string(payloadJSON)), nil, "unsupported crit header"},
		{"embedded jwk go-jose cannot read", jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`","jwk":{"kty":"EC"}}`, string(payloadJSON)), nil, "malformed header"},
		{"kid missing", jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt"}`, string(payloadJSON)), nil, "no kid"},
		{"kid not a string", jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":1}`, string(payloadJSON)), nil, "malformed header"},
		{"no keys", good, map[string]PublicKey{}, "unknown kid"},
		{"kid maps to another key", good, map[string]PublicKey{kid: newJWTSigner(t).pub}, "bad signature"},
		{"kid maps to a P-384 key", good, map[string]PublicKey{kid: &p384.PublicKey}, "key for kid is not an ES256 or PS256 key"},
		{"header not JSON", jwtForge(s.priv, `alg=ES256`, string(payloadJSON)), nil, "malformed header"},
		{"header JSON array", jwtForge(s.priv, `["ES256"]`, string(payloadJSON)), nil, "malformed header"},
		{"header trailing data", jwtForge(s.priv, goodHdr+`{}`, string(payloadJSON)), nil, "malformed header"},
		{"header invalid UTF-8", jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`","x":"`+"\xff"+`"}`, string(payloadJSON)), nil, "malformed header"},
		{"tampered payload", p[0] + "." + b64(tamperedPayload) + "." + p[2], nil, "bad signature"},
		{"tampered header", b64(`{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`","x":1}`) + "." + p[1] + "." + p[2], nil, "bad signature"},
		{"tampered signature r", jwtWithSig(good, flip(goodSig, 3)), nil, "bad signature"},
		{"tampered signature s", jwtWithSig(good, flip(goodSig, 63)), nil, "bad signature"},
		{"signature of another token", p[0] + "." + strings.Split(mint(func(c *AccessClaims) { c.Subject = "other" }), ".")[1] + "." + p[2], nil, "bad signature"},
		{"signature all zero", jwtWithSig(good, make([]byte, 64)), nil, "bad signature"},
		{"signature r = n", jwtWithSig(good, sigWith(n, sv)), nil, "bad signature"},
		{"signature s = n", jwtWithSig(good, sigWith(r, n)), nil, "signature is not low-S"},
		{"signature s = n/2 + 1", jwtWithSig(good, sigWith(r, new(big.Int).Add(new(big.Int).Rsh(n, 1), big.NewInt(1)))), nil, "signature is not low-S"},
		{"high-S twin of a valid token", jwtWithSig(good, jwtTwin(goodSig)), nil, "signature is not low-S"},
		{"signature r + n overflow", jwtWithSig(good, slices.Concat(slices.Repeat([]byte{0xff}, 32), goodSig[32:])), nil, "bad signature"},
		{"signature 63 bytes", jwtWithSig(good, goodSig[:63]), nil, "signature is not 64 bytes"},
		{"signature 65 bytes", jwtWithSig(good, append(slices.Clone(goodSig), 0)), nil, "signature is not 64 bytes"},
		{"signature 65 bytes leading zero", jwtWithSig(good, append([]byte{0}, goodSig...)), nil, "signature is not 64 bytes"},
		{"signature ASN.1 DER", jwtWithSig(good, asn1Sig), nil, "signature is not 64 bytes"},
		{"signature empty", p[0] + "." + p[1] + ".", nil, "signature is not 64 bytes"},
		{"signature padded", good + "=", nil, "signature is not 64 bytes"},
		{"signature non-canonical base64", nonCanonical, nil, "signature is not base64url"},
		{"signature std base64", p[0] + "." + p[1] + "." + base64.RawStdEncoding.EncodeToString(slices.Repeat([]byte{0xfb}, 64)), nil, "signature is not base64url"},
		{"truncated by one", good[:len(good)-1], nil, "signature is not 64 bytes"},
		{"truncated to half", good[:len(good)/2], nil, "not three parts"},
		{"truncated to header", p[0], nil, "not three parts"},
		{"two parts", p[0] + "." + p[1], nil, "not three parts"},
		{"four parts", good + "." + p[2], nil, "not three parts"},
		{"four parts, empty last", good + ".", nil, "not three parts"},
		{"leading dot", "." + good, nil, "not three parts"},
		{"whitespace", good + " ", nil, "signature is not 64 bytes"},
		{"Bearer prefix", "Bearer " + good, nil, "header is not base64url"},
		{"high-bit garbage", "eyJ\xff\xfe\x80.\xc3\x28\xa0\xa1.\xf0\x28\x8c\xbc", nil, "header is not base64url"},
		{"high-bit garbage in signature", p[0] + "." + p[1] + "." + p[2][:80] + "\xff\xfe\xfd\xfc\xfb\xfa", nil, "signature is not base64url"},
		{"NUL bytes", p[0] + "\x00." + p[1] + "." + p[2], nil, "header is not base64url"},
		{"JWS JSON serialization", `{"protected":"` + p[0] + `","payload":"` + p[1] + `","signature":"` + p[2] + `"}`, nil, "not three parts"},
		{"too long", p[0] + "." + b64(strings.Repeat("x", 9000)) + "." + p[2], nil, "bad size"},
		{"expired", mint(func(c *AccessClaims) { c.IssuedAt -= 7200; c.NotBefore = 0; c.ExpiresAt = jwtNow.Unix() - 30 }), nil, "expired"},
		{"nbf in the future", mint(func(c *AccessClaims) { c.NotBefore = jwtNow.Unix() + 31 }), nil, "not yet valid (nbf)"},
		{"iat in the future", mint(func(c *AccessClaims) { c.IssuedAt = jwtNow.Unix() + 31; c.NotBefore = 0 }), nil, "issued in the future (iat)"},
		{"missing exp", claimsWith(func(m map[string]any) { delete(m, "exp") }), nil, "missing exp"},
		{"missing iat", claimsWith(func(m map[string]any) { delete(m, "iat") }), nil, "missing iat"},
		{"missing iss", claimsWith(func(m map[string]any) { delete(m, "iss") }), nil, "missing iss"},
		{"missing sub", claimsWith(func(m map[string]any) { delete(m, "sub") }), nil, "missing sub"},
		{"missing aud", claimsWith(func(m map[string]any) { delete(m, "aud") }), nil, "missing aud"},
		{"missing client_id", claimsWith(func(m map[string]any) { delete(m, "client_id") }), nil, "missing client_id"},
		{"missing jti", claimsWith(func(m map[string]any) { delete(m, "jti") }), nil, "missing jti"},
		{"aud empty array", claimsWith(func(m map[string]any) { m["aud"] = []string{} }), nil, "missing aud"},
		{"aud empty string", claimsWith(func(m map[string]any) { m["aud"] = "" }), nil, "empty aud value"},
		{"aud number", claimsWith(func(m map[string]any) { m["aud"] = 7 }), nil, "malformed claims"},
		{"sub null", claimsWith(func(m map[string]any) { m["sub"] = nil }), nil, "malformed claims"},
		{"sub number", claimsWith(func(m map[string]any) { m["sub"] = 1 }), nil, "malformed claims"},
		{"exp string", claimsWith(func(m map[string]any) { m["exp"] = fmt.Sprint(jwtNow.Unix() + 60) }), nil, "malformed claims"},
		{"exp fractional", claimsWith(func(m map[string]any) { m["exp"] = float64(jwtNow.Unix()) + 60.5 }), nil, "malformed claims"},
		{"exp overflows int64", jwtForge(s.priv, goodHdr, strings.Replace(string(payloadJSON), `"exp":`, `"exp":99999999999999999999`, 1)), nil, "malformed claims"},
		{"duplicate sub", jwtForge(s.priv, goodHdr, strings.Replace(string(payloadJSON), `"sub":`, `"sub":"admin","sub":`, 1)), nil, "malformed claims"},
		{"claims JSON array", jwtForge(s.priv, goodHdr, `[`+string(payloadJSON)+`]`), nil, "malformed claims"},
		{"claims not JSON", jwtForge(s.priv, goodHdr, `sub=admin`), nil, "malformed claims"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys := tt.keys
			if keys == nil {
				keys = s.keys()
			}
			c, err := VerifyJWT(tt.token, keys, jwtNow)
			if !errors.Is(err, ErrInvalidJWT) {
				t.Fatalf("VerifyJWT = %+v, %v; want ErrInvalidJWT", c, err)
			}
			if !reflect.DeepEqual(c, AccessClaims{}) {
				t.Errorf("claims returned with an error: %+v", c)
			}
			msg := err.Error()
			for _, part := range strings.Split(tt.token, ".") {
				if len(part) >= 8 && strings.Contains(msg, part) {
					t.Errorf("error %q contains part of the token", msg)
				}
			}
			if want := ErrInvalidJWT.Error() + ": " + tt.reason; msg != want {
				t.Errorf("error = %q, want %q", msg, want)
			}
		})
	}

	// The untampered token does verify (so the cases above fail for the
	// reason they name, not because the fixture is broken).
	if _, err := VerifyJWT(good, s.keys(), jwtNow); err != nil {
		t.Fatalf("good token: %v", err)
	}
}

func TestVerifyJWTAccepts(t *testing.T) {
	s := newJWTSigner(t)
	kid := KeyID(s.pub)
	c := jwtMinClaims()
	payload, _ := json.Marshal(c)
	other := newJWTSigner(t)
	keys := map[string]PublicKey{kid: s.pub, KeyID(other.pub): other.pub}
	exp := time.Unix(c.ExpiresAt, 0)
	tests := []struct {
		name  string
		token func() string
		now   time.Time
	}{
		{"typ application/at+jwt", func() string {
			return jwtForge(s.priv, `{"alg":"ES256","typ":"application/at+jwt","kid":"`+kid+`"}`, string(payload))
		}, jwtNow},
		{"typ upper case", func() string {
			return jwtForge(s.priv, `{"alg":"ES256","typ":"AT+JWT","kid":"`+kid+`"}`, string(payload))
		}, jwtNow},
		{"extra header and claims", func() string {
			return jwtForge(s.priv, `{"kid":"`+kid+`","x5t":"abc","typ":"at+jwt","alg":"ES256"}`,
				strings.TrimSuffix(string(payload), "}")+`,"acr":"1","ISS":"ignored","auth_time":5}`)
		}, jwtNow},
		{"aud as array", func() string {
			return jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`"}`,
				strings.Replace(string(payload), `"aud":"coffer"`, `"aud":["coffer"]`, 1))
		}, jwtNow},
		{"second key of the set", func() string {
			tok, err := MintJWT(context.Background(), other, c)
			if err != nil {
				t.Fatal(err)
			}
			return tok
		}, jwtNow},
		{"expired within leeway", nil, exp.Add(29 * time.Second)},
		{"iat slightly ahead", nil, jwtNow.Add(-30 * time.Second)},
		{"just before exp", nil, exp.Add(-time.Second)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var token string
			if tt.token != nil {
				token = tt.token()
			} else {
				var err error
				if token, err = MintJWT(context.Background(), s, c); err != nil {
					t.Fatal(err)
				}
			}
			got, err := VerifyJWT(token, keys, tt.now)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c) {
				t.Errorf("claims = %+v, want %+v", got, c)
			}
		})
	}
}

func TestVerifyJWTTimeBoundaries(t *testing.T) {
	s := newJWTSigner(t)
	c := jwtMinClaims()
	c.NotBefore = jwtNow.Add(time.Minute).Unix()
	c.ExpiresAt = jwtNow.Add(time.Hour).Unix()
	token, err := MintJWT(context.Background(), s, c)
	if err != nil {
		t.Fatal(err)
	}
	nbf, exp := time.Unix(c.NotBefore, 0), time.Unix(c.ExpiresAt, 0)
	tests := []struct {
		now time.Time
		ok  bool
	}{
		{nbf.Add(-31 * time.Second), false},
		{nbf.Add(-30 * time.Second), true},
		{nbf, true},
		{exp.Add(29 * time.Second), true},
		{exp.Add(30 * time.Second), false},
		{exp.Add(24 * time.Hour), false},
		{time.Unix(0, 0), false},
	}
	for _, tt := range tests {
		_, err := VerifyJWT(token, s.keys(), tt.now)
		if (err == nil) != tt.ok {
			t.Errorf("now = nbf%+ds/exp%+ds: err = %v, want ok=%v", tt.now.Unix()-c.NotBefore, tt.now.Unix()-c.ExpiresAt, err, tt.ok)
		}
	}
}

func TestMintJWTErrors(t *testing.T) {
	errHSM := errors.New("CKR_DEVICE_REMOVED")
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := []struct {
		name      string
		setup     func(s *jwtSoftSigner)
		claims    func(c *AccessClaims)
		wantErr   error // checked with errors.Is when set
		wantCalls int
	}{
		{name: "signer error propagates", setup: func(s *jwtSoftSigner) { s.err = errHSM }, wantErr: errHSM, wantCalls: 1},
		{name: "signer returns 63 bytes", setup: func(s *jwtSoftSigner) { s.mangle = func(b []byte) []byte { return b[:63] } }, wantCalls: 1},
		{name: "signer returns DER", setup: func(s *jwtSoftSigner) {
			s.mangle = func(b []byte) []byte {
				d, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(b[:32]), new(big.Int).SetBytes(b[32:])})
				return d
			}
		}, wantCalls: 1},
		{name: "public key is P-384", setup: func(s *jwtSoftSigner) { s.pub = &p384.PublicKey }},
		{name: "public key is nil", setup: func(s *jwtSoftSigner) { s.pub = nil }},
		{name: "missing iss", claims: func(c *AccessClaims) { c.Issuer = "" }},
		{name: "missing sub", claims: func(c *AccessClaims) { c.Subject = "" }},
		{name: "missing aud", claims: func(c *AccessClaims) { c.Audience = nil }},
		{name: "empty aud value", claims: func(c *AccessClaims) { c.Audience = []string{"a", ""} }},
		{name: "missing client_id", claims: func(c *AccessClaims) { c.ClientID = "" }},
		{name: "missing jti", claims: func(c *AccessClaims) { c.JTI = "" }},
		{name: "missing iat", claims: func(c *AccessClaims) { c.IssuedAt = 0 }},
		{name: "missing exp", claims: func(c *AccessClaims) { c.ExpiresAt = 0 }},
		{name: "exp before iat", claims: func(c *AccessClaims) { c.ExpiresAt = c.IssuedAt - 1 }},
		{name: "exp equals iat", claims: func(c *AccessClaims) { c.ExpiresAt = c.IssuedAt }},
		{name: "nbf after exp", claims: func(c *AccessClaims) { c.NotBefore = c.ExpiresAt + 1 }},
		{name: "negative nbf", claims: func(c *AccessClaims) { c.NotBefore = -1 }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newJWTSigner(t)
			if tt.setup != nil {
				tt.setup(s)
			}
			c := jwtFullClaims()
			if tt.claims != nil {
				tt.claims(&c)
			}
			token, err := MintJWT(context.Background(), s, c)
			if err == nil || token != "" {
				t.Fatalf("MintJWT = %q, %v; want an error", token, err)
			}
			if tt.wantErr != nil && !errors.Is(err, tt.wantErr) {
				t.Errorf("error %v does not wrap %v", err, tt.wantErr)
			}
			if s.calls() != tt.wantCalls {
				t.Errorf("Sign called %d times, want %d", s.calls(), tt.wantCalls)
			}
		})
	}
	if _, err := MintJWT(context.Background(), nil, jwtFullClaims()); err == nil {
		t.Error("MintJWT with a nil signer succeeded")
	}
}

func TestMintJWTOneSignCallEach(t *testing.T) {
	s := newJWTSigner(t)
	const n = 20
	var wg sync.WaitGroup
	tokens := make([]string, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := jwtMinClaims()
			c.JTI = fmt.Sprint("s", i)
			tok, err := MintJWT(context.Background(), s, c)
			if err != nil {
				t.Error(err)
			}
			tokens[i] = tok
		}()
	}
	wg.Wait()
	if s.calls() != n {
		t.Errorf("%d mints made %d Sign calls", n, s.calls())
	}
	for i, tok := range tokens {
		c, err := VerifyJWT(tok, s.keys(), jwtNow)
		if err != nil || c.JTI != fmt.Sprint("s", i) {
			t.Errorf("token %d: %+v, %v", i, c, err)
		}
	}
}

func TestLooksLikeJWT(t *testing.T) {
	s := newJWTSigner(t)
	good, err := MintJWT(context.Background(), s, jwtMinClaims())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		in   string
		want bool
	}{
		{good, true},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.", true}, // alg none still routes to VerifyJWT
		{"eyJ.e.s", true},
		{"", false},
		{"eyJ", false},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0", false},
		{"eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0.a.b", false},
		{"eyJhbGciOiJub25lIn0..sig", false},
		{".eyJ.sig", false},
		{"abc.def.ghi", false},
		{"cfa_0123456789abcdef_0123456789", false},
		{"cfs_eyJ.a.b", false},
		{"eyJ+/.abc.def", false},
		{"eyJa=.abc.def", false},
		{"eyJa.ab c.def", false},
		{"eyJ\xff.a.b", false},
		{"eyJa.b.c" + strings.Repeat("A", 9000), false},
	}
	for _, tt := range tests {
		if got := LooksLikeJWT(tt.in); got != tt.want {
			t.Errorf("LooksLikeJWT(%.40q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestAccessClaimsJSON(t *testing.T) {
	full := jwtFullClaims()
	// Every field is set, so a field added to AccessClaims but not to
	// UnmarshalJSON fails the round trip.
	v := reflect.ValueOf(full)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("fixture leaves %s zero", v.Type().Field(i).Name)
		}
	}
	tests := []struct {
		name    string
		in      AccessClaims
		wantAud string
	}{
		{"full", full, `"https://api.example"`},
		{"two audiences", func() AccessClaims { c := full; c.Audience = []string{"a", "b"}; return c }(), `["a","b"]`},
		{"minimal", jwtMinClaims(), `"coffer"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := json.Marshal(tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var m map[string]json.RawMessage
			if err := json.Unmarshal(b, &m); err != nil {
				t.Fatal(err)
			}
			if string(m["aud"]) != tt.wantAud {
				t.Errorf("aud = %s, want %s (in %s)", m["aud"], tt.wantAud, b)
			}
			for _, k := range []string{"iss", "sub", "client_id", "iat", "exp", "jti"} {
				if _, ok := m[k]; !ok {
					t.Errorf("%s missing from %s", k, b)
				}
			}
			var back AccessClaims
			if err := json.Unmarshal(b, &back); err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(back, tt.in) {
				t.Errorf("round trip: %+v, want %+v", back, tt.in)
			}
		})
	}
	for _, bad := range []string{
		`{"sub":"a","sub":"b"}`,
		`{"aud":{"x":1}}`,
		`{"iat":"1"}`,
		`[]`,
		`{"sub":"a"} {}`,
		"{\"sub\":\"\xff\"}",
	} {
		var c AccessClaims
		if err := json.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("Unmarshal(%s) succeeded: %+v", bad, c)
		}
	}
	var c AccessClaims
	if err := json.Unmarshal([]byte(`{"SUB":"admin","Iss":"x","sub":"u"}`), &c); err != nil || c.Subject != "u" || c.Issuer != "" {
		t.Errorf("member names are not matched exactly: %+v, %v", c, err)
	}
}

func TestMetadata(t *testing.T) {
	want := `{"issuer":"https://coffer.example","token_endpoint":"https://coffer.example/oauth2/token",` +
		`"introspection_endpoint":"https://coffer.example/oauth2/introspect",` +
		`"jwks_uri":"https://coffer.example/.well-known/jwks.json","response_types_supported":[],` +
		`"grant_types_supported":["client_credentials","urn:ietf:params:oauth:grant-type:token-exchange"],` +
		`"token_endpoint_auth_methods_supported":["client_secret_basic","client_secret_post"],` +
		`"introspection_endpoint_auth_methods_supported":["none"],` +
		`"subject_types_supported":["public"],"id_token_signing_alg_values_supported":["ES256"]}`
	tests := []struct{ issuer, wantIssuer string }{
		{"https://coffer.example", "https://coffer.example"},
		{"https://coffer.example/", "https://coffer.example/"},
	}
	for _, tt := range tests {
		m := Metadata(tt.issuer)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		w := strings.Replace(want, `"issuer":"https://coffer.example"`, `"issuer":"`+tt.wantIssuer+`"`, 1)
		if string(b) != w {
			t.Errorf("Metadata(%q) =\n%s\nwant\n%s", tt.issuer, b, w)
		}
	}
	// Fresh slices per call: a caller mutating one document cannot
	// change another.
	a := Metadata("x")
	a.GrantTypesSupported[0] = "password"
	if Metadata("x").GrantTypesSupported[0] != "client_credentials" {
		t.Error("Metadata shares slices between calls")
	}
}

func FuzzVerifyJWT(f *testing.F) {
	s := newJWTSigner(f)
	keys := s.keys()
	kid := KeyID(s.pub)
	good, err := MintJWT(context.Background(), s, jwtFullClaims())
	if err != nil {
		f.Fatal(err)
	}
	p := strings.Split(good, ".")
	f.Add(good)
	f.Add(p[0] + "." + p[1] + ".")
	f.Add(p[0] + "." + p[1])
	f.Add(good + "." + p[2])
	f.Add(jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`"}`, `{"aud":["a",1],"exp":1e99}`))
	f.Add(jwtForge(s.priv, `{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`"}`, `{"sub":{"a":[[[[]]]]}}`))
	f.Add(jwtEnc.EncodeToString([]byte(`{"alg":"none"}`)) + "." + p[1] + ".")
	f.Add("eyJ\xff.\x00.\x80")
	f.Add("")
	f.Fuzz(func(t *testing.T, token string) {
		c, err := VerifyJWT(token, keys, jwtNow)
		if err != nil {
			checkJWTError(t, err)
			return
		}
		if !LooksLikeJWT(token) {
			t.Fatalf("verified a token that does not look like a JWT: %q", token)
		}
		if jwtMissingClaim(&c) != "" {
			t.Fatalf("verified claims miss a required claim: %+v", c)
		}
	})
}

func BenchmarkVerifyJWT(b *testing.B) {
	s := newJWTSigner(b)
	token, err := MintJWT(context.Background(), s, jwtFullClaims())
	if err != nil {
		b.Fatal(err)
	}
	keys := s.keys()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := VerifyJWT(token, keys, jwtNow); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMintJWT(b *testing.B) {
	s := newJWTSigner(b)
	c := jwtFullClaims()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MintJWT(ctx, s, c); err != nil {
			b.Fatal(err)
		}
		s.mu.Lock()
		s.digests = s.digests[:0]
		s.mu.Unlock()
	}
}

// TestCheckSigner: a signer whose signatures do not verify with its public
// key is caught once, at start, instead of on every mint.
func TestCheckSigner(t *testing.T) {
	tests := []struct {
		name  string
		setup func(s *jwtSoftSigner)
		ok    bool
	}{
		{"good", nil, true},
		{"bad signature", func(s *jwtSoftSigner) { s.mangle = func(b []byte) []byte { b[10] ^= 1; return b } }, false},
		{"key differs from its public key", func(s *jwtSoftSigner) { s.pub = newJWTSigner(t).pub }, false},
		{"short signature", func(s *jwtSoftSigner) { s.mangle = func(b []byte) []byte { return b[:63] } }, false},
		{"high-S signatures", func(s *jwtSoftSigner) { s.highS = true }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newJWTSigner(t)
			if tt.setup != nil {
				tt.setup(s)
			}
			if err := CheckSigner(context.Background(), s); (err == nil) != tt.ok {
				t.Fatalf("CheckSigner = %v, want ok %v", err, tt.ok)
			}
		})
	}
}

// TestES256LowS: whatever form of s the HSM returns, a minted token
// carries the low-S one and verifies; its high-S twin, which crypto/ecdsa
// and go-jose accept, is refused.
func TestES256LowS(t *testing.T) {
	tests := []struct {
		name  string
		highS bool
	}{
		{"HSM returns s at random", false},
		{"HSM always returns high s", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newJWTSigner(t)
			s.highS = tt.highS
			for i := range 32 {
				c := jwtMinClaims()
				c.JTI = fmt.Sprint("s", i)
				token, err := MintJWT(context.Background(), s, c)
				if err != nil {
					t.Fatal(err)
				}
				sig, _ := jwtEnc.DecodeString(jwtParts(t, token)[2])
				if !jwtIsLowS(sig) {
					t.Fatalf("token %d: minted signature is high-S", i)
				}
				if _, err := VerifyJWT(token, s.keys(), jwtNow); err != nil {
					t.Fatalf("token %d: %v", i, err)
				}
				twin := jwtWithSig(token, jwtTwin(sig))
				d := sha256.Sum256([]byte(token[:strings.LastIndexByte(token, '.')]))
				if !ecdsa.VerifyASN1(s.pub, d[:], jwtASN1(jwtTwin(sig))) {
					t.Fatal("the twin is not a valid ECDSA signature: the test proves nothing")
				}
				_, err = VerifyJWT(twin, s.keys(), jwtNow)
				if want := ErrInvalidJWT.Error() + ": signature is not low-S"; err == nil || err.Error() != want {
					t.Fatalf("token %d: high-S twin: %v, want %q", i, err, want)
				}
			}
		})
	}
}

func jwtASN1(sig []byte) []byte {
	b, _ := asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])})
	return b
}

func TestES256ToLowS(t *testing.T) {
	n := elliptic.P256().Params().N
	half := new(big.Int).Rsh(n, 1)
	sig := func(s *big.Int) []byte {
		b := make([]byte, 64)
		b[31] = 7 // r
		s.FillBytes(b[32:])
		return b
	}
	add := func(a *big.Int, d int64) *big.Int { return new(big.Int).Add(a, big.NewInt(d)) }
	max := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 256), big.NewInt(1))
	tests := []struct {
		name    string
		s, want *big.Int
		lowS    bool
	}{
		{"s = 1", big.NewInt(1), big.NewInt(1), true},
		{"s = n/2", half, half, true},
		{"s = n/2 + 1", add(half, 1), half, false}, // n is odd: n − (⌊n/2⌋+1) = ⌊n/2⌋
		{"s = n − 1", add(n, -1), big.NewInt(1), false},
		{"s = n, invalid, unchanged", n, n, false},
		{"s = 2^256 − 1, invalid, unchanged", max, max, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := sig(tt.s)
			if got := es256LowS(in); got != tt.lowS {
				t.Errorf("es256LowS = %v, want %v", got, tt.lowS)
			}
			orig := slices.Clone(in)
			if got := es256ToLowS(in); !slices.Equal(got, sig(tt.want)) {
				t.Errorf("es256ToLowS: s = %x, want %x", got[32:], tt.want)
			}
			if !slices.Equal(in, orig) {
				t.Error("es256ToLowS changed its argument")
			}
		})
	}
}

// TestSignAuditLowS: audit checkpoints are signed in the low-S form too,
// whatever the HSM returns (the fake keys return either, like an HSM).
func TestSignAuditLowS(t *testing.T) {
	e := newEnvKeys(t, newFakeKeys())
	pub, ok := e.keys.SigningPublicKey().(*ecdsa.PublicKey)
	if !ok {
		t.Fatal("fake signing key is not ECDSA")
	}
	for i := range 32 {
		digest := sha256.Sum256([]byte(fmt.Sprint("checkpoint ", i)))
		sig, kid, err := e.svc.SignAudit(context.Background(), digest[:])
		if err != nil {
			t.Fatal(err)
		}
		if kid != KeyID(pub) || len(sig) != 64 || !jwtIsLowS(sig) || !ecdsa.VerifyASN1(pub, digest[:], jwtASN1(sig)) {
			t.Fatalf("checkpoint %d: kid %s, signature %x (low-S %v)", i, kid, sig, jwtIsLowS(sig))
		}
	}
}
