package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The reference log of these tests: 12 events and a checkpoint after
// every 4, so lines 5, 10 and 15 are checkpoints and 15 is the last line
// (and the checkpoint in head).
func referenceLog(t testing.TB) (string, *testSigner) {
	t.Helper()
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 4, 0)
	for i := range 12 {
		l.Record(event(i))
	}
	closeLog(t, l)
	rep := verifyDir(t, dir, s.keys())
	if !rep.OK || rep.Entries != 15 || rep.Checkpoints != 3 || rep.LastSeq != 15 {
		t.Fatalf("reference log: %+v", rep)
	}
	return dir, s
}

func readLines(t testing.TB, dir string) [][]byte {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dir, currentName))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Split(bytes.TrimSuffix(data, []byte("\n")), []byte("\n"))
}

func writeLines(t testing.TB, dir string, lines [][]byte) {
	t.Helper()
	data := append(bytes.Join(lines, []byte("\n")), '\n')
	if err := os.WriteFile(filepath.Join(dir, currentName), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// rechain recomputes every prev from line i on, as someone without the
// signing key would to hide an edit.
func rechain(t testing.TB, lines [][]byte, from int) {
	t.Helper()
	for i := from; i < len(lines); i++ {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(lines[i], &m); err != nil {
			t.Fatal(err)
		}
		h := lineHash(lines[i-1])
		prev, _ := json.Marshal(hex.EncodeToString(h[:]))
		old := m["prev"]
		lines[i] = bytes.Replace(lines[i], old, prev, 1)
	}
}

func TestVerifyDetectsTampering(t *testing.T) {
	other := newTestSigner(t, "k1") // same kid, another key
	tests := []struct {
		name    string
		tamper  func(t *testing.T, lines [][]byte) [][]byte
		wantBad uint64
		reason  string
	}{
		{"one byte of an event edited", func(t *testing.T, l [][]byte) [][]byte {
			l[6] = bytes.Replace(l[6], []byte("id-005"), []byte("id-00X"), 1)
			return l
		}, 7, "does not match the hash"},
		{"an event made invalid", func(t *testing.T, l [][]byte) [][]byte {
			l[6] = l[6][:len(l[6])-1]
			return l
		}, 7, "not valid JSON"},
		{"an event's prev edited", func(t *testing.T, l [][]byte) [][]byte {
			l[6] = bytes.Replace(l[6], []byte(`"prev":"`), []byte(`"prev":"0`), 1)
			l[6] = bytes.Replace(l[6], []byte(`","type"`), []byte(`","type"`), 1)
			return l
		}, 6, "does not match the hash"},
		{"a line deleted", func(t *testing.T, l [][]byte) [][]byte {
			return append(l[:6:6], l[7:]...)
		}, 7, "expected entry 7, found entry 8"},
		{"two lines swapped", func(t *testing.T, l [][]byte) [][]byte {
			l[6], l[7] = l[7], l[6]
			return l
		}, 7, "expected entry 7, found entry 8"},
		{"a line inserted", func(t *testing.T, l [][]byte) [][]byte {
			return append(l[:6:6], append([][]byte{l[5]}, l[6:]...)...)
		}, 7, "expected entry 7, found entry 6"},
		{"an edit re-chained: the next checkpoint no longer verifies", func(t *testing.T, l [][]byte) [][]byte {
			l[6] = bytes.Replace(l[6], []byte("id-005"), []byte("id-00X"), 1)
			rechain(t, l, 7)
			return l
		}, 6, "signature of checkpoint 10 does not verify"},
		{"a checkpoint forged with another key", func(t *testing.T, l [][]byte) [][]byte {
			var e Entry
			if err := json.Unmarshal(l[9], &e); err != nil {
				t.Fatal(err)
			}
			sig, _, _ := other.Sign(context.Background(), checkpointDigest(e.Seq, e.Time, e.Prev))
			l[9] = bytes.Replace(l[9], []byte(e.Sig), []byte(b64.EncodeToString(sig)), 1)
			return l
		}, 6, "signature of checkpoint 10 does not verify"},
		{"a checkpoint naming an unknown key", func(t *testing.T, l [][]byte) [][]byte {
			l[9] = bytes.Replace(l[9], []byte(`"kid":"k1"`), []byte(`"kid":"k2"`), 1)
			return l
		}, 6, "not among the verification keys"},
		{"a checkpoint turned into an event", func(t *testing.T, l [][]byte) [][]byte {
			l[14] = bytes.Replace(l[14], []byte(`"type":"checkpoint"`), []byte(`"type":"event"`), 1)
			return l
		}, 11, "is not the one that was written"},
		{"truncated below the last checkpoint", func(t *testing.T, l [][]byte) [][]byte {
			return l[:12]
		}, 13, "was truncated"},
		{"emptied", func(t *testing.T, l [][]byte) [][]byte {
			return nil
		}, 1, "was truncated"},
		{"a line after the last checkpoint appended", func(t *testing.T, l [][]byte) [][]byte {
			return append(l, l[3])
		}, 16, "expected entry 16, found entry 4"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s := referenceLog(t)
			lines := tt.tamper(t, readLines(t, dir))
			if lines == nil {
				if err := os.WriteFile(filepath.Join(dir, currentName), nil, 0o600); err != nil {
					t.Fatal(err)
				}
			} else {
				writeLines(t, dir, lines)
			}
			rep := verifyDir(t, dir, s.keys())
			if rep.OK || rep.FirstBadSeq != tt.wantBad || !strings.Contains(rep.Reason, tt.reason) {
				t.Fatalf("report %+v\nwant first bad %d, reason containing %q", rep, tt.wantBad, tt.reason)
			}
		})
	}
}

// TestVerifyRefusesMalleatedSignature: a checkpoint signature is read in
// one encoding only (64 bytes r||s). Its high-S twin verifies (it signs
// the same digest; logs written before signatures were normalised hold
// them), a value past n does not.
func TestVerifyRefusesMalleatedSignature(t *testing.T) {
	n := elliptic.P256().Params().N
	t.Run("high-S twin verifies", func(t *testing.T) {
		dir, s := referenceLog(t)
		lines := readLines(t, dir)
		var e Entry
		if err := json.Unmarshal(lines[14], &e); err != nil {
			t.Fatal(err)
		}
		sig, err := b64.DecodeString(e.Sig)
		if err != nil {
			t.Fatal(err)
		}
		twin := slices.Clone(sig)
		new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:])).FillBytes(twin[32:])
		lines[14] = bytes.Replace(lines[14], []byte(e.Sig), []byte(b64.EncodeToString(twin)), 1)
		writeLines(t, dir, lines)
		if err := writeHead(dir, lines[14]); err != nil {
			t.Fatal(err)
		}
		if rep := verifyDir(t, dir, s.keys()); !rep.OK {
			t.Errorf("a high-S checkpoint (as older daemons wrote them): %+v", rep)
		}
	})
	tests := []struct {
		name string
		sig  func(sig []byte) []byte
	}{
		{"s + n (does not fit 32 bytes: 33)", func(sig []byte) []byte {
			s := new(big.Int).Add(n, new(big.Int).SetBytes(sig[32:]))
			return append(slices.Clone(sig[:32]), s.Bytes()...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir, s := referenceLog(t)
			lines := readLines(t, dir)
			var e Entry
			if err := json.Unmarshal(lines[14], &e); err != nil {
				t.Fatal(err)
			}
			sig, err := b64.DecodeString(e.Sig)
			if err != nil {
				t.Fatal(err)
			}
			lines[14] = bytes.Replace(lines[14], []byte(e.Sig), []byte(b64.EncodeToString(tt.sig(sig))), 1)
			writeLines(t, dir, lines)
			if err := writeHead(dir, lines[14]); err != nil {
				t.Fatal(err)
			}
			rep := verifyDir(t, dir, s.keys())
			if rep.OK || rep.FirstBadSeq != 11 || !strings.Contains(rep.Reason, "signature of checkpoint 15 does not verify") {
				t.Fatalf("report %+v, want checkpoint 15 refused", rep)
			}
		})
	}
}

