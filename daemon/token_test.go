package daemon

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"math/big"
	"math/rand/v2"
	"strings"
	"testing"
)

var allTokenPrefixes = []string{PrefixAuthToken, PrefixOAuth2, PrefixAccessToken, PrefixSession}

func mustNewToken(t testing.TB, prefix string) (string, ParsedToken) {
	t.Helper()
	s, p, err := NewToken(prefix)
	if err != nil {
		t.Fatalf("NewToken(%q): %v", prefix, err)
	}
	return s, p
}

func TestTokenRoundTrip(t *testing.T) {
	for _, prefix := range allTokenPrefixes {
		t.Run(prefix, func(t *testing.T) {
			s, p := mustNewToken(t, prefix)
			if len(s) != 74 || tokenLen != 74 {
				t.Fatalf("token length %d, want %d", len(s), tokenLen)
			}
			if !strings.HasPrefix(s, prefix+"_") {
				t.Fatalf("token does not start with %s_", prefix)
			}
			if p.Prefix != prefix || len(p.ID) != tokenIDLen || !validTokenID(p.ID) {
				t.Fatalf("parsed form from NewToken: prefix %q id %q", p.Prefix, p.ID)
			}
			for _, c := range []byte(s[4:]) {
				if !strings.ContainsRune(b62Alphabet, rune(c)) {
					t.Fatalf("body has %q outside base62", c)
				}
			}
			q, err := ParseToken(s)
			if err != nil {
				t.Fatalf("ParseToken: %v", err)
			}
			if q.Prefix != p.Prefix || q.ID != p.ID || !bytes.Equal(q.Verifier(), p.Verifier()) {
				t.Fatalf("ParseToken = %v, want %v (or verifiers differ)", q, p)
			}
			if len(q.Verifier()) != 32 {
				t.Fatalf("verifier is %d bytes", len(q.Verifier()))
			}
			if !q.Matches(p.Verifier()) {
				t.Fatal("parsed token does not match the verifier of the new one")
			}
			// Re-encoding the parsed parts gives the same token.
			var id [tokenIDBytes]byte
			if !b62Decode(id[:], q.ID) {
				t.Fatal("id does not decode")
			}
			if got := encodeToken(q.Prefix, &id, q.secret); got != s {
				t.Fatal("re-encoding the parsed token gives another string")
			}
		})
	}
}

func TestTokenCRC(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for i := 0; i < 100; i++ {
		data := make([]byte, r.IntN(60))
		for j := range data {
			data[j] = byte(r.Uint32())
		}
		prefix := allTokenPrefixes[i%len(allTokenPrefixes)]
		if got, want := tokenCRC(prefix, data), crc32.ChecksumIEEE(append([]byte(prefix+"_"), data...)); got != want {
			t.Fatalf("tokenCRC = %08x, want %08x", got, want)
		}
	}
}

func TestTokenFixedLength(t *testing.T) {
	// Width constants are the minimal ones: 62^w >= 2^bits > 62^(w-1).
	for _, c := range []struct{ bytes, width int }{{tokenRawBytes, tokenBodyLen}, {tokenIDBytes, tokenIDLen}} {
		limit := new(big.Int).Lsh(big.NewInt(1), uint(8*c.bytes))
		pw := new(big.Int).Exp(big.NewInt(62), big.NewInt(int64(c.width)), nil)
		pw1 := new(big.Int).Exp(big.NewInt(62), big.NewInt(int64(c.width-1)), nil)
		if pw.Cmp(limit) < 0 || pw1.Cmp(limit) >= 0 {
			t.Errorf("width %d is not the minimal base62 width for %d bytes", c.width, c.bytes)
		}
	}
	for i := 0; i < 200; i++ {
		s, _ := mustNewToken(t, allTokenPrefixes[i%len(allTokenPrefixes)])
		if len(s) != tokenLen {
			t.Fatalf("token length %d, want %d", len(s), tokenLen)
		}
		if id := NewTokenID(); len(id) != tokenIDLen || !validTokenID(id) {
			t.Fatalf("NewTokenID = %q", id)
		}
	}
}

