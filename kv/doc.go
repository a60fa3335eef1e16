// Package kv is coffer's persistence layer: typed JSON records with secondary
// indexes, stored in Badger v4 on local disk.
//
// # Durability
//
// The store is opened with SyncWrites on: when Update returns nil, the write
// has been fsynced and survives kill -9 or power loss. Concurrent Updates
// share that fsync (group commit, below); none is acknowledged before it.
//
// # Key layout
//
// Table names, index names and ids must be non-empty and contain neither '/'
// nor NUL; index values must not contain NUL. Violations are rejected with an
// error before any key is built, so keys can always be parsed back.
//
//	r/<table>/<id>                         -> envelope (see below)
//	i/<table>/<index>/<value>\x00<id>      -> empty; one per index entry
//	u/<table>/<index>/<value>              -> <id>; only for unique entries
//
// Record keys sort by id, and ids are UUIDv7 strings, so a table scan yields
// records in creation order. Index keys end in the id for the same reason.
//
// The u/ key makes a unique claim one point read: Put reads it, and since
// Updates run one after another (below), a second claim of the same value
// sees the first, committed or earlier in the same batch, and fails with
// ErrExists. Uniqueness is enforced among the records that declare that
// (index, value) entry unique.
//
// # Envelope
//
// A record's value is a small versioned binary envelope, so that Put and
// Delete can remove stale index keys without knowing the record's Go type:
//
//	byte     version (1)
//	uvarint  number of index entries
//	per entry: byte flags (bit 0 = unique),
//	           uvarint len(name), name, uvarint len(value), value
//	rest     the record, JSON-encoded
//
// # Encryption at rest
//
// With Options.EncryptionKey set, Badger encrypts every file it writes
// (tables, value log, memtable WAL) under data keys it rotates every
// Options.EncryptionKeyRotation and keeps in KEYREGISTRY, sealed with the
// given key. kv takes the raw key; where it comes from (an HSM) is the
// caller's business.
//
// # Backup and load
//
// Backup streams one consistent snapshot (a single read timestamp) in
// Badger's backup format, in the clear; Load reads such a stream into an
// empty store. LockDir takes Badger's directory lock from outside, to tell
// whether a store is in use.
//
// # Transactions
//
// View runs fn in a read-only Badger snapshot. Update hands fn to the one
// committer goroutine, which runs the fns waiting (up to 128) one after
// another in one Badger transaction and commits it once (batch.go). Each fn
// sees every write acknowledged before its Update was called and those of
// the successful fns before it in its batch; its own writes are kept apart
// until it returns, so a fn that fails or panics leaves nothing behind.
// Updates are therefore serializable, range scans included, and never
// conflict: the store runs Badger without conflict detection and Update
// never retries fn. A batch that would exceed Badger's transaction limits
// is committed in several transactions, in order.
//
// # Storage faults
//
// The store keeps a reserve of free space on its filesystem (Health): below
// it, writes are refused with ErrFull and resume by themselves once there is
// room; a failed commit (a read-only or failing filesystem) stops all writes
// with ErrFailed until the directory is writable again and the store has
// been reopened. Reads go on in both cases. Badger writes its write-ahead
// log and tables through memory mappings, where a full filesystem is a
// SIGBUS rather than an error: the reserve keeps room for its flushes and
// compactions, and the write-ahead log files are preallocated (watch.go).
//
// Open checks the store's files before Badger sees them (inspect.go) and
// refuses damage with a *DamagedError naming the file, and refuses a store
// holding fewer commits than its witness file records (witness.go).
//
// fn runs on the committer goroutine, so it holds up every other Update
// while it runs: it must do no slow work (HSM calls, network, disk) and
// take no lock an Update caller may hold, and it must not call Update or
// View. A *Txn is not safe for concurrent use and must not be used after
// fn returns.
package kv
