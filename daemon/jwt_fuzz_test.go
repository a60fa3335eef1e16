package daemon

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// jwtReasons are every reason VerifyJWT gives: fixed texts, never a part
// of the token.
var jwtReasons = map[string]bool{
	"alg is not ES256 or PS256": true, "alg is not the one of the key for kid": true,
	"bad signature": true, "bad size": true, "expired": true,
	"header is not base64url": true, "issued in the future (iat)": true, "key for kid is not an ES256 or PS256 key": true,
	"malformed claims": true, "malformed header": true, "no kid": true, "not three parts": true,
	"not yet valid (nbf)": true, "payload is not base64url": true, "signature is not 64 bytes": true,
	"signature is not 256 bytes": true, "signature is not 384 bytes": true, // PS256 with RSA-2048 and RSA-3072
	"signature is not base64url": true, "typ is not at+jwt": true, "unknown kid": true,
	"unsupported crit header": true, "missing iss": true, "missing sub": true, "missing aud": true,
	"missing client_id": true, "missing jti": true, "missing iat": true, "missing exp": true,
	"empty aud value": true, "signature is not low-S": true, "unsupported b64 header": true,
}

func checkJWTError(t *testing.T, err error) {
	t.Helper()
	reason, ok := strings.CutPrefix(err.Error(), ErrInvalidJWT.Error()+": ")
	if !errors.Is(err, ErrInvalidJWT) || !ok || !jwtReasons[reason] {
		t.Fatalf("error %q is not ErrInvalidJWT with a fixed reason", err)
	}
}

// FuzzVerifySignedJWT reaches what FuzzVerifyJWT cannot: header and claims
// that carry a valid signature by a trusted key. Whatever they say, a
// token is either refused with a fixed reason or its claims are complete
// and survive minting again: Verify(Mint(claims)) == claims.
func FuzzVerifySignedJWT(f *testing.F) {
	s := newJWTSigner(f)
	kid := KeyID(s.pub)
	hdr := `{"alg":"ES256","typ":"at+jwt","kid":"` + kid + `"}`
	full, _ := jwtFullClaims().MarshalJSON()
	min, _ := jwtMinClaims().MarshalJSON()
	f.Add(hdr, string(full))
	f.Add(hdr, string(min))
	f.Add(`{"alg":"ES256","typ":"application/AT+JWT","kid":"`+kid+`","x":[1,{"y":null}]}`, string(full))
	f.Add(`{"alg":"ES256","typ":"at+jwt","kid":"`+kid+`","crit":["exp"]}`, string(full))
	f.Add(`{"alg":"ES256","alg":"none","typ":"at+jwt","kid":"`+kid+`"}`, string(full))
	f.Add(`{"ALG":"ES256","typ":"at+jwt","kid":"`+kid+`"}`, string(full))
	f.Add(`{"alg":"HS256","typ":"at+jwt","kid":"`+kid+`"}`, string(full))
	f.Add(`{"alg":"ES256","typ":"at+jwt","kid":"nope"}`, string(full))
	f.Add(hdr, `{"iss":"i","sub":"s","aud":["a","b"],"client_id":"c","jti":"j","iat":1,"exp":9999999999,"roles":[],"extra":{"a":[1,2]}}`)
	f.Add(hdr, `{"iss":"i","sub":"s","aud":"a","client_id":"c","jti":"j","iat":1,"exp":9999999999,"nbf":-5}`)
	f.Add(hdr, `{"iss":"i","sub":"s","aud":[""],"client_id":"c","jti":"j","iat":1,"exp":9999999999}`)
	f.Add(hdr, `{"iss":"i","iss":"j","sub":"s","aud":"a","client_id":"c","jti":"j","iat":1,"exp":9999999999}`)
	f.Add(hdr, `{"Iss":"i","sub":"s","aud":"a","client_id":"c","jti":"j","iat":1,"exp":9999999999}`)
	f.Add(hdr, `{"iss":null,"sub":"s","aud":"a","client_id":"c","jti":"j","iat":1.5,"exp":9999999999}`)
	f.Add(hdr, `{"iss":"\ud800","sub":"s","aud":"a","client_id":"c","jti":"j","iat":1,"exp":9999999999} x`)
	f.Add(hdr, "{\"iss\":\"\xff\"}")
	keys := s.keys()
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, header, payload string) {
		token := jwtForge(s.priv, header, payload)
		c, err := VerifyJWT(token, keys, jwtNow)
		if err != nil {
			checkJWTError(t, err)
			return
		}
		if reason := jwtMissingClaim(&c); reason != "" {
			t.Fatalf("verified claims miss a claim (%s): %+v", reason, c)
		}
		if c.ExpiresAt <= c.IssuedAt || c.NotBefore < 0 || c.NotBefore >= c.ExpiresAt {
			return // valid to verify, but MintJWT would not write it
		}
		again, err := MintJWT(ctx, s, c)
		s.mu.Lock()
		s.digests = s.digests[:0]
		s.mu.Unlock()
		if err != nil {
			t.Fatalf("re-mint %+v: %v", c, err)
		}
		c2, err := VerifyJWT(again, keys, jwtNow)
		if err != nil {
			t.Fatalf("re-minted token does not verify: %v", err)
		}
		if !reflect.DeepEqual(claimsNormal(c), claimsNormal(c2)) {
			t.Fatalf("claims changed through minting:\n%+v\n%+v", c, c2)
		}
	})
}

// claimsNormal treats empty roles and policies as absent: MintJWT omits
// them.
func claimsNormal(c AccessClaims) AccessClaims {
	if len(c.Roles) == 0 {
		c.Roles = nil
	}
	if len(c.Policies) == 0 {
		c.Policies = nil
	}
	return c
}