// refBase62 is a math/big reference for b62Encode.
func refBase62(src []byte, width int) string {
	n := new(big.Int).SetBytes(src)
	var out []byte
	sixtyTwo, rem := big.NewInt(62), new(big.Int)
	for n.Sign() > 0 {
		n.QuoRem(n, sixtyTwo, rem)
		out = append([]byte{b62Alphabet[rem.Int64()]}, out...)
	}
	return strings.Repeat("0", width-len(out)) + string(out)
}

func TestTokenBase62(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	cases := [][]byte{make([]byte, 52), bytes.Repeat([]byte{0xff}, 52), make([]byte, 16), bytes.Repeat([]byte{0xff}, 16)}
	for i := 0; i < 500; i++ {
		n := 16
		if i%2 == 0 {
			n = 52
		}
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(r.Uint32())
		}
		// Sprinkle leading zeros and 0xff runs to exercise carries.
		switch i % 5 {
		case 1:
			clear(b[:r.IntN(n)])
		case 2:
			copy(b[r.IntN(n):], bytes.Repeat([]byte{0xff}, n))
		}
		cases = append(cases, b)
	}
	for _, b := range cases {
		width := tokenIDLen
		if len(b) == tokenRawBytes {
			width = tokenBodyLen
		}
		dst := make([]byte, width)
		b62Encode(dst, b)
		if want := refBase62(b, width); string(dst) != want {
			t.Fatalf("b62Encode(%x) = %s, want %s", b, dst, want)
		}
		back := make([]byte, len(b))
		if !b62Decode(back, string(dst)) || !bytes.Equal(back, b) {
			t.Fatalf("b62Decode(%s) = %x, want %x", dst, back, b)
		}
	}
	// Values of the right width that do not fit are not canonical.
	for _, s := range []string{strings.Repeat("z", tokenBodyLen), strings.Repeat("z", tokenIDLen), refBase62(new(big.Int).Lsh(big.NewInt(1), 128).Bytes(), tokenIDLen)} {
		dst := make([]byte, tokenIDBytes)
		if len(s) == tokenBodyLen {
			dst = make([]byte, tokenRawBytes)
		}
		if b62Decode(dst, s) {
			t.Errorf("b62Decode accepted the overflowing %s", s)
		}
	}
}

// tokenWithValidCRC re-checksums a token body under another prefix, so a test can
// tell a prefix check from a checksum check.
func tokenWithValidCRC(t *testing.T, prefix, from string) string {
	t.Helper()
	var raw [tokenRawBytes]byte
	if !b62Decode(raw[:], from[4:]) {
		t.Fatal("bad source token")
	}
	id := (*[tokenIDBytes]byte)(raw[:tokenIDBytes])
	sec := (*tokenSecret)(raw[tokenIDBytes : tokenIDBytes+tokenSecretBytes])
	return encodeToken(prefix, id, sec)
}

