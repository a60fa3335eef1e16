package kv

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// Key prefixes; see doc.go for the layout.
const (
	prefixRecord = "r/"
	prefixIndex  = "i/"
	prefixUnique = "u/"
)

// checkName validates a table name, index name or id.
func checkName(what, s string) error {
	if s == "" {
		return fmt.Errorf("kv: %s is empty", what)
	}
	if strings.ContainsAny(s, "/\x00") {
		return fmt.Errorf("kv: %s %q contains '/' or NUL", what, s)
	}
	return nil
}

func checkValue(s string) error {
	if strings.IndexByte(s, 0) >= 0 {
		return fmt.Errorf("kv: index value %q contains NUL", s)
	}
	return nil
}

// Every key builder returns a fresh slice: Badger keeps the slices passed to
// Set and Delete until commit.

func recordPrefix(table string) []byte {
	return []byte(prefixRecord + table + "/")
}

func recordKey(table, id string) []byte {
	return []byte(prefixRecord + table + "/" + id)
}

func indexPrefix(table, name, value string) []byte {
	return []byte(prefixIndex + table + "/" + name + "/" + value + "\x00")
}

func indexKey(table, name, value, id string) []byte {
	return []byte(prefixIndex + table + "/" + name + "/" + value + "\x00" + id)
}

func uniqueKey(table, name, value string) []byte {
	return []byte(prefixUnique + table + "/" + name + "/" + value)
}

const envelopeV1 = 1

// envelope is a stored record: its index entries and its JSON.
type envelope struct {
	indexes []Index
	data    []byte
}

func encodeEnvelope(indexes []Index, data []byte) []byte {
	n := 1 + binary.MaxVarintLen64 + len(data)
	for _, ix := range indexes {
		n += 1 + 2*binary.MaxVarintLen64 + len(ix.Name) + len(ix.Value)
	}
	b := make([]byte, 0, n)
	b = append(b, envelopeV1)
	b = binary.AppendUvarint(b, uint64(len(indexes)))
	for _, ix := range indexes {
		var flags byte
		if ix.Unique {
			flags |= 1
		}
		b = append(b, flags)
		b = binary.AppendUvarint(b, uint64(len(ix.Name)))
		b = append(b, ix.Name...)
		b = binary.AppendUvarint(b, uint64(len(ix.Value)))
		b = append(b, ix.Value...)
	}
	return append(b, data...)
}

var errCorrupt = errors.New("kv: corrupt record envelope")

// decodeEnvelope parses b. The returned data aliases b.
func decodeEnvelope(b []byte) (envelope, error) {
	var e envelope
	if len(b) == 0 || b[0] != envelopeV1 {
		return e, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	b = b[1:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return e, errCorrupt
	}
	b = b[n:]
	readString := func() (string, bool) {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return "", false
		}
		s := string(b[n : n+int(l)])
		b = b[n+int(l):]
		return s, true
	}
	e.indexes = make([]Index, 0, count)
	for range count {
		if len(b) == 0 {
			return e, errCorrupt
		}
		flags := b[0]
		b = b[1:]
		name, ok1 := readString()
		value, ok2 := readString()
		if !ok1 || !ok2 {
			return e, errCorrupt
		}
		e.indexes = append(e.indexes, Index{Name: name, Value: value, Unique: flags&1 != 0})
	}
	e.data = b
	return e, nil
}

// envelopeData returns the JSON part of an envelope without decoding the
// index list.
func envelopeData(b []byte) ([]byte, error) {
	// Same checks as decodeEnvelope, without allocating the index list.
	if len(b) == 0 || b[0] != envelopeV1 {
		return nil, fmt.Errorf("%w: unknown version", errCorrupt)
	}
	b = b[1:]
	count, n := binary.Uvarint(b)
	if n <= 0 || count > uint64(len(b)) {
		return nil, errCorrupt
	}
	b = b[n:]
	skipString := func() bool {
		l, n := binary.Uvarint(b)
		if n <= 0 || l > uint64(len(b)-n) {
			return false
		}
		b = b[n+int(l):]
		return true
	}
	for range count {
		if len(b) == 0 {
			return nil, errCorrupt
		}
		b = b[1:]
		nameOK := skipString()        // index name
		if !nameOK || !skipString() { // index value
			return nil, errCorrupt
		}
	}
	return b, nil
}
