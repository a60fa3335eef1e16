package daemon

// RFC 9068 JWT access tokens, signed by the HSM's signing key (ES256 with
// a P-256 key, PS256 with an RSA key: jws.go), and the documents that let
// any service verify them offline: the JWK set (RFC 7517, with RFC 7638
// thumbprints as key ids) and the authorization server metadata (RFC 8414).
//
// go-jose builds and verifies the JWS (jws.go); the header and the claims
// are read here, deliberately strictly, because go-jose is lenient where a
// bearer check must not be: the header is read before the signature is
// checked, so it is decoded with exact (case-sensitive) member names,
// duplicate members are rejected, every part must be canonical base64url
// (one token, one string), and the only accepted algorithm is the one of
// the key the kid names, ES256 or PS256 — never "none" or an HMAC that
// could be keyed with the public key.

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// JWTSigner signs with the HSM's signing key. *hsm.HSM implements it; the
// daemon depends only on this interface.
type JWTSigner interface {
	// Sign signs a SHA-256 digest and returns the signature in its JWS
	// form: r||s (64 bytes) for a P-256 key, RSA-PSS for an RSA key.
	Sign(ctx context.Context, digest []byte) ([]byte, error)
	SigningPublicKey() PublicKey
}

// AccessClaims are the RFC 9068 claims coffer puts in an access token.
//
// Audience is always a list in Go. On the wire a single audience is written
// as a plain string and several as an array (the form RFC 7519 §4.1.3 and
// most issuers use); both forms are accepted when parsing.
//
// Times are NumericDate seconds since the epoch; coffer writes and accepts
// integers only.
type AccessClaims struct {
	Issuer    string   `json:"iss"`
	Subject   string   `json:"sub"` // user id
	Audience  []string `json:"aud"`
	ClientID  string   `json:"client_id"`
	IssuedAt  int64    `json:"iat"`
	ExpiresAt int64    `json:"exp"`
	NotBefore int64    `json:"nbf,omitempty"`
	JTI       string   `json:"jti"` // session id
	Scope     string   `json:"scope,omitempty"`
	Roles     []string `json:"roles,omitempty"`
	Policies  []string `json:"policies,omitempty"`
	Project   string   `json:"project,omitempty"`
}

// ErrInvalidJWT is the single error VerifyJWT returns (wrapped with a
// reason meant for logs; the reason never contains the token or any
// attacker-chosen text).
var ErrInvalidJWT = errors.New("invalid jwt")

const (
	// jwtMaxLen bounds the work done on a bearer string before anything
	// is verified; coffer's own tokens are well under 2 KiB.
	jwtMaxLen = 8 << 10
	// jwtLeeway is the clock skew tolerated for exp, nbf and iat.
	jwtLeeway = 30 // seconds
	jwtTyp    = "at+jwt"
	// jwtMaxSigLen bounds a signature's size before its key is known
	// (RSA-8192).
	jwtMaxSigLen = 1024
)

// jwtB64 is base64url without padding, strict: non-zero trailing bits are
// rejected so that every token has exactly one encoding.
var jwtB64 = base64.RawURLEncoding.Strict()

// MintJWT builds the JWS of the payload c with the header
// {"alg":ALG,"kid":KeyID(pub),"typ":"at+jwt"}, ALG being ES256 or PS256 as
// the signing key is EC or RSA, signing SHA-256(header.payload) with
// exactly one s.Sign call (an ES256 signature is put in its low-S form).
// The claims RFC 9068 §2.2 requires (iss, exp, aud, sub, client_id, iat,
// jti) must be set, and exp must be after iat. (That the signer's
// signatures verify with its public key is checked once, when the daemon
// starts: CheckSigner.) Signer errors are wrapped (errors.Is works on
// them).
func MintJWT(ctx context.Context, s JWTSigner, c AccessClaims) (string, error) {
	if s == nil {
		return "", errors.New("mint jwt: no signer")
	}
	key, err := jwsKeyOf(s.SigningPublicKey())
	if err != nil {
		return "", fmt.Errorf("mint jwt: %w", err)
	}
	kid, err := key.kid()
	if err != nil {
		return "", fmt.Errorf("mint jwt: %w", err)
	}
	if reason := jwtMissingClaim(&c); reason != "" {
		return "", fmt.Errorf("mint jwt: %s", reason)
	}
	if c.ExpiresAt <= c.IssuedAt {
		return "", errors.New("mint jwt: exp is not after iat")
	}
	if c.NotBefore < 0 || c.NotBefore >= c.ExpiresAt {
		return "", errors.New("mint jwt: nbf is not before exp")
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", fmt.Errorf("mint jwt: %w", err)
	}
	token, err := signJWS(ctx, s, key, kid, payload)
	if err != nil {
		return "", fmt.Errorf("mint jwt: %w", err)
	}
	return token, nil
}