func TestParseTokenRejects(t *testing.T) {
	cfa, _ := mustNewToken(t, PrefixAuthToken)
	body := cfa[4:]
	tests := []struct {
		name, in string
	}{
		{"empty", ""},
		{"prefix only", "cfa_"},
		{"truncated by one", cfa[:len(cfa)-1]},
		{"truncated by half", cfa[:40]},
		{"extended", cfa + "0"},
		{"extended in front", "0" + cfa},
		{"trailing newline", cfa + "\n"},
		{"leading space", " " + cfa[:len(cfa)-1]},
		{"no underscore", "cfa" + body + "0"},
		{"dash separator", "cfa-" + body},
		{"swapped prefix cft", "cft_" + body},
		{"swapped prefix cfo", "cfo_" + body},
		{"swapped prefix cfs", "cfs_" + body},
		{"unknown prefix", "cfx_" + body},
		{"unknown prefix valid crc", tokenWithValidCRC(t, "cfx", cfa)},
		{"upper-case prefix valid crc", tokenWithValidCRC(t, "CFA", cfa)},
		{"github-like prefix", "ghp_" + body},
		{"non-ASCII in body", "cfa_" + body[:68] + "é"},
		{"non-ASCII prefix", "c\xc3\xa1_" + body},
		{"NUL in body", "cfa_" + body[:69] + "\x00"},
		{"overflowing body", "cfa_" + strings.Repeat("z", tokenBodyLen)},
		{"all zero body", "cfa_" + strings.Repeat("0", tokenBodyLen)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParseToken(tt.in)
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("ParseToken = %v, %v; want ErrMalformedToken", p, err)
			}
			if p != (ParsedToken{}) {
				t.Fatal("a rejected token returns a non-zero ParsedToken")
			}
			if len(tt.in) > 8 && strings.Contains(err.Error(), tt.in[4:]) {
				t.Fatalf("error quotes the token: %v", err)
			}
		})
	}
	// Every swapped prefix, with the body otherwise intact, is caught by the
	// checksum.
	for _, from := range allTokenPrefixes {
		s, _ := mustNewToken(t, from)
		for _, to := range allTokenPrefixes {
			if to == from {
				continue
			}
			if _, err := ParseToken(to + s[3:]); !errors.Is(err, ErrMalformedToken) {
				t.Errorf("%s body under %s_ accepted", from, to)
			}
		}
	}
}

func TestParseTokenRejectsEverySubstitution(t *testing.T) {
	for _, prefix := range allTokenPrefixes {
		s, _ := mustNewToken(t, prefix)
		b := []byte(s)
		n := 0
		for i := tokenPrefixLen + 1; i < len(b); i++ {
			orig := b[i]
			for c := 0; c < 256; c++ {
				if byte(c) == orig {
					continue
				}
				b[i] = byte(c)
				if _, err := ParseToken(string(b)); !errors.Is(err, ErrMalformedToken) {
					t.Fatalf("%s: %q at position %d (was %q) accepted", prefix, byte(c), i, orig)
				}
				n++
			}
			b[i] = orig
		}
		if _, err := ParseToken(string(b)); err != nil {
			t.Fatalf("restored token rejected: %v", err)
		}
		if n != tokenBodyLen*255 {
			t.Fatalf("tried %d substitutions", n)
		}
	}
}

func TestTokensDiffer(t *testing.T) {
	seen := map[string]bool{}
	ids := map[string]bool{}
	verifiers := map[string]bool{}
	for i := 0; i < 100; i++ {
		s, p := mustNewToken(t, PrefixAccessToken)
		if seen[s] || ids[p.ID] || verifiers[string(p.Verifier())] {
			t.Fatal("NewToken repeated a token, id or verifier")
		}
		seen[s], ids[p.ID], verifiers[string(p.Verifier())] = true, true, true
	}
}

func TestTokenMatches(t *testing.T) {
	_, a := mustNewToken(t, PrefixAuthToken)
	_, b := mustNewToken(t, PrefixAuthToken)
	va := a.Verifier()
	flipped := bytes.Clone(va)
	flipped[31] ^= 1
	tests := []struct {
		name     string
		p        ParsedToken
		verifier []byte
		want     bool
	}{
		{"own verifier", a, va, true},
		{"copy of own verifier", a, bytes.Clone(va), true},
		{"other token's verifier", a, b.Verifier(), false},
		{"one bit flipped", a, flipped, false},
		{"truncated", a, va[:31], false},
		{"extended", a, append(bytes.Clone(va), 0), false},
		{"nil", a, nil, false},
		{"empty", a, []byte{}, false},
		{"zero token nil verifier", ParsedToken{}, nil, false},
		{"zero token any verifier", ParsedToken{}, va, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.p.Matches(tt.verifier); got != tt.want {
				t.Fatalf("Matches = %v, want %v", got, tt.want)
			}
		})
	}
	if (ParsedToken{}).Verifier() != nil {
		t.Error("zero ParsedToken has a verifier")
	}
	// Mutating a returned verifier does not change the token.
	v := a.Verifier()
	v[0] ^= 0xff
	if !a.Matches(va) {
		t.Error("Verifier returned shared storage")
	}
}