// TestVerifySigEncoding: the signature's base64url is strict, so its
// unused trailing bits cannot give it a second spelling.
func TestVerifySigEncoding(t *testing.T) {
	dir, s := referenceLog(t)
	lines := readLines(t, dir)
	var e Entry
	if err := json.Unmarshal(lines[14], &e); err != nil {
		t.Fatal(err)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, e.Sig[len(e.Sig)-1])
	other := e.Sig[:len(e.Sig)-1] + string(alphabet[last^1]) // 64 bytes: 4 unused bits at the end
	lines[14] = bytes.Replace(lines[14], []byte(e.Sig), []byte(other), 1)
	writeLines(t, dir, lines)
	if err := writeHead(dir, lines[14]); err != nil {
		t.Fatal(err)
	}
	if rep := verifyDir(t, dir, s.keys()); rep.OK || rep.FirstBadSeq != 11 {
		t.Fatalf("report %+v, want checkpoint 15 refused", rep)
	}
}

func TestVerifyWithWrongKeys(t *testing.T) {
	dir, _ := referenceLog(t)
	rep := verifyDir(t, dir, newTestSigner(t, "k1").keys())
	if rep.OK || rep.FirstBadSeq != 1 || !strings.Contains(rep.Reason, "checkpoint 5") {
		t.Fatalf("report %+v, want checkpoint 5 to fail with another key", rep)
	}
}

// A cut below the checkpoint in head stays visible after the daemon
// restarts and writes new checkpoints (which replace head).
func TestTruncationSurvivesRestart(t *testing.T) {
	dir, s := referenceLog(t)
	writeLines(t, dir, readLines(t, dir)[:8])
	l := openLog(t, dir, s, 4, 0)
	for i := range 9 {
		l.Record(event(100 + i))
	}
	closeLog(t, l)
	rep := verifyDir(t, dir, s.keys())
	if rep.OK || rep.FirstBadSeq != 9 || !strings.Contains(rep.Reason, "cut or replaced") {
		t.Fatalf("report %+v, want the discontinuity at entry 9", rep)
	}
}

