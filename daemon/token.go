package daemon

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"strconv"
)

// Token format (DESIGN §6):
//
//	<prefix>_<body>
//
// prefix is one of cfa, cfo, cft, cfs; body is the fixed-width (70 chars)
// base62 encoding (0-9A-Za-z, most significant digit first, left-padded
// with '0') of a 52-byte value:
//
//	16-byte public token id || 32 random bytes || CRC32-IEEE (big-endian)
//	of prefix + "_" + the first 48 bytes
//
// The checksum lets a typo (or a token of another kind) be rejected offline
// and lets secret scanners recognise a leaked token. Only the SHA-256 of the
// 32 random bytes (the verifier) is ever stored.
const (
	PrefixAuthToken   = "cfa"
	PrefixOAuth2      = "cfo"
	PrefixAccessToken = "cft"
	PrefixSession     = "cfs"
)

const (
	tokenIDBytes     = 16
	tokenSecretBytes = 32
	tokenCRCBytes    = 4
	tokenRawBytes    = tokenIDBytes + tokenSecretBytes + tokenCRCBytes // 52

	// tokenBodyLen is the smallest base62 width that holds any 52-byte
	// value (62^70 >= 2^416 > 62^69); tokenIDLen likewise for 16 bytes.
	tokenBodyLen   = 70
	tokenIDLen     = 22
	tokenPrefixLen = 3
	tokenLen       = tokenPrefixLen + 1 + tokenBodyLen // 74
)

// ErrMalformedToken: wrong prefix, wrong length, bad alphabet, bad checksum.
// Errors wrapping it never quote the token.
var ErrMalformedToken = errors.New("malformed token")

// tokenSecret holds the random part of a token. It is kept behind a pointer
// in ParsedToken so that even where fmt cannot call methods (a ParsedToken
// inside an unexported field of another struct) only an address is printed;
// where it can, the methods below redact it.
type tokenSecret [tokenSecretBytes]byte

const tokenRedacted = "[redacted]"

func (*tokenSecret) String() string                { return tokenRedacted }
func (*tokenSecret) GoString() string              { return tokenRedacted }
func (*tokenSecret) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(tokenRedacted)) }

// ParsedToken is a validated token split into its parts. Its String, Format
// and LogValue never reveal the secret.
type ParsedToken struct {
	Prefix string
	ID     string // 22-char base62 public token id
	secret *tokenSecret
}

// NewToken returns the plaintext token (shown once) and its parsed form.
func NewToken(prefix string) (string, ParsedToken, error) {
	if !knownTokenPrefix(prefix) {
		return "", ParsedToken{}, fmt.Errorf("unknown token prefix %q", prefix)
	}
	var id [tokenIDBytes]byte
	sec := new(tokenSecret)
	if _, err := rand.Read(id[:]); err != nil {
		return "", ParsedToken{}, fmt.Errorf("token id: %w", err)
	}
	if _, err := rand.Read(sec[:]); err != nil {
		return "", ParsedToken{}, fmt.Errorf("token secret: %w", err)
	}
	p := ParsedToken{Prefix: prefix, ID: encodeTokenID(&id), secret: sec}
	return encodeToken(prefix, &id, sec), p, nil
}

