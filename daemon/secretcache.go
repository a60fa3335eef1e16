package daemon

import "sync"

// secretCache keeps the metadata records of recently read secrets, so that
// authorizing a read of a secret does not read and decode it from the
// store every time. An entry is used only while the secrets generation it
// was read at is current: every commit that replaces or removes an
// existing secret record bumps it (caches.go), which empties the cache in
// effect. A creation needs no bump: only records that were found are
// kept, and ids are never reused.
type secretCache struct {
	mu  sync.RWMutex
	m   map[string]secretEntry
	max int
}

type secretEntry struct {
	rec secretRecord
	gen uint64
}

// secretCacheSize bounds the memory of the cache (a record is a few hundred
// bytes).
const secretCacheSize = 50_000

// get returns the record of id cached at generation gen.
func (c *secretCache) get(id string, gen uint64) (secretRecord, bool) {
	c.mu.RLock()
	e, ok := c.m[id]
	c.mu.RUnlock()
	if !ok || e.gen != gen {
		return secretRecord{}, false
	}
	return e.rec, true
}

// put keeps rec as read at generation gen (loaded before the read).
func (c *secretCache) put(rec secretRecord, gen uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[string]secretEntry)
	}
	if len(c.m) >= c.max {
		// Drop an eighth, in map order, like the bearer cache.
		n := c.max / 8
		for k := range c.m {
			delete(c.m, k)
			if n--; n <= 0 {
				break
			}
		}
	}
	c.m[rec.ID] = secretEntry{rec: rec, gen: gen}
}