func TestTokenNeverPrintsSecret(t *testing.T) {
	s, p := mustNewToken(t, PrefixSession)
	sec := p.secret[:]
	// Renderings of the secret (or the token) that a leak would produce.
	needles := map[string]string{
		"token":        s,
		"body":         s[4:],
		"hex":          hex.EncodeToString(sec),
		"HEX":          strings.ToUpper(hex.EncodeToString(sec)),
		"base64":       base64.StdEncoding.EncodeToString(sec),
		"decimal list": strings.Trim(fmt.Sprint(sec[:6]), "[]"),
		"go syntax":    strings.TrimSuffix(fmt.Sprintf("%#v", sec[:4])[len("[]byte{"):], "}"),
		"raw":          string(sec[:6]),
	}
	type exported struct{ Tok ParsedToken }
	type unexported struct{ tok ParsedToken }
	var logText, logJSON bytes.Buffer
	slog.New(slog.NewTextHandler(&logText, nil)).Info("x", "tok", p, "nested", exported{p})
	slog.New(slog.NewJSONHandler(&logJSON, nil)).Info("x", "tok", p, "nested", exported{p})
	js, err := json.Marshal(p)
	if err != nil {
		t.Fatal(err)
	}
	outputs := map[string]string{
		"String":          p.String(),
		"GoString":        p.GoString(),
		"%v":              fmt.Sprintf("%v", p),
		"%+v":             fmt.Sprintf("%+v", p),
		"%#v":             fmt.Sprintf("%#v", p),
		"%s":              fmt.Sprintf("%s", p),
		"%q":              fmt.Sprintf("%q", p),
		"%x":              fmt.Sprintf("%x", p),
		"%X":              fmt.Sprintf("%X", p),
		"%d":              fmt.Sprintf("%d", p),
		"pointer %+v":     fmt.Sprintf("%+v", &p),
		"pointer %#v":     fmt.Sprintf("%#v", &p),
		"Sprint":          fmt.Sprint(p, &p),
		"slice %#v":       fmt.Sprintf("%#v", []ParsedToken{p}),
		"exported %+v":    fmt.Sprintf("%+v", exported{p}),
		"exported %#v":    fmt.Sprintf("%#v", exported{p}),
		"exported %x":     fmt.Sprintf("%x", exported{p}),
		"unexported %v":   fmt.Sprintf("%v", unexported{p}),
		"unexported %+v":  fmt.Sprintf("%+v", unexported{p}),
		"unexported %#v":  fmt.Sprintf("%#v", unexported{p}),
		"unexported %x":   fmt.Sprintf("%x", any(unexported{p})),
		"unexported %d":   fmt.Sprintf("%d", any(unexported{p})),
		"secret field %v": fmt.Sprintf("%v %+v %#v %s %x %d", p.secret, p.secret, p.secret, p.secret, p.secret, p.secret),
		"slog text":       logText.String(),
		"slog json":       logJSON.String(),
		"json":            string(js),
	}
	for oname, out := range outputs {
		for nname, needle := range needles {
			if strings.Contains(out, needle) {
				t.Errorf("%s output contains the secret (%s): %s", oname, nname, out)
			}
		}
	}
	for _, verb := range []string{"%v", "%+v", "%s"} {
		if out := fmt.Sprintf(verb, p); out != p.String() || !strings.Contains(out, p.ID) || !strings.HasPrefix(out, "cfs_") {
			t.Errorf("%s = %q, want the String form with the id", verb, out)
		}
	}
	if out := fmt.Sprintf("%#v", p); !strings.Contains(out, p.ID) || !strings.Contains(out, "redacted") {
		t.Errorf("%%#v = %q", out)
	}
	if got := (ParsedToken{}).String(); got == "" || strings.Contains(got, "_") {
		t.Errorf("zero String = %q", got)
	}
}

