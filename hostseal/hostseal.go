// Package hostseal seals a secret to one host before it reaches the host:
// hybrid encryption to the host's import key, an RSA-3072 key whose
// private half never leaves that host's PKCS#11 token. Anyone holding the
// public key can seal (no daemon, no token); only that host's daemon can
// open, and it reseals the payload under its own KEK, so the plaintext
// exists nowhere between the sealing machine and the daemon.
//
// A sealed file carries a fresh AES-256-GCM DEK encrypted with RSA-OAEP
// (SHA-256) to the import key. The GCM additional data binds the format,
// a random id (a host imports each id once), the project, the display
// name, the import key's fingerprint and the creation time, so none of
// them can be changed or the DEK moved to another file without the open
// failing.
package hostseal

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Format names the version of the sealed-file format.
const Format = "coffer-sealed/v1"

// MinKeyBits is the smallest import key accepted.
const MinKeyBits = 3072

const (
	dekSize   = 32
	nonceSize = 12
	idBytes   = 16
)

var (
	// ErrWrongHost: the file was sealed to another host's import key.
	ErrWrongHost = errors.New("sealed for another host")
	// ErrTampered: the file does not open (edited, truncated or forged).
	ErrTampered = errors.New("sealed file does not verify")
	// ErrMalformed: the file is not a sealed secret of this format.
	ErrMalformed = errors.New("not a coffer sealed secret")
)

// File is a sealed secret as written to sealed.json.
type File struct {
	Format         string    `json:"format"`
	ID             string    `json:"id"`
	Project        string    `json:"project"`
	DisplayName    string    `json:"display_name"`
	KeyFingerprint string    `json:"key_fingerprint"`
	CreatedAt      time.Time `json:"created_at"`
	WrappedDEK     []byte    `json:"wrapped_dek"`
	Nonce          []byte    `json:"nonce"`
	Ciphertext     []byte    `json:"ciphertext"`
}

// Contents is what a sealed file carries.
type Contents struct {
	Payload   []byte            `json:"payload"`
	KeyValues map[string]string `json:"key_values,omitempty"`
}

// Clear zeroes the payload; key_values strings cannot be zeroed in Go and
// are dropped.
func (c *Contents) Clear() {
	clear(c.Payload)
	c.Payload, c.KeyValues = nil, nil
}

// String never shows the contents.
func (c Contents) String() string { return "hostseal.Contents{redacted}" }

// GoString never shows the contents.
func (c Contents) GoString() string { return c.String() }

// EncodePublicKey returns pub as a PEM "PUBLIC KEY" block (PKIX).
func EncodePublicKey(pub *rsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("encode import key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}), nil
}

// ParsePublicKey reads an import key written by EncodePublicKey (the
// output of `coffer hsm import-key`; text around the PEM block is
// ignored).
func ParsePublicKey(b []byte) (*rsa.PublicKey, error) {
	for {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			return nil, errors.New("import key: no PEM PUBLIC KEY block")
		}
		if block.Type != "PUBLIC KEY" {
			continue
		}
		k, err := x509.ParsePKIXPublicKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("import key: %w", err)
		}
		pub, ok := k.(*rsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("import key: %T is not an RSA key", k)
		}
		if pub.N.BitLen() < MinKeyBits {
			return nil, fmt.Errorf("import key: RSA-%d is below the minimum of %d bits", pub.N.BitLen(), MinKeyBits)
		}
		return pub, nil
	}
}

// Fingerprint names an import key: "SHA256:" and the hex SHA-256 of its
// PKIX encoding.
func Fingerprint(pub *rsa.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("fingerprint import key: %w", err)
	}
	sum := sha256.Sum256(der)
	return "SHA256:" + hex.EncodeToString(sum[:]), nil
}

