package kv

import (
	"slices"
	"sort"
	"strings"
)

// op is a pending write of one key: a value, or a delete.
type op struct {
	val []byte // never modified once stored
	del bool
}

// writeSet holds pending writes, newest per key, with their keys sorted so
// range scans can merge them with a Badger iterator. It also keeps what the
// writes will cost in a Badger transaction, to split batches before Badger
// would refuse them (see cost).
type writeSet struct {
	ops   map[string]op
	keys  []string // sorted
	spare []string // reused by merge
	count int64    // distinct keys
	size  int64    // sum of cost
	lim   limits
}

func newWriteSet(lim limits) *writeSet { return &writeSet{ops: make(map[string]op), lim: lim} }

// limits are what one Badger transaction takes: Txn.checkSize refuses a
// write when the count of writes reaches maxCount or their size maxSize.
// Values of valueThreshold bytes or more go to the value log and count as a
// 12-byte pointer.
type limits struct{ maxCount, maxSize, valueThreshold int64 }

func (l limits) fits(count, size int64) bool { return count < l.maxCount && size < l.maxSize }

// cost is what Badger's checkSize charges for a write: the key, the value
// or its pointer, 2 meta bytes and 10 for the version. The writes of a
// batch reach Badger once per key, so a batch that fits here fits there.
func (w *writeSet) cost(key string, o op) int64 {
	v := int64(len(o.val))
	if v >= w.lim.valueThreshold {
		v = 12
	}
	return int64(len(key)) + v + 2 + 10
}

func (w *writeSet) get(key []byte) (op, bool) {
	o, ok := w.ops[string(key)]
	return o, ok
}

// costWith returns count and size after also storing (key, o).
func (w *writeSet) costWith(key string, o op) (int64, int64) {
	if old, ok := w.ops[key]; ok {
		return w.count, w.size - w.cost(key, old) + w.cost(key, o)
	}
	return w.count + 1, w.size + w.cost(key, o)
}

// put stores o as the newest write of key.
func (w *writeSet) put(key string, o op) {
	w.count, w.size = w.costWith(key, o)
	if _, ok := w.ops[key]; !ok {
		i, _ := slices.BinarySearch(w.keys, key)
		w.keys = slices.Insert(w.keys, i, key)
	}
	w.ops[key] = o
}

// mergedCost returns count and size after merging src into w.
func (w *writeSet) mergedCost(src *writeSet) (int64, int64) {
	count, size := w.count, w.size
	for k, o := range src.ops {
		if old, ok := w.ops[k]; ok {
			size += w.cost(k, o) - w.cost(k, old)
		} else {
			count++
			size += w.cost(k, o)
		}
	}
	return count, size
}

// merge applies src's writes over w's, in one pass over the sorted keys.
func (w *writeSet) merge(src *writeSet) {
	if len(src.keys) == 0 {
		return
	}
	w.count, w.size = w.mergedCost(src)
	out := w.spare[:0]
	a, b := w.keys, src.keys
	for len(a) > 0 || len(b) > 0 {
		switch {
		case len(b) == 0 || len(a) > 0 && a[0] < b[0]:
			out, a = append(out, a[0]), a[1:]
		case len(a) == 0 || b[0] < a[0]:
			out, b = append(out, b[0]), b[1:]
		default: // same key
			out, a, b = append(out, a[0]), a[1:], b[1:]
		}
	}
	for k, o := range src.ops {
		w.ops[k] = o
	}
	w.spare, w.keys = w.keys, out
}

// scan returns the keys of w from seek on that start with prefix, sorted.
func (w *writeSet) scan(seek, prefix string) []string {
	i := sort.SearchStrings(w.keys, seek)
	j := i
	for j < len(w.keys) && strings.HasPrefix(w.keys[j], prefix) {
		j++
	}
	return w.keys[i:j]
}
