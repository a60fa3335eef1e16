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
//
// In View it reads a Badger snapshot. In Update it reads, newest first, its
// own writes, those of the earlier requests of its batch (below), and the
// batch's Badger snapshot; it writes only to w, which the committer merges
// into the batch when fn succeeds and drops when fn fails (see batch.go).
type Txn struct {
	txn *badger.Txn
	// db, in a View, makes txn on the first read: a View whose reads all
	// come from the daemon's caches never opens a Badger transaction
	// (whose start and end each take the oracle's lock and signal its
	// watermark goroutine). The snapshot is then as of that first read.
	db *badger.DB

	w        *writeSet // this fn's writes; nil in View
	below    *writeSet // writes of the earlier requests of the batch; read-only
	maxValue int64     // Badger's largest value (ValueLogFileSize)
	sawBelow bool      // read something written by an earlier request of the batch
	touched  Commit    // the tables this fn wrote records of (see Commit)

	done bool
}

var errTxnDone = errors.New("kv: transaction used after it ended")

// badger returns t's Badger transaction, starting it if it is a View's
// first read.
func (t *Txn) badger() *badger.Txn {
	if t.txn == nil {
		t.txn = t.db.NewTransaction(false)
	}
	return t.txn
}

func (t *Txn) usable(write bool) error {
	if t.done {
		return errTxnDone
	}
	if write && t.w == nil {
		return errors.New("kv: write in a read-only transaction")
	}
	return nil
}

// errReadPanic wraps a panic of Badger during a read (see guard).
var errReadPanic = errors.New("the store failed a read")

// guard, deferred by a read, turns a panic of Badger into an error, so
// that a store in trouble fails its readers instead of crashing them. A
// panic of the caller's own function (inFn) goes on as it was.
func guard(err *error, inFn *bool) {
	if *inFn {
		return
	}
	if v := recover(); v != nil {
		*err = fmt.Errorf("kv: %w: %v", errReadPanic, v)
	}
}

// read finds the newest version of key visible to t and, when there is one,
// calls fn with its value, which fn must neither keep nor modify.
func (t *Txn) read(key []byte, fn func(val []byte) error) (found bool, err error) {
	inFn := false
	defer guard(&err, &inFn)
	call := func(val []byte) error {
		inFn = true
		defer func() { inFn = false }()
		return fn(val)
	}
	if t.w != nil {
		if o, ok := t.w.get(key); ok {
			return readOp(o, call)
		}
		if o, ok := t.below.get(key); ok {
			t.sawBelow = true
			return readOp(o, call)
		}
	}
	item, err := t.badger().Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return true, item.Value(call)
}

func readOp(o op, fn func(val []byte) error) (bool, error) {
	if o.del {
		return false, nil
	}
	return true, fn(o.val)
}

// maxKeySize is Badger's limit on a key (Txn.modify).
const maxKeySize = 65000

// set and del record a write in w, checked as Badger would check it: a
// request whose writes could not fit in one Badger transaction on their own
// fails here, like Badger's Set, with badger.ErrTxnTooBig.
func (t *Txn) set(key, val []byte) error { return t.write(key, op{val: val}) }

func (t *Txn) del(key []byte) error { return t.write(key, op{del: true}) }

func (t *Txn) write(key []byte, o op) error {
	if len(key) > maxKeySize {
		return fmt.Errorf("key of %d bytes exceeds the limit of %d", len(key), maxKeySize)
	}
	if int64(len(o.val)) > t.maxValue {
		return fmt.Errorf("value of %d bytes exceeds the limit of %d", len(o.val), t.maxValue)
	}
	k := string(key)
	if count, size := t.w.costWith(k, o); !t.w.lim.fits(count, size) {
		return badger.ErrTxnTooBig
	}
	t.w.put(k, o)
	return nil
}

// getEnvelope reads the record (table, id); ErrNotFound when absent.
func (t *Txn) getEnvelope(table, id string) (envelope, error) {
	var e envelope
	found, err := t.read(recordKey(table, id), func(val []byte) error {
		var err error
		e, err = decodeEnvelope(bytes.Clone(val))
		return err
	})
	if err != nil {
		return envelope{}, fmt.Errorf("kv: read %s/%s: %w", table, id, err)
	}
	if !found {
		return envelope{}, fmt.Errorf("kv: %s/%s: %w", table, id, ErrNotFound)
	}
	return e, nil
}

// RecordDecoder decodes a record's JSON itself (for instance from a cache
// of decoded records). Get hands it the stored JSON, which is valid only
// during the call: DecodeRecord must copy what it keeps.
type RecordDecoder interface {
	DecodeRecord(data []byte) error
}

