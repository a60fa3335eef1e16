package audit

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
	"os"
	"path/filepath"
	"testing"
)

// FuzzVerifyLog: whatever the log file holds, verification never panics,
// and a log that verifies holds, up to the checkpoint recorded in head,
// exactly the lines that were written.
func FuzzVerifyLog(f *testing.F) {
	dir, s := referenceLog(f)
	ref, err := os.ReadFile(filepath.Join(dir, currentName))
	if err != nil {
		f.Fatal(err)
	}
	head, err := os.ReadFile(filepath.Join(dir, headName))
	if err != nil {
		f.Fatal(err)
	}
	refRep := verifyDir(f, dir, s.keys())
	refLines := bytes.Split(ref, []byte("\n"))
	f.Add(ref)
	f.Add(ref[:len(ref)/2])
	f.Add(bytes.Replace(ref, []byte(`"seq":3`), []byte(`"seq":4`), 1))
	f.Add([]byte("{}\n"))
	f.Fuzz(func(t *testing.T, file []byte) {
		d := t.TempDir()
		if err := os.WriteFile(filepath.Join(d, currentName), file, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(d, headName), head, 0o600); err != nil {
			t.Fatal(err)
		}
		rep, err := VerifyDir(context.Background(), d, s.keys())
		if err != nil || !rep.OK {
			return
		}
		lines := bytes.Split(file, []byte("\n"))
		n := int(refRep.LastCheckpoint)
		if len(lines) < n {
			t.Fatalf("a log shorter than its head checkpoint verified: %+v", rep)
		}
		for i := range n {
			if !bytes.Equal(lines[i], refLines[i]) {
				t.Fatalf("line %d was changed and the log still verified: %+v", i+1, rep)
			}
		}
	})
}

// FuzzParseJWKS: any accepted key is a valid P-256 point or an RSA key
// PS256 may use (at least 2048 bits, an odd exponent of 3 or more).
func FuzzParseJWKS(f *testing.F) {
	f.Add([]byte(`{"keys":[]}`))
	f.Add([]byte(`{"keys":[{"kty":"EC","crv":"P-256","kid":"k","x":"AA","y":"AA"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","alg":"PS256","kid":"k","n":"AQAB","e":"AQAB"}]}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, b []byte) {
		keys, err := ParseJWKS(b)
		if err != nil {
			return
		}
		for kid, pub := range keys {
			switch k := pub.(type) {
			case *ecdsa.PublicKey:
				if _, err := k.Bytes(); err != nil {
					t.Fatalf("key %q is not a valid point: %v", kid, err)
				}
			case *rsa.PublicKey:
				if k.N.BitLen() < rsaMinBits || k.E < 3 || k.E%2 == 0 {
					t.Fatalf("key %q is RSA-%d with exponent %d", kid, k.N.BitLen(), k.E)
				}
			default:
				t.Fatalf("key %q is a %T", kid, pub)
			}
		}
	})
}

// FuzzLastChange: reading a file back from its end to its last checkpoint
// (in chunks of any size) finds the change seq that splitting it whole
// does, and so does reading it from the start (as archived files are).
func FuzzLastChange(f *testing.F) {
	dir := f.TempDir()
	s := newTestSigner(f, "k1")
	l := openLog(f, dir, s, 3, 0)
	mustAppend(f, l, 1, 2)
	l.Record(event(1))
	mustAppend(f, l, 3, 4, 5)
	closeLog(f, l)
	ref, err := os.ReadFile(filepath.Join(dir, currentName))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(ref, uint16(0))
	f.Add(ref, uint16(7))
	f.Add(ref[:len(ref)-9], uint16(100))
	f.Add([]byte("\n\n{\"type\":\"checkpoint\",\"change\":3}\n{\"change\":2}"), uint16(1))
	f.Add([]byte(`{"change":2,"target":{"change":"9"}}`+"\n"), uint16(5))
	f.Fuzz(func(t *testing.T, data []byte, chunk uint16) {
		var want uint64
		var wantFound bool
		end := bytes.LastIndexByte(data, '\n')
		if end >= 0 {
			for _, line := range bytes.Split(data[:end], []byte("\n")) {
				if c, cp := lineChange(line); cp {
					want, wantFound = c, true
				} else {
					want = max(want, c)
				}
			}
		}
		n := int(chunk%512) + 1
		got, found, err := changeBack(bytes.NewReader(data), int64(len(data)), n)
		if err != nil || got != want || found != wantFound {
			t.Fatalf("read back in chunks of %d: %d, %v, %v; want %d, %v", n, got, found, err, want, wantFound)
		}
		got, found, err = changeForward(bytes.NewReader(data[:end+1]))
		if err != nil || got != want || found != wantFound {
			t.Fatalf("read from the start: %d, %v, %v; want %d, %v", got, found, err, want, wantFound)
		}
	})
}