// Seal encrypts c to pub for project under displayName.
func Seal(pub *rsa.PublicKey, project, displayName string, c Contents, now time.Time) (*File, error) {
	if pub == nil || pub.N.BitLen() < MinKeyBits {
		return nil, fmt.Errorf("seal: the import key must be RSA-%d or larger", MinKeyBits)
	}
	if strings.TrimSpace(project) == "" || strings.TrimSpace(displayName) == "" {
		return nil, errors.New("seal: project and display name are required")
	}
	if len(c.Payload) == 0 {
		return nil, errors.New("seal: the payload is empty")
	}
	fp, err := Fingerprint(pub)
	if err != nil {
		return nil, err
	}
	id := make([]byte, idBytes)
	dek := make([]byte, dekSize)
	defer clear(dek)
	nonce := make([]byte, nonceSize)
	for _, b := range [][]byte{id, dek, nonce} {
		if _, err := rand.Read(b); err != nil {
			return nil, fmt.Errorf("seal: read random: %w", err)
		}
	}
	f := &File{
		Format:         Format,
		ID:             hex.EncodeToString(id),
		Project:        project,
		DisplayName:    displayName,
		KeyFingerprint: fp,
		CreatedAt:      now.UTC().Truncate(time.Second),
		Nonce:          nonce,
	}
	plain, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("seal: encode contents: %w", err)
	}
	defer clear(plain)
	gcm, err := newGCM(dek)
	if err != nil {
		return nil, err
	}
	f.Ciphertext = gcm.Seal(nil, nonce, plain, f.aad())
	if f.WrappedDEK, err = rsa.EncryptOAEP(sha256.New(), rand.Reader, pub, dek, nil); err != nil {
		return nil, fmt.Errorf("seal: wrap DEK: %w", err)
	}
	return f, nil
}

// Unwrap decrypts an RSA-OAEP (SHA-256, empty label) wrapped DEK with the
// import key of this host; the daemon's is the HSM.
type Unwrap func(ctx context.Context, wrapped []byte) ([]byte, error)

// Open checks that f was sealed to the import key named fingerprint,
// unwraps its DEK with unwrap and returns the contents. Call Clear on the
// result when done.
func Open(ctx context.Context, f *File, fingerprint string, unwrap Unwrap) (Contents, error) {
	if err := f.Validate(); err != nil {
		return Contents{}, err
	}
	if f.KeyFingerprint != fingerprint {
		return Contents{}, fmt.Errorf("%w: the file is for import key %s, this host's is %s", ErrWrongHost, f.KeyFingerprint, fingerprint)
	}
	dek, err := unwrap(ctx, f.WrappedDEK)
	if err != nil {
		return Contents{}, err
	}
	defer clear(dek)
	if len(dek) != dekSize {
		return Contents{}, fmt.Errorf("%w: the wrapped key is not a %d-byte DEK", ErrTampered, dekSize)
	}
	gcm, err := newGCM(dek)
	if err != nil {
		return Contents{}, err
	}
	plain, err := gcm.Open(nil, f.Nonce, f.Ciphertext, f.aad())
	if err != nil {
		return Contents{}, fmt.Errorf("%w: authentication failed", ErrTampered)
	}
	defer clear(plain)
	var c Contents
	if err := json.Unmarshal(plain, &c); err != nil || len(c.Payload) == 0 {
		c.Clear()
		return Contents{}, fmt.Errorf("%w: contents do not decode", ErrTampered)
	}
	return c, nil
}

// Validate checks the shape of f without opening it.
func (f *File) Validate() error {
	switch {
	case f == nil:
		return fmt.Errorf("%w: empty", ErrMalformed)
	case f.Format != Format:
		return fmt.Errorf("%w: format %q, want %q", ErrMalformed, f.Format, Format)
	case len(f.ID) != 2*idBytes || !isHex(f.ID):
		return fmt.Errorf("%w: id must be %d hex digits", ErrMalformed, 2*idBytes)
	case f.Project == "" || f.DisplayName == "":
		return fmt.Errorf("%w: project and display_name are required", ErrMalformed)
	case !strings.HasPrefix(f.KeyFingerprint, "SHA256:"):
		return fmt.Errorf("%w: key_fingerprint must start with \"SHA256:\"", ErrMalformed)
	case f.CreatedAt.IsZero():
		return fmt.Errorf("%w: created_at is missing", ErrMalformed)
	case len(f.Nonce) != nonceSize:
		return fmt.Errorf("%w: nonce must be %d bytes", ErrMalformed, nonceSize)
	case len(f.WrappedDEK) == 0 || len(f.Ciphertext) == 0:
		return fmt.Errorf("%w: wrapped_dek and ciphertext are required", ErrMalformed)
	}
	return nil
}

// aad is the additional data of the GCM layer: every field but the
// ciphertext and the wrapped DEK, length-prefixed so that no two
// different files share it.
func (f *File) aad() []byte {
	var b []byte
	for _, s := range []string{Format, f.ID, f.Project, f.DisplayName, f.KeyFingerprint, f.CreatedAt.UTC().Format(time.RFC3339Nano)} {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	return b
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("hostseal: %w", err)
	}
	return cipher.NewGCM(block)
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return err == nil
}
