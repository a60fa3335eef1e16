package hsm

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"math/big"
	"testing"
)

// rawRSA is the RSA private-key operation, as CKM_RSA_X_509 does it.
func rawRSA(k *rsa.PrivateKey, c []byte) []byte {
	m := new(big.Int).Exp(new(big.Int).SetBytes(c), k.D, k.N)
	return m.FillBytes(make([]byte, k.Size()))
}

func TestOAEPDecodeSHA256(t *testing.T) {
	key := fakeImportKeys()[0]
	k := key.Size()
	maxMsg := k - 2*sha256.Size - 2
	for _, n := range []int{0, 1, 16, dekSize, 100, maxMsg} {
		msg := make([]byte, n)
		rand.Read(msg)
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		got, err := oaepDecodeSHA256(rawRSA(key, ct))
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("%d-byte message: decode = %d bytes, %v", n, len(got), err)
		}
	}

	// Anything else fails, with one error.
	dek := make([]byte, dekSize)
	good, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, dek, nil)
	labelled, _ := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, dek, []byte("label"))
	em := rawRSA(key, good)
	tests := map[string][]byte{
		"another label":      rawRSA(key, labelled),
		"leading byte set":   func() []byte { e := bytes.Clone(em); e[0] = 1; return e }(),
		"too short":          em[:2*sha256.Size+1],
		"random":             func() []byte { e := make([]byte, k); rand.Read(e[1:]); return e }(),
		"all zero":           make([]byte, k),
		"flipped ciphertext": rawRSA(key, flip(good, 200)),
	}
	for i := 1; i < k; i += 37 {
		e := bytes.Clone(em)
		e[i] ^= 0x80
		tests[fmt.Sprintf("em byte %d", i)] = e
	}
	for name, e := range tests {
		if got, err := oaepDecodeSHA256(e); err != errOAEPDecode {
			t.Errorf("%s: decode = %d bytes, %v; want errOAEPDecode", name, len(got), err)
		}
	}
}

// TestOAEPDecodeSeparator: DB's padding may hold only zero bytes before
// the 0x01 separator, and the message may contain anything after it.
func TestOAEPDecodeSeparator(t *testing.T) {
	key := fakeImportKeys()[0]
	for _, msg := range [][]byte{{0x01}, {0x00, 0x01}, {0x02, 0x00}, bytes.Repeat([]byte{0x01}, 40)} {
		ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, &key.PublicKey, msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := oaepDecodeSHA256(rawRSA(key, ct)); err != nil || !bytes.Equal(got, msg) {
			t.Errorf("message %x: %x, %v", msg, got, err)
		}
	}
}
