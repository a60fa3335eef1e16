package daemon

import (
	"encoding/json"
	"sync"
)

// Delivery reads the same few records again and again, and decoding their
// JSON (base64 envelopes, timestamps) cost more than the Badger reads
// themselves. recordCache memoizes the decoding, keyed by the exact stored
// JSON: a record that changes (a revocation, a rotation, a KEK re-wrap)
// has other bytes and is decoded afresh, so the cache can never answer
// with anything but what the store holds now. It keeps no plaintext: the
// records are metadata and sealed envelopes, as on disk.

// Bounds: the entries of one cache, and the largest record worth keeping
// (a 256-byte secret's envelope is about 700 bytes of JSON).
const (
	recordCacheEntries = 1024
	recordCacheMaxSize = 4 << 10
)

// recordCache is a bounded map from stored JSON to its decoding. The zero
// value is ready. Values are shared: callers must not modify what they get
// (slices and pointers inside included).
type recordCache[T any] struct {
	mu sync.RWMutex
	m  map[string]T
}

// decode decodes data into out, from the cache when data was seen before.
func (c *recordCache[T]) decode(data []byte, out *T) error {
	c.mu.RLock()
	v, ok := c.m[string(data)]
	c.mu.RUnlock()
	if ok {
		*out = v
		return nil
	}
	if err := json.Unmarshal(data, &v); err != nil {
		return err
	}
	*out = v
	if len(data) > recordCacheMaxSize {
		return nil
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= recordCacheEntries {
		// Forget everything rather than track recency: deliveries touch
		// few records, and a full cache means the working set is not few.
		c.m = make(map[string]T, 64)
	}
	c.m[string(data)] = v
	c.mu.Unlock()
	return nil
}

// deliveryRecords are the caches of the records a delivery reads.
type deliveryRecords struct {
	bindings recordCache[bindingRecord]
	secrets  recordCache[secretRecord]
	sealed   recordCache[sealedRecord]
}

// cachedRecord is a kv.RecordDecoder that decodes through a recordCache.
type cachedRecord[T any] struct {
	c   *recordCache[T]
	out *T
}

func (r cachedRecord[T]) DecodeRecord(data []byte) error { return r.c.decode(data, r.out) }

// sealedCopy gives a sealedRecord from the cache its own envelope struct,
// so that no caller can change the cached one through the pointer (the
// byte slices stay shared and are only read: by Unseal).
func sealedCopy(b sealedRecord) sealedRecord {
	if b.Sealed != nil {
		s := *b.Sealed
		b.Sealed = &s
	}
	return b
}