// What cannot be detected, stated as a test: without a checkpoint after
// them, the last entries of a log whose daemon crashed can be dropped.
func TestUnsignedTailCanBeDropped(t *testing.T) {
	dir, s := referenceLog(t)
	l := openLog(t, dir, s, 100, 0)
	for i := range 3 {
		l.Record(event(200 + i))
	}
	if err := l.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	// A crash: no closing checkpoint. (Close the file behind the log's
	// back after the test.)
	t.Cleanup(func() { l.f.Close() })
	rep := verifyDir(t, dir, s.keys())
	if !rep.OK || rep.Unsigned != 3 {
		t.Fatalf("report %+v, want ok with 3 unsigned entries", rep)
	}
	writeLines(t, dir, readLines(t, dir)[:16])
	rep = verifyDir(t, dir, s.keys())
	if !rep.OK || rep.Unsigned != 1 {
		t.Fatalf("after dropping unsigned entries: %+v, want ok (undetectable)", rep)
	}
}

func TestVerifyFileOfARotatedLog(t *testing.T) {
	dir := t.TempDir()
	s := newTestSigner(t, "k1")
	l := openLog(t, dir, s, 4, 600)
	for i := range 20 {
		l.Record(event(i))
	}
	closeLog(t, l)
	files, err := listFiles(dir)
	if err != nil || len(files) < 3 {
		t.Fatalf("files %v, %v", files, err)
	}
	mid := files[1]
	rep, err := VerifyFile(context.Background(), mid.path, s.keys())
	if err != nil || !rep.OK || rep.FirstSeq != mid.firstSeq {
		t.Fatalf("VerifyFile(%s) = %+v, %v", mid.path, rep, err)
	}
	// Removing a middle file breaks the whole.
	if err := os.Remove(mid.path); err != nil {
		t.Fatal(err)
	}
	rep = verifyDir(t, dir, s.keys())
	if rep.OK || rep.FirstBadSeq != mid.firstSeq {
		t.Fatalf("without %s: %+v, want first bad %d", mid.path, rep, mid.firstSeq)
	}
}

func TestParseJWKS(t *testing.T) {
	s := newTestSigner(t, "kid-1")
	b, _ := s.key.PublicKey.Bytes()
	x, y := b64.EncodeToString(b[1:33]), b64.EncodeToString(b[33:])
	ec := `{"kty":"EC","crv":"P-256","kid":"kid-1","x":"` + x + `","y":"` + y + `","use":"sig","alg":"ES256"}`
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	b384, _ := p384.PublicKey.Bytes()
	ec384 := `{"kty":"EC","crv":"P-384","kid":"p384","x":"` + b64.EncodeToString(b384[1:49]) + `","y":"` + b64.EncodeToString(b384[49:]) + `"}`
	tests := []struct {
		name    string
		jwks    string
		wantErr string // "" for the set {kid-1: s's key}
	}{
		{"one EC key", `{"keys":[` + ec + `]}`, ""},
		{"EC key without alg", `{"keys":[` + strings.Replace(ec, `,"alg":"ES256"`, "", 1) + `]}`, ""},
		{"RSA key not for PS256 skipped", `{"keys":[{"kty":"RSA","kid":"r"},` + ec + `]}`, ""},
		{"P-384 key skipped", `{"keys":[` + ec384 + `,` + ec + `]}`, ""},
		{"unknown kty skipped", `{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"ed","x":"AA"},{"kty":"oct","k":"AA"},` + ec + `]}`, ""},
		{"not JSON", `[`, "jwks: "},
		{"no keys", `{}`, "jwks: no EC P-256 or PS256 RSA key"},
		{"only keys of other kinds", `{"keys":[` + ec384 + `]}`, "jwks: no EC P-256 or PS256 RSA key"},
		{"EC key without kid", `{"keys":[` + strings.Replace(ec, `"kid":"kid-1",`, "", 1) + `]}`, "jwks: key 0 has no kid"},
		{"EC key with short coordinates", `{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA","kid":"k"}]}`, "jwks: key k: "},
		{"EC key off the curve", `{"keys":[` + strings.Replace(ec, x, y, 1) + `]}`, "jwks: key kid-1: "},
		{"EC private key", `{"keys":[` + strings.Replace(ec, `"use"`, `"d":"`+x+`","use"`, 1) + `]}`, "jwks: key kid-1 holds a private key"},
		{"key not an object", `{"keys":[1]}`, "jwks: key 0: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			keys, err := ParseJWKS([]byte(tt.jwks))
			if tt.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tt.wantErr) {
					t.Fatalf("ParseJWKS = %v, %v; want error %q...", keys, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			pub, ok := keys.PublicKey("kid-1")
			if !ok || !pub.Equal(&s.key.PublicKey) || len(keys) != 1 {
				t.Fatalf("keys %v", keys)
			}
		})
	}
}