// CheckSigner signs a JWS of a random payload, as MintJWT does, and
// verifies it, as VerifyJWT does, with the signer's public key, so a token
// whose key does not match its public half (or a module that returns
// garbage) is found at start, not by every client.
func CheckSigner(ctx context.Context, s JWTSigner) error {
	nonce := make([]byte, 32)
	if _, err := rand.Read(nonce); err != nil {
		return err
	}
	key, err := jwsKeyOf(s.SigningPublicKey())
	if err != nil {
		return fmt.Errorf("check signing key: %w", err)
	}
	kid, err := key.kid()
	if err != nil {
		return fmt.Errorf("check signing key: %w", err)
	}
	token, err := signJWS(ctx, s, key, kid, nonce)
	if err != nil {
		return fmt.Errorf("check signing key: %w", err)
	}
	if payload, reason := verifyJWS(token, key); reason != "" || !bytes.Equal(payload, nonce) {
		return errors.New("check signing key: its signatures do not verify with its public key")
	}
	return nil
}

// LooksLikeJWT reports cheaply whether a bearer string has JWT shape: it
// starts with "eyJ" (base64url of `{"`), has exactly three dot-separated
// parts of base64url characters, and non-empty header and payload parts.
// An empty signature part still looks like a JWT, so that an unsigned
// ("alg":"none") token is routed to VerifyJWT and refused there rather
// than treated as some other kind of token. Coffer's opaque tokens
// (cfa_, cfo_, cft_, cfs_) never look like a JWT.
func LooksLikeJWT(s string) bool {
	if len(s) > jwtMaxLen || !strings.HasPrefix(s, "eyJ") {
		return false
	}
	dots, last := 0, -1
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '.':
			if i == last+1 && dots < 2 { // empty header or payload
				return false
			}
			dots++
			last = i
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '_':
		default:
			return false
		}
	}
	return dots == 2
}