// Get JSON-decodes the record (table, id) into out, or, when out is a
// RecordDecoder, has it decode the JSON.
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
	// Decode in place: json.Unmarshal copies what it keeps, so the value
	// needs no copy, and Get needs only the JSON part of the envelope.
	var decodeErr error
	found, err := t.read(recordKey(table, id), func(val []byte) error {
		data, err := envelopeData(val)
		if err != nil {
			return err
		}
		if d, ok := out.(RecordDecoder); ok {
			decodeErr = d.DecodeRecord(data)
		} else {
			decodeErr = json.Unmarshal(data, out)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("kv: read %s/%s: %w", table, id, err)
	}
	if !found {
		return fmt.Errorf("kv: %s/%s: %w", table, id, ErrNotFound)
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
	if err == nil {
		t.touched.Changed = addTable(t.touched.Changed, table)
	} else {
		t.touched.Created = addTable(t.touched.Created, table)
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
			if err := t.del(indexKey(table, ix.Name, ix.Value, id)); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
		if ix.Unique && (!keep || !next[i].Unique) {
			if err := t.del(uniqueKey(table, ix.Name, ix.Value)); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
	}
	// Add new entries.
	for _, ix := range next {
		wasUnique, present := had[nv{ix.Name, ix.Value}]
		if !present {
			if err := t.set(indexKey(table, ix.Name, ix.Value, id), nil); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
		if ix.Unique && !wasUnique {
			if err := t.set(uniqueKey(table, ix.Name, ix.Value), []byte(id)); err != nil {
				return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
			}
		}
	}
	if err := t.set(recordKey(table, id), encodeEnvelope(next, data)); err != nil {
		return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
	}
	return nil
}

// uniqueHolder returns the id holding a unique entry, or "" if none. Updates
// run one after another (batch.go), so this point read sees every earlier
// claim, committed or earlier in the same batch.
func (t *Txn) uniqueHolder(table, name, value string) (string, error) {
	holder := ""
	_, err := t.read(uniqueKey(table, name, value), func(val []byte) error {
		holder = string(val)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("kv: read unique index %s/%s=%q: %w", table, name, value, err)
	}
	return holder, nil
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
		if err := t.del(indexKey(table, ix.Name, ix.Value, id)); err != nil {
			return fmt.Errorf("kv: delete %s/%s: %w", table, id, err)
		}
		if ix.Unique {
			if err := t.del(uniqueKey(table, ix.Name, ix.Value)); err != nil {
				return fmt.Errorf("kv: delete %s/%s: %w", table, id, err)
			}
		}
	}
	if err := t.del(recordKey(table, id)); err != nil {
		return fmt.Errorf("kv: delete %s/%s: %w", table, id, err)
	}
	t.touched.Changed = addTable(t.touched.Changed, table)
	return nil
}

// Lookup returns the id of the first record (in id order) holding the index
// entry (index, value).
func (t *Txn) Lookup(table, index, value string) (string, error) {
	id := ""
	err := t.scan(table, Query{Index: index, Value: value, Limit: 1}, func(key []byte, _ valueFunc) error {
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

// LookupUnique is Lookup for an index whose entries are Unique: one point
// read of the entry's holder instead of an index scan. Without a holder
// it falls back to the scan, so the answer is always Lookup's.
func (t *Txn) LookupUnique(table, index, value string) (string, error) {
	if err := t.usable(false); err != nil {
		return "", err
	}
	holder, err := t.uniqueHolder(table, index, value)
	if err != nil {
		return "", err
	}
	if holder != "" {
		return holder, nil
	}
	return t.Lookup(table, index, value)
}

// List calls fn for each record matching q, in id order. decode JSON-decodes
// the record and is valid only during that call of fn. An error from fn stops
// the iteration and is returned as is. Writes fn makes to t are not seen by
// the iteration under way.
func (t *Txn) List(table string, q Query, fn func(id string, decode func(out any) error) error) error {
	return t.scan(table, q, func(idb []byte, value valueFunc) error {
		id := string(idb)
		valid := true
		defer func() { valid = false }()
		decode := func(out any) error {
			if !valid {
				return fmt.Errorf("kv: decode %s/%s called after its List callback returned", table, id)
			}
			if value == nil { // index scan: fetch the record
				e, err := t.getEnvelope(table, id)
				if err != nil {
					return err
				}
				return decodeData(table, id, e.data, out)
			}
			var decodeErr error
			err := value(func(val []byte) error {
				data, err := envelopeData(val)
				if err != nil {
					return err
				}
				decodeErr = decodeData(table, id, data, out)
				return nil
			})
			if err != nil {
				return fmt.Errorf("kv: read %s/%s: %w", table, id, err)
			}
			return decodeErr
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
	err := t.scan(table, q, func([]byte, valueFunc) error {
		n++
		return nil
	})
	return n, err
}

// valueFunc calls fn with a stored value, like badger.Item.Value.
type valueFunc func(fn func(val []byte) error) error

// pendingKey is a write of this request or of an earlier one in its batch,
// met by a scan.
type pendingKey struct {
	key string
	op  op
}

// pending returns the writes t sees in [seek, end of prefix), sorted, this
// request's own shadowing its batch's. It copies them: writes made during the
// scan do not disturb it.
func (t *Txn) pending(seek, prefix string) []pendingKey {
	if t.w == nil {
		return nil
	}
	mine, theirs := t.w.scan(seek, prefix), t.below.scan(seek, prefix)
	if len(theirs) > 0 {
		t.sawBelow = true
	}
	if len(mine)+len(theirs) == 0 {
		return nil
	}
	out := make([]pendingKey, 0, len(mine)+len(theirs))
	for len(mine) > 0 || len(theirs) > 0 {
		switch {
		case len(theirs) == 0 || len(mine) > 0 && mine[0] <= theirs[0]:
			k := mine[0]
			out = append(out, pendingKey{k, t.w.ops[k]})
			if len(theirs) > 0 && theirs[0] == k {
				theirs = theirs[1:]
			}
			mine = mine[1:]
		default:
			k := theirs[0]
			out = append(out, pendingKey{k, t.below.ops[k]})
			theirs = theirs[1:]
		}
	}
	return out
}

// scan iterates the keys selected by q and calls fn with the id and, for a
// table scan, the record's value (nil for an index scan). It merges the
// pending writes t sees with the Badger snapshot. fn's id slice and value are
// only valid during the call.
func (t *Txn) scan(table string, q Query, fn func(id []byte, value valueFunc) error) (err error) {
	inFn := false
	defer guard(&err, &inFn)
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

	seek := prefix
	if q.After != "" {
		seek = append(bytes.Clone(prefix), q.After...)
	}
	pending := t.pending(string(seek), string(prefix))

	opts := badger.DefaultIteratorOptions
	opts.Prefix = prefix
	opts.PrefetchValues = false // key-only; List reads values lazily in decode
	it := t.badger().NewIterator(opts)
	defer it.Close()

	after := []byte(q.After)
	n := 0
	it.Seek(seek)
	for {
		var key []byte
		var value valueFunc
		advance := false // the Badger item is in use until fn returns
		stored := it.ValidForPrefix(prefix)
		switch {
		case len(pending) > 0 && (!stored || pending[0].key <= string(it.Item().Key())):
			p := pending[0]
			pending = pending[1:]
			if stored && p.key == string(it.Item().Key()) {
				it.Next() // shadowed by the pending write
			}
			if p.op.del {
				continue
			}
			key = []byte(p.key)
			value = func(fn func([]byte) error) error { return fn(p.op.val) }
		case stored:
			item := it.Item()
			key, value, advance = item.Key(), item.Value, true
		default:
			return nil
		}
		id := key[len(prefix):]
		if q.After == "" || !bytes.Equal(id, after) {
			if !isRecord {
				value = nil
			}
			inFn = true
			err := fn(id, value)
			inFn = false
			if err != nil {
				return err
			}
			n++
			if q.Limit > 0 && n >= q.Limit {
				return nil
			}
		}
		if advance {
			it.Next()
		}
	}
}

// PutUnindexed stores v, JSON-encoded, as the record (table, id) without
// reading what it replaces: one write, where Put reads the previous
// version to keep its index entries right. It is only for tables whose
// records never have index entries (a record written by Put with indexes
// would keep them, stale). OnCommit reports the table as Changed, since
// whether a record was replaced is not known.
func (t *Txn) PutUnindexed(table, id string, v any) error {
	if err := t.usable(true); err != nil {
		return err
	}
	if err := checkName("table", table); err != nil {
		return err
	}
	if err := checkName("id", id); err != nil {
		return err
	}
	data, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("kv: encode %s/%s: %w", table, id, err)
	}
	if err := t.set(recordKey(table, id), encodeEnvelope(nil, data)); err != nil {
		return fmt.Errorf("kv: put %s/%s: %w", table, id, err)
	}
	t.touched.Changed = addTable(t.touched.Changed, table)
	return nil
}

// DeleteUnindexed removes the record (table, id) without reading it, for
// the tables PutUnindexed writes: deleting a record that is not there is
// no error.
func (t *Txn) DeleteUnindexed(table, id string) error {
	if err := t.usable(true); err != nil {
		return err
	}
	if err := checkName("table", table); err != nil {
		return err
	}
	if err := checkName("id", id); err != nil {
		return err
	}
	if err := t.del(recordKey(table, id)); err != nil {
		return fmt.Errorf("kv: delete %s/%s: %w", table, id, err)
	}
	t.touched.Changed = addTable(t.touched.Changed, table)
	return nil
}