func TestTokenID(t *testing.T) {
	a, b := NewTokenID(), NewTokenID()
	if a == b {
		t.Fatal("NewTokenID repeated")
	}
	tests := []struct {
		in   string
		want bool
	}{
		{a, true},
		{strings.Repeat("0", tokenIDLen), true},
		{refBase62(bytes.Repeat([]byte{0xff}, 16), tokenIDLen), true},
		{"", false},
		{a[:tokenIDLen-1], false},
		{a + "0", false},
		{a[:tokenIDLen-1] + "-", false},
		{a[:tokenIDLen-1] + "é"[:1], false},
		{strings.Repeat("z", tokenIDLen), false}, // > 2^128
	}
	for _, tt := range tests {
		if got := validTokenID(tt.in); got != tt.want {
			t.Errorf("validTokenID(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

func TestNewTokenUnknownPrefix(t *testing.T) {
	for _, prefix := range []string{"", "cfx", "CFA", "cfa_", "ghp"} {
		if s, p, err := NewToken(prefix); err == nil || s != "" || p != (ParsedToken{}) {
			t.Errorf("NewToken(%q) = %q, %v, %v; want an error", prefix, s, p, err)
		}
	}
}

var malformedReasons = map[string]bool{
	"wrong length": true, "missing '_' after the prefix": true, "unknown prefix": true,
	"not base62": true, "bad checksum": true,
}

func FuzzParseToken(f *testing.F) {
	for _, prefix := range allTokenPrefixes {
		s, _ := mustNewToken(f, prefix)
		f.Add(s)
		f.Add(s[:len(s)-1] + "0")
		f.Add("cfx" + s[3:])
	}
	f.Add("")
	f.Add("cfa_" + strings.Repeat("z", tokenBodyLen))
	f.Add("cfa_" + strings.Repeat("0", tokenBodyLen))
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrMalformedToken) {
				t.Fatalf("error %v does not wrap ErrMalformedToken", err)
			}
			reason, ok := strings.CutPrefix(err.Error(), ErrMalformedToken.Error()+": ")
			if !ok || !malformedReasons[reason] {
				t.Fatalf("unexpected error text %q", err.Error())
			}
			return
		}
		if len(s) != tokenLen || !knownTokenPrefix(p.Prefix) || !validTokenID(p.ID) || len(p.Verifier()) != 32 {
			t.Fatalf("accepted %q as %#v", s, p)
		}
		var id [tokenIDBytes]byte
		if !b62Decode(id[:], p.ID) {
			t.Fatal("accepted id does not decode")
		}
		if got := encodeToken(p.Prefix, &id, p.secret); got != s {
			t.Fatalf("accepted %q re-encodes to %q", s, got)
		}
	})
}

func BenchmarkParseToken(b *testing.B) {
	s, _ := mustNewToken(b, PrefixAccessToken)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseToken(s); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerify is the per-request cost of checking a presented token
// against its stored verifier: parse, SHA-256, constant-time compare.
func BenchmarkVerify(b *testing.B) {
	s, p := mustNewToken(b, PrefixAccessToken)
	stored := p.Verifier()
	b.ReportAllocs()
	for b.Loop() {
		q, err := ParseToken(s)
		if err != nil || !q.Matches(stored) {
			b.Fatal("no match")
		}
	}
}

func BenchmarkNewToken(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := NewToken(PrefixSession); err != nil {
			b.Fatal(err)
		}
	}
}