// VerifyJWT verifies a coffer access token and returns its claims. It
// checks, in this order:
//   - shape: at most 8 KiB, exactly three canonical base64url parts;
//   - header: alg exactly "ES256" or "PS256" (anything else, "none" and
//     HMACs included, is refused), typ "at+jwt" (or its full media type
//     "application/at+jwt", case-insensitively, per RFC 9068 §4), kid
//     present in keys and its key of that alg, no "crit" or "b64", no
//     duplicate members;
//   - signature: exactly 64 bytes r||s with s ≤ n/2 (ES256), or the
//     modulus size (PS256); then go-jose verifies it over header.payload
//     with the key named by kid, that key's algorithm the only one it
//     allows;
//   - claims: iss, sub, aud, client_id, jti, iat and exp present (RFC 9068
//     §2.2); exp not passed, nbf (if set) and iat not in the future, each
//     with 30 s leeway against now.
//
// The issuer and audience values are not compared: that is the caller's
// policy. Every failure is ErrInvalidJWT wrapped with a fixed reason.
func VerifyJWT(token string, keys map[string]PublicKey, now time.Time) (AccessClaims, error) {
	if len(token) == 0 || len(token) > jwtMaxLen {
		return AccessClaims{}, jwtInvalid("bad size")
	}
	i := strings.IndexByte(token, '.')
	if i < 0 {
		return AccessClaims{}, jwtInvalid("not three parts")
	}
	j := strings.IndexByte(token[i+1:], '.')
	if j < 0 {
		return AccessClaims{}, jwtInvalid("not three parts")
	}
	j += i + 1
	if strings.IndexByte(token[j+1:], '.') >= 0 {
		return AccessClaims{}, jwtInvalid("not three parts")
	}

	// go-jose reads the header too, but leniently (duplicate members, the
	// last one winning; "b64":false honoured without "crit"), and it must
	// not choose the key: so it is read here first.
	rawHeader, err := jwtB64.DecodeString(token[:i])
	if err != nil {
		return AccessClaims{}, jwtInvalid("header is not base64url")
	}
	var h struct{ alg, typ, kid string }
	var crit, b64 bool
	err = jwtDecodeObject(rawHeader, func(key string, dec *json.Decoder) error {
		switch key {
		case "alg":
			return jwtDecodeString(dec, &h.alg)
		case "typ":
			return jwtDecodeString(dec, &h.typ)
		case "kid":
			return jwtDecodeString(dec, &h.kid)
		case "crit":
			crit = true
		case "b64":
			b64 = true
		}
		return jwtSkipValue(dec)
	})
	switch {
	case err != nil:
		return AccessClaims{}, jwtInvalid("malformed header")
	case h.alg != algES256 && h.alg != algPS256:
		return AccessClaims{}, jwtInvalid("alg is not ES256 or PS256")
	case !strings.EqualFold(h.typ, jwtTyp) && !strings.EqualFold(h.typ, "application/"+jwtTyp):
		return AccessClaims{}, jwtInvalid("typ is not at+jwt")
	case crit:
		return AccessClaims{}, jwtInvalid("unsupported crit header")
	case b64:
		return AccessClaims{}, jwtInvalid("unsupported b64 header")
	case h.kid == "":
		return AccessClaims{}, jwtInvalid("no kid")
	}
	pub := keys[h.kid]
	if pub == nil {
		return AccessClaims{}, jwtInvalid("unknown kid")
	}
	key, err := jwsKeyOf(pub)
	if err != nil {
		return AccessClaims{}, jwtInvalid("key for kid is not an ES256 or PS256 key")
	}
	if string(key.alg) != h.alg {
		return AccessClaims{}, jwtInvalid("alg is not the one of the key for kid")
	}

	// go-jose decodes base64url leniently (non-zero trailing bits), which
	// would give each signature and payload more than one encoding.
	n := key.sigLen
	if jwtB64.DecodedLen(len(token)-j-1) != n || n > jwtMaxSigLen {
		return AccessClaims{}, jwtInvalid(fmt.Sprintf("signature is not %d bytes", n))
	}
	var buf [jwtMaxSigLen]byte
	if m, err := jwtB64.Decode(buf[:n], []byte(token[j+1:])); err != nil || m != n {
		return AccessClaims{}, jwtInvalid("signature is not base64url")
	}
	if _, err := jwtB64.DecodeString(token[i+1 : j]); err != nil {
		return AccessClaims{}, jwtInvalid("payload is not base64url")
	}
	payload, reason := verifyJWS(token, key)
	if reason != "" {
		return AccessClaims{}, jwtInvalid(reason)
	}

	// Only signed (hence coffer-minted) payloads are parsed from here on.
	var c AccessClaims
	if err := c.UnmarshalJSON(payload); err != nil {
		return AccessClaims{}, jwtInvalid("malformed claims")
	}
	if reason := jwtMissingClaim(&c); reason != "" {
		return AccessClaims{}, jwtInvalid(reason)
	}
	t := now.Unix()
	switch {
	case t-jwtLeeway >= c.ExpiresAt:
		return AccessClaims{}, jwtInvalid("expired")
	case c.NotBefore != 0 && t+jwtLeeway < c.NotBefore:
		return AccessClaims{}, jwtInvalid("not yet valid (nbf)")
	case t+jwtLeeway < c.IssuedAt:
		return AccessClaims{}, jwtInvalid("issued in the future (iat)")
	}
	return c, nil
}

func jwtInvalid(reason string) error { return fmt.Errorf("%w: %s", ErrInvalidJWT, reason) }

