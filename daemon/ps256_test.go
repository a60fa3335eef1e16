package daemon

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
	josejwt "github.com/go-jose/go-jose/v4/jwt"
)

// rsaSoftSigner is a software RSA JWTSigner, as the HSM signs on a token
// that lacks P-256 ECDSA.
type rsaSoftSigner struct{ key *rsa.PrivateKey }

func newRSASigner(t *testing.T) *rsaSoftSigner {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	return &rsaSoftSigner{key: k}
}

func (s *rsaSoftSigner) Sign(_ context.Context, digest []byte) ([]byte, error) {
	return rsa.SignPSS(rand.Reader, s.key, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
}

func (s *rsaSoftSigner) SigningPublicKey() PublicKey { return &s.key.PublicKey }

// goJoseJWKS reads a JWK set the way a relying party's JOSE library does.
func goJoseJWKS(t *testing.T, set JWKSet) jose.JSONWebKeySet {
	t.Helper()
	doc, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	var js jose.JSONWebKeySet
	if err := json.Unmarshal(doc, &js); err != nil {
		t.Fatalf("go-jose cannot read JWKS %s: %v", doc, err)
	}
	return js
}

// TestPS256JWT: an RSA signing key makes PS256 JWTs whose kid is the
// RFC 7638 thumbprint of an RSA JWK; coffer and go-jose both verify them
// with the JWK set, and the key cannot be used with another alg.
func TestPS256JWT(t *testing.T) {
	s := newRSASigner(t)
	claims := jwtFullClaims()
	token, err := MintJWT(context.Background(), s, claims)
	if err != nil {
		t.Fatal(err)
	}
	kid := KeyID(s.SigningPublicKey())
	p := jwtParts(t, token)
	if header, _ := jwtEnc.DecodeString(p[0]); string(header) != `{"alg":"PS256","kid":"`+kid+`","typ":"at+jwt"}` {
		t.Fatalf("header = %s", header)
	}
	if sig, _ := jwtEnc.DecodeString(p[2]); len(sig) != 384 {
		t.Fatalf("signature is %d bytes, want 384", len(sig))
	}

	jwk := PublicJWK(s.SigningPublicKey())
	if jwk.Kty != "RSA" || jwk.Alg != "PS256" || jwk.Use != "sig" || jwk.Kid != kid || jwk.Crv != "" || jwk.X != "" || jwk.E != "AQAB" {
		t.Fatalf("JWK = %+v", jwk)
	}
	js := goJoseJWKS(t, JWKSet{Keys: []JWK{jwk}})
	keys := js.Key(kid)
	if len(keys) != 1 || !keys[0].Valid() || keys[0].Algorithm != "PS256" {
		t.Fatalf("go-jose JWKS key by kid: %+v", keys)
	}
	// The kid is what go-jose computes as the RFC 7638 thumbprint.
	tp, err := keys[0].Thumbprint(crypto.SHA256)
	if err != nil || base64.RawURLEncoding.EncodeToString(tp) != kid {
		t.Fatalf("go-jose thumbprint %x (%v), kid %s", tp, err, kid)
	}
	// And so is the ES256 one.
	ec := newJWTSigner(t)
	ecKeys := goJoseJWKS(t, JWKSet{Keys: []JWK{PublicJWK(ec.pub)}}).Keys
	if tp, _ := ecKeys[0].Thumbprint(crypto.SHA256); base64.RawURLEncoding.EncodeToString(tp) != KeyID(ec.pub) {
		t.Fatal("the ES256 kid is not go-jose's thumbprint")
	}

	tok, err := josejwt.ParseSigned(token, []jose.SignatureAlgorithm{jose.PS256})
	if err != nil {
		t.Fatal(err)
	}
	var std josejwt.Claims
	if err := tok.Claims(keys[0], &std); err != nil {
		t.Fatalf("go-jose verify: %v", err)
	}
	if err := std.ValidateWithLeeway(josejwt.Expected{Issuer: claims.Issuer, ID: claims.JTI, Time: jwtNow}, 0); err != nil {
		t.Errorf("go-jose claims: %v", err)
	}

	ours := map[string]PublicKey{kid: s.SigningPublicKey(), KeyID(ec.pub): ec.pub}
	if got, err := VerifyJWT(token, ours, jwtNow); err != nil || got.JTI != claims.JTI {
		t.Fatalf("VerifyJWT: %+v, %v", got, err)
	}
	ecToken, err := MintJWT(context.Background(), ec, claims)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyJWT(ecToken, ours, jwtNow); err != nil {
		t.Fatalf("VerifyJWT of the ES256 token with both keys: %v", err)
	}

	rehead := func(alg, kid string) string {
		return jwtEnc.EncodeToString([]byte(`{"alg":"`+alg+`","typ":"at+jwt","kid":"`+kid+`"}`)) + "." + p[1] + "." + p[2]
	}
	for _, tc := range []struct {
		name, token, reason string
	}{
		{"PS256 signature under an ES256 header", rehead("ES256", kid), "alg is not the one of the key for kid"},
		{"ES256 header naming the RSA key's kid", strings.Replace(ecToken, strings.Split(ecToken, ".")[0], jwtEnc.EncodeToString([]byte(`{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`"}`)), 1), "alg is not the one of the key for kid"},
		{"PS256 header naming the EC key's kid", rehead("PS256", KeyID(ec.pub)), "alg is not the one of the key for kid"},
		{"RS256", rehead("RS256", kid), "alg is not ES256 or PS256"},
		{"PS384", rehead("PS384", kid), "alg is not ES256 or PS256"},
		{"signature cut", token[:len(token)-4], "signature is not 384 bytes"},
		{"payload changed", p[0] + "." + jwtEnc.EncodeToString([]byte(`{"iss":"x"}`)) + "." + p[2], "bad signature"},
	} {
		if _, err := VerifyJWT(tc.token, ours, jwtNow); err == nil || err.Error() != ErrInvalidJWT.Error()+": "+tc.reason {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.reason)
		}
	}

	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	if _, err := jwtKeyID(&small.PublicKey); err == nil {
		t.Error("a 1024-bit RSA key has a kid")
	}
	if err := CheckSigner(context.Background(), s); err != nil {
		t.Errorf("CheckSigner: %v", err)
	}
	if err := CheckSigner(context.Background(), &rsaSoftSigner{key: newRSASigner(t).key}); err != nil {
		t.Errorf("CheckSigner: %v", err)
	}
}

// TestPS256Service: on keys that sign with RSA (a token without P-256
// ECDSA), the service issues PS256 JWTs, publishes an RSA JWK, accepts
// them as bearers, and signs audit checkpoints PS256; a rotation from an
// EC key to an RSA key keeps both verifying.
func TestPS256Service(t *testing.T) {
	keys := newFakeKeys() // starts with an EC key, like an older token
	e := newIdentityEnvKeys(t, keys)
	ctx := context.Background()
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "bob"})
	esTok, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}

	keys.mu.Lock()
	keys.sigRSA = true // the token's scheme is now PS256
	keys.mu.Unlock()
	if _, err := e.svc.RotateSigningKey(ctx, e.grant(t, ActManageKeys, Resource{})); err != nil {
		t.Fatal(err)
	}
	psTok, err := e.svc.ClientCredentials(ctx, iss.ClientID, iss.ClientSecret, "")
	if err != nil {
		t.Fatal(err)
	}
	h, _ := jwtEnc.DecodeString(strings.Split(psTok.Token, ".")[0])
	if !strings.Contains(string(h), `"alg":"PS256"`) {
		t.Fatalf("JWT header after the rotation: %s", h)
	}

	set := e.svc.JWKS()
	if len(set.Keys) != 2 || set.Keys[0].Kty != "RSA" || set.Keys[0].Alg != "PS256" || set.Keys[1].Kty != "EC" {
		t.Fatalf("JWKS = %+v, want the RSA key first, then the EC key", set)
	}
	js := goJoseJWKS(t, set)
	for _, tc := range []struct {
		token string
		alg   jose.SignatureAlgorithm
	}{{esTok.Token, jose.ES256}, {psTok.Token, jose.PS256}} {
		tok, err := josejwt.ParseSigned(tc.token, []jose.SignatureAlgorithm{jose.ES256, jose.PS256})
		if err != nil {
			t.Fatal(err)
		}
		k := js.Key(tok.Headers[0].KeyID)
		var c josejwt.Claims
		if len(k) != 1 || tok.Headers[0].Algorithm != string(tc.alg) || tok.Claims(k[0], &c) != nil {
			t.Errorf("%s token does not verify with the JWKS (%d keys for its kid)", tc.alg, len(k))
		}
		if p := e.bearer(t, tc.token); p.Token.Kind != SessionOAuth2 {
			t.Errorf("%s bearer: kind %s", tc.alg, p.Token.Kind)
		}
	}

	digest := sha256.Sum256([]byte("checkpoint"))
	sig, kid, err := e.svc.SignAudit(ctx, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	pub, ok := e.keys.SigningPublicKey().(*rsa.PublicKey)
	if !ok || kid != set.Keys[0].Kid || rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, &rsa.PSSOptions{SaltLength: 32}) != nil {
		t.Fatalf("audit checkpoint signature: kid %s, %d bytes", kid, len(sig))
	}
	hk, err := e.svc.HSMKeys(ctx, e.grant(t, ActManageKeys, Resource{}))
	if err != nil || len(hk.SigningKeys) != 2 || hk.SigningKeys[0].Alg != "PS256" || hk.SigningKeys[1].Alg != "ES256" {
		t.Fatalf("HSMKeys signing keys %+v, %v; want PS256 (current), ES256", hk.SigningKeys, err)
	}
	if hist := e.svc.SigningKeyHistory(); len(hist.Keys) != 2 || hist.Keys[0].Kty != "RSA" {
		t.Fatalf("signing key history %+v", hist)
	}
}
