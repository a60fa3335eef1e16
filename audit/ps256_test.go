package audit

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"math/big"
	"strings"
	"testing"
)

// rsaSigner signs checkpoints PS256, as the HSM does with an RSA key.
type rsaSigner struct {
	key *rsa.PrivateKey
	kid string
}

func (s *rsaSigner) Sign(_ context.Context, digest []byte) ([]byte, string, error) {
	sig, err := rsa.SignPSS(rand.Reader, s.key, crypto.SHA256, digest, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash})
	return sig, s.kid, err
}

// TestPS256Checkpoints: a log whose signing key moves from P-256 to RSA
// verifies with a JWK set (as the daemon publishes it) holding both.
func TestPS256Checkpoints(t *testing.T) {
	dir := t.TempDir()
	ec := newTestSigner(t, "ec-1")
	l := openLog(t, dir, ec, 4, 0)
	for i := range 4 {
		l.Record(event(i))
	}
	closeLog(t, l)
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rs := &rsaSigner{key: k, kid: "rsa-2"}
	l = openLog(t, dir, rs, 4, 0)
	for i := range 8 {
		l.Record(event(10 + i))
	}
	closeLog(t, l)

	b, _ := ec.key.PublicKey.Bytes()
	set := map[string]any{"keys": []map[string]string{
		{"kty": "EC", "crv": "P-256", "kid": "ec-1", "x": b64.EncodeToString(b[1:33]), "y": b64.EncodeToString(b[33:]), "alg": "ES256"},
		{"kty": "RSA", "kid": "rsa-2", "n": b64.EncodeToString(k.N.Bytes()), "e": b64.EncodeToString(big.NewInt(int64(k.E)).Bytes()), "alg": "PS256"},
	}}
	data, _ := json.Marshal(set)
	keys, err := ParseJWKS(data)
	if err != nil {
		t.Fatal(err)
	}
	if pub, ok := keys.PublicKey("rsa-2"); !ok || !pub.Equal(&k.PublicKey) {
		t.Fatalf("ParseJWKS lost the RSA key: %v", keys)
	}
	rep := verifyDir(t, dir, keys)
	if !rep.OK || rep.Checkpoints < 3 {
		t.Fatalf("report %+v, want OK with checkpoints by both keys", rep)
	}

	// Without the RSA key the RSA checkpoints do not verify.
	delete(keys, "rsa-2")
	if rep := verifyDir(t, dir, keys); rep.OK || !strings.Contains(rep.Reason, `"rsa-2"`) {
		t.Fatalf("report %+v, want the rsa-2 checkpoint refused", rep)
	}
	// Another RSA key under that kid does not verify them either.
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	keys["rsa-2"] = &other.PublicKey
	if rep := verifyDir(t, dir, keys); rep.OK || !strings.Contains(rep.Reason, "does not verify") {
		t.Fatalf("report %+v, want a bad signature", rep)
	}

	for _, bad := range []string{
		`{"keys":[{"kty":"RSA","alg":"PS256","kid":"k","n":"AQAB","e":"AQAB"}]}`,                                  // 17-bit modulus
		`{"keys":[{"kty":"RSA","alg":"PS256","kid":"k","n":"` + b64.EncodeToString(k.N.Bytes()) + `","e":"Ag"}]}`, // even exponent
		`{"keys":[{"kty":"RSA","alg":"PS256","n":"` + b64.EncodeToString(k.N.Bytes()) + `","e":"AQAB"}]}`,         // no kid
	} {
		if _, err := ParseJWKS([]byte(bad)); err == nil {
			t.Errorf("ParseJWKS(%.60s...): want an error", bad)
		}
	}
}