// jwtMissingClaim names the first RFC 9068 §2.2 required claim that is
// absent, or returns "".
func jwtMissingClaim(c *AccessClaims) string {
	switch {
	case c.Issuer == "":
		return "missing iss"
	case c.Subject == "":
		return "missing sub"
	case len(c.Audience) == 0:
		return "missing aud"
	case c.ClientID == "":
		return "missing client_id"
	case c.JTI == "":
		return "missing jti"
	case c.IssuedAt <= 0:
		return "missing iat"
	case c.ExpiresAt <= 0:
		return "missing exp"
	}
	for _, a := range c.Audience {
		if a == "" {
			return "empty aud value"
		}
	}
	return ""
}

// jwtAudience is "aud": one value is written as a string, several as an
// array; both are read.
type jwtAudience []string

func (a jwtAudience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	if a == nil {
		return []byte("[]"), nil
	}
	return json.Marshal([]string(a))
}

func (a *jwtAudience) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var s string
		if err := json.Unmarshal(b, &s); err != nil {
			return err
		}
		*a = jwtAudience{s}
		return nil
	}
	var l []string
	if err := json.Unmarshal(b, &l); err != nil {
		return err
	}
	*a = l
	return nil
}

// MarshalJSON writes the claims with a single audience as a string.
func (c AccessClaims) MarshalJSON() ([]byte, error) {
	type plain AccessClaims // no methods: no recursion
	return json.Marshal(struct {
		plain
		Audience jwtAudience `json:"aud"` // shallower: replaces plain's "aud"
	}{plain(c), jwtAudience(c.Audience)})
}

// UnmarshalJSON reads claims strictly: exact member names (encoding/json
// would otherwise also match "ISS" or "Sub"), no duplicate members, valid
// UTF-8, "aud" as a string or an array. Unknown members are ignored.
func (c *AccessClaims) UnmarshalJSON(data []byte) error {
	var n AccessClaims
	err := jwtDecodeObject(data, func(key string, dec *json.Decoder) error {
		switch key {
		case "iss":
			return jwtDecodeString(dec, &n.Issuer)
		case "sub":
			return jwtDecodeString(dec, &n.Subject)
		case "aud":
			return dec.Decode((*jwtAudience)(&n.Audience))
		case "client_id":
			return jwtDecodeString(dec, &n.ClientID)
		case "iat":
			return dec.Decode(&n.IssuedAt)
		case "exp":
			return dec.Decode(&n.ExpiresAt)
		case "nbf":
			return dec.Decode(&n.NotBefore)
		case "jti":
			return jwtDecodeString(dec, &n.JTI)
		case "scope":
			return jwtDecodeString(dec, &n.Scope)
		case "roles":
			return dec.Decode(&n.Roles)
		case "policies":
			return dec.Decode(&n.Policies)
		case "project":
			return jwtDecodeString(dec, &n.Project)
		}
		return jwtSkipValue(dec)
	})
	if err != nil {
		return err
	}
	*c = n
	return nil
}

// jwtDecodeObject walks one JSON object, calling member for each member
// name with the decoder positioned at its value (member must consume it).
// Duplicate names, invalid UTF-8 and trailing data are errors.
func jwtDecodeObject(data []byte, member func(key string, dec *json.Decoder) error) error {
	if !utf8.Valid(data) {
		return errors.New("invalid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return errors.New("not a JSON object")
	}
	seen := make(map[string]struct{}, 16)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		key, ok := tok.(string)
		if !ok {
			return errors.New("bad member name")
		}
		if _, dup := seen[key]; dup {
			return errors.New("duplicate member")
		}
		seen[key] = struct{}{}
		if err := member(key, dec); err != nil {
			return err
		}
	}
	if tok, err := dec.Token(); err != nil || tok != json.Delim('}') {
		return errors.New("unterminated object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("trailing data")
	}
	return nil
}

// jwtDecodeString decodes a JSON string; null and other types are errors
// (encoding/json would leave the target unchanged on null).
func jwtDecodeString(dec *json.Decoder, dst *string) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	if len(raw) == 0 || raw[0] != '"' {
		return errors.New("not a string")
	}
	return json.Unmarshal(raw, dst)
}

func jwtSkipValue(dec *json.Decoder) error {
	var raw json.RawMessage
	return dec.Decode(&raw)
}