// ParseToken validates and splits a token offline (no store access).
// Unknown prefix, bad length, bad characters or a checksum mismatch return
// an error wrapping ErrMalformedToken; the error never quotes the token.
func ParseToken(s string) (ParsedToken, error) {
	if len(s) != tokenLen {
		return ParsedToken{}, fmt.Errorf("%w: wrong length", ErrMalformedToken)
	}
	if s[tokenPrefixLen] != '_' {
		return ParsedToken{}, fmt.Errorf("%w: missing '_' after the prefix", ErrMalformedToken)
	}
	// Use the constant, not a substring of s, so the result does not keep
	// the whole token (and its secret) reachable.
	var prefix string
	switch s[:tokenPrefixLen] {
	case PrefixAuthToken:
		prefix = PrefixAuthToken
	case PrefixOAuth2:
		prefix = PrefixOAuth2
	case PrefixAccessToken:
		prefix = PrefixAccessToken
	case PrefixSession:
		prefix = PrefixSession
	default:
		return ParsedToken{}, fmt.Errorf("%w: unknown prefix", ErrMalformedToken)
	}
	var raw [tokenRawBytes]byte
	defer clear(raw[:])
	if !b62Decode(raw[:], s[tokenPrefixLen+1:]) {
		return ParsedToken{}, fmt.Errorf("%w: not base62", ErrMalformedToken)
	}
	want := binary.BigEndian.Uint32(raw[tokenIDBytes+tokenSecretBytes:])
	if tokenCRC(prefix, raw[:tokenIDBytes+tokenSecretBytes]) != want {
		return ParsedToken{}, fmt.Errorf("%w: bad checksum", ErrMalformedToken)
	}
	id := (*[tokenIDBytes]byte)(raw[:tokenIDBytes])
	sec := new(tokenSecret)
	copy(sec[:], raw[tokenIDBytes:])
	return ParsedToken{Prefix: prefix, ID: encodeTokenID(id), secret: sec}, nil
}

// Verifier is the SHA-256 of the secret part: the only thing stored. It is
// nil for the zero ParsedToken.
func (p ParsedToken) Verifier() []byte {
	if p.secret == nil {
		return nil
	}
	sum := sha256.Sum256(p.secret[:])
	return sum[:]
}

// Matches compares p's verifier with a stored one in constant time.
func (p ParsedToken) Matches(verifier []byte) bool {
	if p.secret == nil || len(verifier) != sha256.Size {
		return false
	}
	return subtle.ConstantTimeCompare(p.Verifier(), verifier) == 1
}

// String never reveals the secret: "cfa_<id>…" for logs.
func (p ParsedToken) String() string {
	if p.Prefix == "" && p.ID == "" {
		return "<no token>"
	}
	return p.Prefix + "_" + p.ID + "…"
}

// GoString is String for %#v.
func (p ParsedToken) GoString() string {
	return "daemon.ParsedToken{Prefix:" + strconv.Quote(p.Prefix) + ", ID:" + strconv.Quote(p.ID) + ", secret:" + tokenRedacted + "}"
}

// Format makes every fmt verb (%v, %+v, %#v, %s, %q, %x, ...) print the
// tokenRedacted form.
func (p ParsedToken) Format(f fmt.State, verb rune) {
	var s string
	switch {
	case verb == 'v' && f.Flag('#'):
		s = p.GoString()
	case verb == 'q':
		s = strconv.Quote(p.String())
	default:
		s = p.String()
	}
	_, _ = f.Write([]byte(s))
}

// LogValue makes slog (text and JSON handlers alike) log the tokenRedacted form.
func (p ParsedToken) LogValue() slog.Value { return slog.StringValue(p.String()) }

// NewTokenID returns a fresh random 22-char public id (for OAuth2 client ids
// and the like).
func NewTokenID() string {
	var id [tokenIDBytes]byte
	if _, err := rand.Read(id[:]); err != nil {
		// crypto/rand.Read does not fail on supported platforms (Go 1.24+).
		panic("crypto/rand: " + err.Error())
	}
	return encodeTokenID(&id)
}

// validTokenID reports whether s is a canonical 22-char base62 public id.
func validTokenID(s string) bool {
	if len(s) != tokenIDLen {
		return false
	}
	var id [tokenIDBytes]byte
	return b62Decode(id[:], s)
}

func knownTokenPrefix(p string) bool {
	switch p {
	case PrefixAuthToken, PrefixOAuth2, PrefixAccessToken, PrefixSession:
		return true
	}
	return false
}

// tokenCRC is the CRC32-IEEE of prefix + "_" + data (id || secret). It is
// the byte-at-a-time form over crc32.IEEETable, so that no buffer holding the
// secret escapes to the heap (the crc32 entry points take slices through a
// function variable, which forces their argument onto the heap).
func tokenCRC(prefix string, data []byte) uint32 {
	tab := crc32.IEEETable
	crc := ^uint32(0)
	for i := 0; i < len(prefix); i++ {
		crc = tab[byte(crc)^prefix[i]] ^ crc>>8
	}
	crc = tab[byte(crc)^'_'] ^ crc>>8
	for _, b := range data {
		crc = tab[byte(crc)^b] ^ crc>>8
	}
	return ^crc
}

