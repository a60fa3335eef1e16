package kv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// Index is a secondary index entry of a record. Unique indexes reject a second
// record holding the same (table, name, value) with ErrExists.
type Index struct {
	Name   string
	Value  string
	Unique bool
}

// Query selects records of a table in id order. With Index set, only records
// holding the index entry (Index, Value). After is an exclusive lower bound on
// the id; Limit 0 means no limit.
type Query struct {
	Index string
	Value string
	After string
	Limit int
}

// Txn is a transaction handed to the fn of Store.Update or Store.View. It is
// not safe for concurrent use and must not be used after fn returns.
type Txn struct {
	txn    *badger.Txn
	update bool
	done   bool
}

var errTxnDone = errors.New("kv: transaction used after it ended")

func (t *Txn) usable(write bool) error {
	if t.done {
		return errTxnDone
	}
	if write && !t.update {
		return errors.New("kv: write in a read-only transaction")
	}
	return nil
}

// getEnvelope reads the record (table, id); ErrNotFound when absent.
func (t *Txn) getEnvelope(table, id string) (envelope, error) {
	item, err := t.txn.Get(recordKey(table, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return envelope{}, fmt.Errorf("kv: %s/%s: %w", table, id, ErrNotFound)
	}
	if err != nil {
		return envelope{}, fmt.Errorf("kv: read %s/%s: %w", table, id, err)
	}
	val, err := item.ValueCopy(nil)
	if err != nil {
		return envelope{}, fmt.Errorf("kv: read %s/%s: %w", table, id, err)
	}
	e, err := decodeEnvelope(val)
	if err != nil {
		return envelope{}, fmt.Errorf("kv: read %s/%s: %w", table, id, err)
	}
	return e, nil
}

// Get JSON-decodes the record (table, id) into out.
func (t *Txn) Get(table, id string, out any) error {
	if err := t.usable(false); err != nil {
		return err
	}
	if err := checkName("table", table); err != nil {
		return err
	}
	if err := checkName("id", id); err != nil {
		return err
	}
	item, err := t.txn.Get(recordKey(table, id))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return fmt.Errorf("kv: %s/%s: %w", table, id, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("kv: read %s/%s: %w", table, id, err)
	}
	// Decode in place: json.Unmarshal copies what it keeps, so the value
	// needs no copy, and Get needs only the JSON part of the envelope.
	var decodeErr error
	err = item.Value(func(val []byte) error {
		data, err := envelopeData(val)
		if err != nil {
			return err
		}
		decodeErr = json.Unmarshal(data, out)
		return nil
	})
	if err != nil {
		return fmt.Errorf("kv: read %s/%s: %w", table, id, err)
	}
	if decodeErr != nil {
		return fmt.Errorf("kv: decode %s/%s: %w", table, id, decodeErr)
	}
	return nil
}

// Put stores v, JSON-encoded, as the record (table, id) with exactly the given
// index entries, removing entries the previous version had and v lacks. A
// unique entry already held by another id fails with ErrExists.
func (t *Txn) Put(table, id string, v any, indexes ...Index) error {
	if err := t.usable(true); err != nil {
		return err
	}
	if err := checkName("table", table); err != nil {
		return err
	}
	if err := checkName("id", id); err != nil {
		return err
	}
	// Deduplicate by (name, value); unique wins if declared both ways.
	type nv struct{ name, value string }
	want := make(map[nv]int, len(indexes))
	var next []Index
	for _, ix := range indexes {
		if err := checkName("index name", ix.Name); err != nil {
			return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
		}
		if err := checkValue(ix.Value); err != nil {
			return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
		}
		k := nv{ix.Name, ix.Value}
		if i, ok := want[k]; ok {
			next[i].Unique = next[i].Unique || ix.Unique
			continue
		}
		want[k] = len(next)
		next = append(next, ix)
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("kv: encode %s/%s: %w", table, id, err)
	}

	old, err := t.getEnvelope(table, id)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	had := make(map[nv]bool, len(old.indexes)) // value: was unique
	for _, ix := range old.indexes {
		had[nv{ix.Name, ix.Value}] = ix.Unique
	}

	// Check every unique claim before writing anything.
	for _, ix := range next {
		if !ix.Unique {
			continue
		}
		holder, err := t.uniqueHolder(table, ix.Name, ix.Value)
		if err != nil {
			return err
		}
		if holder != "" && holder != id {
			return fmt.Errorf("kv: put %s/%s: unique index %s=%q is held by %s: %w",
				table, id, ix.Name, ix.Value, holder, ErrExists)
		}
	}

	// Drop stale entries.
	for _, ix := range old.indexes {
		i, keep := want[nv{ix.Name, ix.Value}]
		if !keep {
			if err := t.txn.Delete(indexKey(table, ix.Name, ix.Value, id)); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
		if ix.Unique && (!keep || !next[i].Unique) {
			if err := t.txn.Delete(uniqueKey(table, ix.Name, ix.Value)); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
	}
	// Add new entries.
	for _, ix := range next {
		wasUnique, present := had[nv{ix.Name, ix.Value}]
		if !present {
			if err := t.txn.Set(indexKey(table, ix.Name, ix.Value, id), nil); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
		if ix.Unique && !wasUnique {
			if err := t.txn.Set(uniqueKey(table, ix.Name, ix.Value), []byte(id)); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
	}
	if err := t.txn.Set(recordKey(table, id), encodeEnvelope(next, data)); err != nil {
		return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
	}
	return nil
}

// uniqueHolder returns the id holding a unique entry, or "" if none. The
// point read puts the key in the transaction's read set, so concurrent claims
// of the same value conflict at commit.
func (t *Txn) uniqueHolder(table, name, value string) (string, error) {
	item, err := t.txn.Get(uniqueKey(table, name, value))
	if errors.Is(err, badger.ErrKeyNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("kv: read unique index %s/%s=%q: %w", table, name, value, err)
	}
	v, err := item.ValueCopy(nil)
	if err != nil {
		return "", fmt.Errorf("kv: read unique index %s/%s=%q: %w", table, name, value, err)
	}
	return string(v), nil
}

// Delete removes the record (table, id) and its index entries.
func (t *Txn) Delete(table, id string) error {
	if err := t.usable(true); err != nil {
		return err
	}
	if err := checkName("table", table); err != nil {
		return err
	}
	if err := checkName("id", id); err != nil {
		return err
	}
	old, err := t.getEnvelope(table, id)
	if err != nil {
		return err
	}
	for _, ix := range old.indexes {
		if err := t.txn.Delete(indexKey(table, ix.Name, ix.Value, id)); err != nil {
			return fmt.Errorf("kv: delete %s/%s: %w", table, id, err)
		}
		if ix.Unique {
			if err := t.txn.Delete(uniqueKey(table, ix.Name, ix.Value)); err != nil {
				return fmt.Errorf("kv: delete %s/%s: %w", table, id, err)
			}
		}
	}
	if err := t.txn.Delete(recordKey(table, id)); err != nil {
		return fmt.Errorf("kv: delete %s/%s: %w", table, id, err)
	}
	return nil
}

// Lookup returns the id of the first record (in id order) holding the index
// entry (index, value).
func (t *Txn) Lookup(table, index, value string) (string, error) {
	id := ""
	err := t.scan(table, Query{Index: index, Value: value, Limit: 1}, func(key []byte, _ *badger.Item) error {
		id = string(key)
		return nil
	})
	if err != nil {
		return "", err
	}
	if id == "" {
		return "", fmt.Errorf("kv: %s by %s=%q: %w", table, index, value, ErrNotFound)
	}
	return id, nil
}

// List calls fn for each record matching q, in id order. decode JSON-decodes
// the record and is valid only during that call of fn. An error from fn stops
// the iteration and is returned as is.
func (t *Txn) List(table string, q Query, fn func(id string, decode func(out any) error) error) error {
	return t.scan(table, q, func(idb []byte, item *badger.Item) error {
		id := string(idb)
		valid := true
		defer func() { valid = false }()
		decode := func(out any) error {
			if !valid {
				return fmt.Errorf("kv: decode %s/%s called after its List callback returned", table, id)
			}
			if item == nil { // index scan: fetch the record
				e, err := t.getEnvelope(table, id)
				if err != nil {
					return err
				}
				return decodeData(table, id, e.data, out)
			}
			return item.Value(func(val []byte) error {
				data, err := envelopeData(val)
				if err != nil {
					return fmt.Errorf("kv: read %s/%s: %w", table, id, err)
				}
				return decodeData(table, id, data, out)
			})
		}
		return fn(id, decode)
	})
}

func decodeData(table, id string, data []byte, out any) error {
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("kv: decode %s/%s: %w", table, id, err)
	}
	return nil
}

// Count returns the number of records matching q, ignoring After and Limit.
func (t *Txn) Count(table string, q Query) (int, error) {
	q.After, q.Limit = "", 0
	n := 0
	err := t.scan(table, q, func([]byte, *badger.Item) error {
		n++
		return nil
	})
	return n, err
}

// scan iterates the keys selected by q and calls fn with the id and, for a
// table scan, the record's item (nil for an index scan). fn's id slice is
// only valid during the call.
func (t *Txn) scan(table string, q Query, fn func(id []byte, item *badger.Item) error) error {
	if err := t.usable(false); err != nil {
		return err
	}
	if err := checkName("table", table); err != nil {
		return err
	}
	if q.Limit < 0 {
		return fmt.Errorf("kv: list %s: negative limit %d", table, q.Limit)
	}
	var prefix []byte
	if q.Index != "" {
		if err := checkName("index name", q.Index); err != nil {
			return fmt.Errorf("kv: list %s: %w", table, err)
		}
		if err := checkValue(q.Value); err != nil {
			return fmt.Errorf("kv: list %s: %w", table, err)
		}
		prefix = indexPrefix(table, q.Index, q.Value)
	} else {
		prefix = recordPrefix(table)
	}
	isRecord := q.Index == ""

	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false // key-only; List reads values lazily in decode
	it := t.txn.NewIterator(opts)
	defer it.Close()

	seek := prefix
	if q.After != "" {
		seek = append(bytes.Clone(prefix), q.After...)
	}
	after := []byte(q.After)
	n := 0
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		id := item.Key()[len(prefix):]
		if q.After != "" && bytes.Equal(id, after) {
			continue
		}
		var rec *badger.Item
		if isRecord {
			rec = item
		}
		if err := fn(id, rec); err != nil {
			return err
		}
		n++
		if q.Limit > 0 && n >= q.Limit {
			break
		}
	}
	return nil
}