// JWK is an RFC 7517 public signing key: EC (RFC 7518 §6.2) or RSA
// (§6.3).
type JWK struct {
	Kty string `json:"kty"`           // "EC" or "RSA"
	Crv string `json:"crv,omitempty"` // EC: "P-256"
	X   string `json:"x,omitempty"`   // EC: 32-byte big-endian, base64url, no padding
	Y   string `json:"y,omitempty"`
	N   string `json:"n,omitempty"` // RSA: modulus, big-endian, base64url, no padding
	E   string `json:"e,omitempty"` // RSA: public exponent
	Kid string `json:"kid"`         // RFC 7638 thumbprint, see KeyID
	Use string `json:"use"`         // "sig"
	Alg string `json:"alg"`         // "ES256" or "PS256"
}

// JWKSet is the RFC 7517 §5 document served at /.well-known/jwks.json.
type JWKSet struct {
	Keys []JWK `json:"keys"`
}

// ServerMetadata is the authorization server metadata document: RFC 8414,
// served at /.well-known/oauth-authorization-server, and the same
// document as OpenID Connect Discovery 1.0 §3 provider metadata, served at
// /.well-known/openid-configuration (RFC 8414 §2 lets one document carry
// both; serving one value at both paths keeps them consistent).
type ServerMetadata struct {
	Issuer                string `json:"issuer"`
	TokenEndpoint         string `json:"token_endpoint"`
	IntrospectionEndpoint string `json:"introspection_endpoint"`
	JWKSURI               string `json:"jwks_uri"`
	// ResponseTypesSupported is REQUIRED by RFC 8414 §2 but only concerns
	// the authorization endpoint, which coffer does not have (it is a
	// client-credentials-only server, so authorization_endpoint is omitted
	// as §2 allows). It is therefore the empty array: advertising "token"
	// or "code" would announce implicit or code flows that do not exist.
	ResponseTypesSupported            []string `json:"response_types_supported"`
	GrantTypesSupported               []string `json:"grant_types_supported"`
	TokenEndpointAuthMethodsSupported []string `json:"token_endpoint_auth_methods_supported"`
	// IntrospectionEndpointAuthMethodsSupported is ["none"]: any local
	// caller may introspect a token it holds (DESIGN §4), so the endpoint
	// takes no client authentication.
	IntrospectionEndpointAuthMethodsSupported []string `json:"introspection_endpoint_auth_methods_supported"`
	// SubjectTypesSupported is "public": sub is the user id, the same for
	// every relying party (OpenID Connect Discovery §3, REQUIRED).
	SubjectTypesSupported []string `json:"subject_types_supported"`
	// IDTokenSigningAlgValuesSupported are the algorithms of the keys in
	// the JWK set (ES256, PS256). Coffer issues access tokens, not ID
	// tokens; relying-party libraries (go-oidc among them) read this list
	// as the algorithms its tokens may be signed with. It does not name
	// RS256, which Discovery §3 asks of OpenID providers: coffer never
	// signs with it, and naming it would widen what verifiers accept.
	IDTokenSigningAlgValuesSupported []string `json:"id_token_signing_alg_values_supported"`
}

// GrantTokenExchange is the RFC 8693 grant type.
const GrantTokenExchange = "urn:ietf:params:oauth:grant-type:token-exchange"

// Metadata returns the metadata for issuer iss whose JWK set holds keys of
// the algorithms algs (nil: ES256). The issuer is used verbatim (it must
// equal the "iss" of the tokens); endpoint URLs are built from it without
// a trailing slash.
func Metadata(issuer string, algs ...string) ServerMetadata {
	base := strings.TrimRight(issuer, "/")
	if len(algs) == 0 {
		algs = []string{algES256}
	}
	return ServerMetadata{
		Issuer:                            issuer,
		TokenEndpoint:                     base + "/oauth2/token",
		IntrospectionEndpoint:             base + "/oauth2/introspect",
		JWKSURI:                           base + "/.well-known/jwks.json",
		ResponseTypesSupported:            []string{},
		GrantTypesSupported:               []string{"client_credentials", GrantTokenExchange},
		TokenEndpointAuthMethodsSupported: []string{"client_secret_basic", "client_secret_post"},
		IntrospectionEndpointAuthMethodsSupported: []string{"none"},
		SubjectTypesSupported:                     []string{"public"},
		IDTokenSigningAlgValuesSupported:          slices.Clone(algs),
	}
}