// encodeToken builds the plaintext token of prefix, id and secret.
func encodeToken(prefix string, id *[tokenIDBytes]byte, sec *tokenSecret) string {
	var raw [tokenRawBytes]byte
	defer clear(raw[:])
	copy(raw[:], id[:])
	copy(raw[tokenIDBytes:], sec[:])
	binary.BigEndian.PutUint32(raw[tokenIDBytes+tokenSecretBytes:], tokenCRC(prefix, raw[:tokenIDBytes+tokenSecretBytes]))
	var out [tokenLen]byte
	copy(out[:], prefix)
	out[tokenPrefixLen] = '_'
	b62Encode(out[tokenPrefixLen+1:], raw[:])
	return string(out[:])
}

func encodeTokenID(id *[tokenIDBytes]byte) string {
	var out [tokenIDLen]byte
	b62Encode(out[:], id[:])
	return string(out[:])
}

// Fixed-width base62 over big-endian byte strings whose length is a
// multiple of 4 (processed as 32-bit limbs, five digits at a time).

const b62Alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

const b62MaxLimbs = tokenRawBytes / 4

// b62Pow[k] = 62^k; 62^5 < 2^30, so a limb step fits in a uint64.
var b62Pow = [6]uint64{1, 62, 62 * 62, 62 * 62 * 62, 62 * 62 * 62 * 62, 62 * 62 * 62 * 62 * 62}

// b62Index maps a byte to its digit value, or -1.
var b62Index = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	for i := 0; i < len(b62Alphabet); i++ {
		t[b62Alphabet[i]] = int8(i)
	}
	return t
}()

// b62Encode writes the len(dst)-digit base62 form of src into dst. dst must
// be wide enough for any value of len(src) bytes.
func b62Encode(dst, src []byte) {
	if len(src)%4 != 0 || len(src)/4 > b62MaxLimbs {
		panic("b62Encode: bad source length")
	}
	var limbs [b62MaxLimbs]uint32
	l := limbs[:len(src)/4]
	for i := range l {
		l[i] = binary.BigEndian.Uint32(src[4*i:])
	}
	for i := len(dst); i > 0; {
		k := min(5, i)
		div := b62Pow[k]
		var rem uint64
		for j := range l {
			cur := rem<<32 | uint64(l[j])
			l[j] = uint32(cur / div)
			rem = cur % div
		}
		for ; k > 0; k-- {
			i--
			dst[i] = b62Alphabet[rem%62]
			rem /= 62
		}
	}
	for _, v := range l {
		if v != 0 {
			panic("b62Encode: destination too narrow")
		}
	}
}

// b62Decode parses src (base62, most significant digit first) into dst as a
// big-endian number. It reports false for a character outside the alphabet
// or a value that does not fit in len(dst) bytes (a non-canonical form).
func b62Decode(dst []byte, src string) bool {
	if len(dst)%4 != 0 || len(dst)/4 > b62MaxLimbs {
		panic("b62Decode: bad destination length")
	}
	var limbs [b62MaxLimbs]uint32
	l := limbs[:len(dst)/4]
	k := len(src) % 5
	if k == 0 {
		k = 5
	}
	for i := 0; i < len(src); i, k = i+k, 5 {
		var v uint64
		for _, c := range []byte(src[i : i+k]) {
			d := b62Index[c]
			if d < 0 {
				return false
			}
			v = v*62 + uint64(d)
		}
		mul, carry := b62Pow[k], v
		for j := len(l) - 1; j >= 0; j-- {
			cur := uint64(l[j])*mul + carry
			l[j] = uint32(cur)
			carry = cur >> 32
		}
		if carry != 0 {
			return false
		}
	}
	for i, v := range l {
		binary.BigEndian.PutUint32(dst[4*i:], v)
	}
	clear(limbs[:])
	return true
}
