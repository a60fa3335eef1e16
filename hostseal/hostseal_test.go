package hostseal

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

var (
	keysOnce sync.Once
	hostA    *rsa.PrivateKey
	hostB    *rsa.PrivateKey
)

// keys returns two RSA-3072 host keys, made once per test binary.
func keys(t testing.TB) (*rsa.PrivateKey, *rsa.PrivateKey) {
	t.Helper()
	keysOnce.Do(func() {
		var err error
		if hostA, err = rsa.GenerateKey(rand.Reader, 3072); err != nil {
			panic(err)
		}
		if hostB, err = rsa.GenerateKey(rand.Reader, 3072); err != nil {
			panic(err)
		}
	})
	return hostA, hostB
}

func unwrapWith(k *rsa.PrivateKey) Unwrap {
	return func(_ context.Context, wrapped []byte) ([]byte, error) {
		return k.Decrypt(rand.Reader, wrapped, &rsa.OAEPOptions{Hash: crypto.SHA256})
	}
}

func fingerprint(t testing.TB, k *rsa.PrivateKey) string {
	t.Helper()
	fp, err := Fingerprint(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

var (
	testPayload = []byte("db-password-7c1e0f")
	testKVs     = map[string]string{"user": "app", "token": "kv-secret-91ab"}
	testTime    = time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
)

func sealTo(t testing.TB, k *rsa.PrivateKey) *File {
	t.Helper()
	f, err := Seal(&k.PublicKey, "billing", "db password", Contents{Payload: bytes.Clone(testPayload), KeyValues: testKVs}, testTime)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func TestRoundTripThroughJSONAndPEM(t *testing.T) {
	a, _ := keys(t)
	pemKey, err := EncodePublicKey(&a.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	// What `coffer hsm import-key` prints: text around the PEM block.
	pub, err := ParsePublicKey(append([]byte("fingerprint: x\n"), pemKey...))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Seal(pub, "billing", "db password", Contents{Payload: bytes.Clone(testPayload), KeyValues: testKVs}, testTime)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{string(testPayload), "kv-secret-91ab", "token"} {
		if bytes.Contains(b, []byte(s)) {
			t.Fatalf("sealed file shows %q in the clear", s)
		}
	}
	var back File
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	c, err := Open(context.Background(), &back, fingerprint(t, a), unwrapWith(a))
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	if !bytes.Equal(c.Payload, testPayload) || c.KeyValues["token"] != "kv-secret-91ab" || len(c.KeyValues) != 2 {
		t.Fatal("opened contents differ from what was sealed")
	}
	if back.Project != "billing" || back.DisplayName != "db password" || !back.CreatedAt.Equal(testTime) {
		t.Fatalf("metadata changed: %+v", back)
	}
	for _, s := range []string{fmt.Sprint(c), fmt.Sprintf("%#v", c), fmt.Sprintf("%+v", c)} {
		if bytes.Contains([]byte(s), testPayload) {
			t.Fatalf("Contents prints its payload: %s", s)
		}
	}
	c.Clear()
	if c.Payload != nil {
		t.Fatal("Clear kept the payload")
	}
}

func TestSealsDiffer(t *testing.T) {
	a, _ := keys(t)
	f1, f2 := sealTo(t, a), sealTo(t, a)
	if f1.ID == f2.ID || bytes.Equal(f1.Ciphertext, f2.Ciphertext) || bytes.Equal(f1.WrappedDEK, f2.WrappedDEK) {
		t.Fatal("two seals of the same secret share an id, DEK or ciphertext")
	}
}

func TestWrongHost(t *testing.T) {
	a, b := keys(t)
	f := sealTo(t, a)
	_, err := Open(context.Background(), f, fingerprint(t, b), unwrapWith(b))
	if !errors.Is(err, ErrWrongHost) {
		t.Fatalf("open on host B: %v, want ErrWrongHost", err)
	}
	// A file whose fingerprint was rewritten to B's still cannot open on B.
	f.KeyFingerprint = fingerprint(t, b)
	_, err = Open(context.Background(), f, fingerprint(t, b), unwrapWith(b))
	if err == nil {
		t.Fatal("a file for host A opened on host B")
	}
}

func TestTamperedFieldsDoNotOpen(t *testing.T) {
	a, _ := keys(t)
	other := sealTo(t, a)
	tests := []struct {
		name   string
		edit   func(f *File)
		target error
	}{
		{"project", func(f *File) { f.Project = "payroll" }, ErrTampered},
		{"display name", func(f *File) { f.DisplayName = "db passw0rd" }, ErrTampered},
		{"id (replay under a new id)", func(f *File) { f.ID = other.ID }, ErrTampered},
		{"created_at", func(f *File) { f.CreatedAt = f.CreatedAt.Add(time.Second) }, ErrTampered},
		{"ciphertext bit", func(f *File) { f.Ciphertext[3] ^= 1 }, ErrTampered},
		{"truncated ciphertext", func(f *File) { f.Ciphertext = f.Ciphertext[:len(f.Ciphertext)-1] }, ErrTampered},
		{"nonce", func(f *File) { f.Nonce[0] ^= 1 }, ErrTampered},
		{"DEK of another file", func(f *File) { f.WrappedDEK = other.WrappedDEK }, ErrTampered},
		{"format", func(f *File) { f.Format = "coffer-sealed/v2" }, ErrMalformed},
		{"short nonce", func(f *File) { f.Nonce = f.Nonce[:8] }, ErrMalformed},
		{"bad id", func(f *File) { f.ID = "not-hex" }, ErrMalformed},
		{"no project", func(f *File) { f.Project = "" }, ErrMalformed},
		{"no time", func(f *File) { f.CreatedAt = time.Time{} }, ErrMalformed},
		{"no ciphertext", func(f *File) { f.Ciphertext = nil }, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := sealTo(t, a)
			tt.edit(f)
			_, err := Open(context.Background(), f, fingerprint(t, a), unwrapWith(a))
			if !errors.Is(err, tt.target) {
				t.Fatalf("open: %v, want %v", err, tt.target)
			}
			if err != nil && bytes.Contains([]byte(err.Error()), testPayload) {
				t.Fatal("error shows the payload")
			}
		})
	}
}

func TestSealRefuses(t *testing.T) {
	a, _ := keys(t)
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name                 string
		pub                  *rsa.PublicKey
		project, displayName string
		payload              []byte
	}{
		{"small key", &small.PublicKey, "p", "n", testPayload},
		{"nil key", nil, "p", "n", testPayload},
		{"no project", &a.PublicKey, " ", "n", testPayload},
		{"no display name", &a.PublicKey, "p", "", testPayload},
		{"empty payload", &a.PublicKey, "p", "n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := Seal(tt.pub, tt.project, tt.displayName, Contents{Payload: tt.payload}, testTime); err == nil {
				t.Fatal("Seal accepted it")
			}
		})
	}
	pemSmall, _ := EncodePublicKey(&small.PublicKey)
	if _, err := ParsePublicKey(pemSmall); err == nil {
		t.Fatal("ParsePublicKey accepted an RSA-2048 key")
	}
	if _, err := ParsePublicKey([]byte("no pem here")); err == nil {
		t.Fatal("ParsePublicKey accepted text without a key")
	}
}

// FuzzOpen: whatever the file says, Open never panics, and only the
// untouched file opens.
func FuzzOpen(f *testing.F) {
	a, _ := keys(f)
	good, err := json.Marshal(sealTo(f, a))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"format":"coffer-sealed/v1"}`))
	f.Add([]byte(`{}`))
	fp := fingerprint(f, a)
	f.Fuzz(func(t *testing.T, b []byte) {
		var sf File
		if json.Unmarshal(b, &sf) != nil {
			return
		}
		c, err := Open(context.Background(), &sf, fp, unwrapWith(a))
		if err == nil {
			if !bytes.Equal(c.Payload, testPayload) {
				t.Fatalf("a file opened to a different payload")
			}
			return
		}
		if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrTampered) && !errors.Is(err, ErrWrongHost) && !errors.Is(err, rsa.ErrDecryption) {
			t.Fatalf("unclassified error: %v", err)
		}
	})
}
