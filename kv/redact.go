package kv

import (
	"fmt"
	"log/slog"
	"strconv"
)

// Options and *Store never print the encryption key: fmt would show
// Options.EncryptionKey, and a *Store's key too (fmt prints unexported
// fields), and slog's JSON handler would encode the key as base64.

// String shows whether a key is set, never the key.
func (o Options) String() string {
	return fmt.Sprintf("{Dir:%s GCInterval:%s EncryptionKey:%s EncryptionKeyRotation:%s}",
		o.Dir, o.GCInterval, keyShown(o.EncryptionKey), o.EncryptionKeyRotation)
}

// Format makes every fmt verb print String.
func (o Options) Format(f fmt.State, verb rune) { formatString(f, verb, o.String()) }

// LogValue logs the options, the key redacted.
func (o Options) LogValue() slog.Value {
	return slog.GroupValue(slog.String("dir", o.Dir), slog.Duration("gc_interval", o.GCInterval),
		slog.String("encryption_key", keyShown(o.EncryptionKey)), slog.Duration("encryption_key_rotation", o.EncryptionKeyRotation))
}

// String names the store by its directory.
func (s *Store) String() string {
	if s == nil {
		return "<no store>"
	}
	return "kv store " + s.dir
}

// Format makes every fmt verb print String.
func (s *Store) Format(f fmt.State, verb rune) { formatString(f, verb, s.String()) }

// LogValue logs String.
func (s *Store) LogValue() slog.Value { return slog.StringValue(s.String()) }

func keyShown(k []byte) string {
	if len(k) == 0 {
		return ""
	}
	return "[redacted " + strconv.Itoa(len(k)*8) + "-bit key]"
}

func formatString(f fmt.State, verb rune, s string) {
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}
