package kv

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/dgraph-io/badger/v4"
)

// Report is what Verify found.
type Report struct {
	Tables  int // table files whose blocks were checked
	Records int
	Indexes int // index entries (i/ keys)
	Uniques int // unique claims (u/ keys)
	// Problems lists what is wrong, one line each, at most the limit
	// given to Verify; More counts the ones left out.
	Problems []string
	More     int
}

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < cap(r.Problems) {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		return
	}
	r.More++
}

// Verify checks the whole store: every table's blocks against their
// checksums, every record's envelope and JSON, every index entry a record
// declares against the index keys, and every index key and unique claim
// against the record it points to. It reports at most limit problems and
// counts the rest. It reads one snapshot; writes may go on meanwhile.
func (s *Store) Verify(ctx context.Context, limit int) (Report, error) {
	rep := Report{Problems: make([]string, 0, max(limit, 1))}
	if err := s.acquire(); err != nil {
		return rep, err
	}
	defer s.mu.RUnlock()
	rep.Tables = len(s.db.Tables())
	if err := s.db.VerifyChecksum(); err != nil {
		rep.problem("table checksums: %s", oneLine(err.Error()))
	}
	err := s.db.View(func(txn *badger.Txn) error {
		opts := badger.DefaultIteratorOptions
		opts.PrefetchValues = false
		it := txn.NewIterator(opts)
		defer it.Close()
		for it.Rewind(); it.Valid(); it.Next() {
			if err := ctx.Err(); err != nil {
				return err
			}
			item := it.Item()
			key := string(item.Key())
			var err error
			switch {
			case strings.HasPrefix(key, prefixRecord):
				rep.Records++
				err = item.Value(func(v []byte) error { verifyRecord(txn, key, v, &rep); return nil })
			case strings.HasPrefix(key, prefixIndex):
				rep.Indexes++
				verifyIndex(txn, key, &rep)
			case strings.HasPrefix(key, prefixUnique):
				rep.Uniques++
				err = item.Value(func(v []byte) error { verifyUnique(txn, key, string(v), &rep); return nil })
			case key == commitsKey:
				if item.ValueSize() != 8 {
					rep.problem("commit counter: %d bytes, want 8", item.ValueSize())
				}
			default:
				rep.problem("key %q: not a record, index entry or unique claim", key)
			}
			if err != nil {
				rep.problem("key %q: value cannot be read: %v", key, err)
			}
		}
		return nil
	})
	if err != nil {
		return rep, fmt.Errorf("kv: verify %s: %w", s.dir, err)
	}
	return rep, nil
}

// splitRecordKey splits "r/<table>/<id>".
func splitRecordKey(key string) (table, id string, ok bool) {
	table, id, ok = strings.Cut(strings.TrimPrefix(key, prefixRecord), "/")
	return table, id, ok && table != "" && id != ""
}

// exists reports whether key is present.
func exists(txn *badger.Txn, key []byte) (bool, error) {
	_, err := txn.Get(key)
	if err == badger.ErrKeyNotFound {
		return false, nil
	}
	return err == nil, err
}

// envelopeAt reads and decodes the record (table, id); found is false
// when it is absent.
func envelopeAt(txn *badger.Txn, table, id string) (e envelope, found bool, err error) {
	item, err := txn.Get(recordKey(table, id))
	if err == badger.ErrKeyNotFound {
		return e, false, nil
	}
	if err != nil {
		return e, false, err
	}
	err = item.Value(func(v []byte) error {
		e, err = decodeEnvelope(bytes.Clone(v))
		return err
	})
	return e, true, err
}

func verifyRecord(txn *badger.Txn, key string, val []byte, rep *Report) {
	table, id, ok := splitRecordKey(key)
	if !ok {
		rep.problem("record key %q is malformed", key)
		return
	}
	e, err := decodeEnvelope(bytes.Clone(val))
	if err != nil {
		rep.problem("record %s/%s: %v", table, id, err)
		return
	}
	if !json.Valid(e.data) {
		rep.problem("record %s/%s: its JSON does not parse", table, id)
	}
	for _, ix := range e.indexes {
		if ok, err := exists(txn, indexKey(table, ix.Name, ix.Value, id)); err != nil || !ok {
			rep.problem("record %s/%s: its index entry %s=%q is missing (%v)", table, id, ix.Name, ix.Value, err)
		}
		if !ix.Unique {
			continue
		}
		item, err := txn.Get(uniqueKey(table, ix.Name, ix.Value))
		if err != nil {
			rep.problem("record %s/%s: its unique claim %s=%q is missing (%v)", table, id, ix.Name, ix.Value, err)
			continue
		}
		holder, _ := item.ValueCopy(nil)
		if string(holder) != id {
			rep.problem("record %s/%s: its unique claim %s=%q is held by %q", table, id, ix.Name, ix.Value, holder)
		}
	}
}

func verifyIndex(txn *badger.Txn, key string, rep *Report) {
	rest := strings.TrimPrefix(key, prefixIndex)
	table, rest, ok1 := strings.Cut(rest, "/")
	name, rest, ok2 := strings.Cut(rest, "/")
	value, id, ok3 := strings.Cut(rest, "\x00")
	if !ok1 || !ok2 || !ok3 {
		rep.problem("index key %q is malformed", key)
		return
	}
	e, found, err := envelopeAt(txn, table, id)
	switch {
	case err != nil:
		rep.problem("index entry %s/%s=%q of %s: its record cannot be read: %v", table, name, value, id, err)
	case !found:
		rep.problem("index entry %s/%s=%q points to %s, which does not exist", table, name, value, id)
	case !declares(e, name, value, false):
		rep.problem("index entry %s/%s=%q points to %s, which does not declare it", table, name, value, id)
	}
}

func verifyUnique(txn *badger.Txn, key, holder string, rep *Report) {
	rest := strings.TrimPrefix(key, prefixUnique)
	table, rest, ok1 := strings.Cut(rest, "/")
	name, value, ok2 := strings.Cut(rest, "/")
	if !ok1 || !ok2 {
		rep.problem("unique key %q is malformed", key)
		return
	}
	e, found, err := envelopeAt(txn, table, holder)
	switch {
	case err != nil:
		rep.problem("unique claim %s/%s=%q of %s: its record cannot be read: %v", table, name, value, holder, err)
	case !found:
		rep.problem("unique claim %s/%s=%q is held by %s, which does not exist", table, name, value, holder)
	case !declares(e, name, value, true):
		rep.problem("unique claim %s/%s=%q is held by %s, which does not declare it unique", table, name, value, holder)
	}
}

// declares reports whether e lists the index entry (name, value), unique
// when unique is asked.
func declares(e envelope, name, value string, unique bool) bool {
	for _, ix := range e.indexes {
		if ix.Name == name && ix.Value == value && (ix.Unique || !unique) {
			return true
		}
	}
	return false
}
