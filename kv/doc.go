// Package kv is coffer's persistence layer: typed JSON records with secondary
// indexes, stored in Badger v4 on local disk.
//
// # Durability
//
// The store is opened with SyncWrites on: when Update returns nil, the write
// has been fsynced and survives kill -9 or power loss.
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
// The u/ key exists for conflict detection: Badger tracks point reads in a
// transaction's read set but not the absence of keys under an iterated
// prefix. Put reads the u/ key with a point Get, so two concurrent
// transactions claiming the same unique value conflict at commit and the
// loser is retried (and then sees ErrExists). Uniqueness is enforced among
// the records that declare that (index, value) entry unique.
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
// Update runs fn in a read-write transaction and commits it; fn is retried
// on a Badger conflict. View runs fn in a read-only snapshot. A *Txn is not
// safe for concurrent use and must not be used after fn returns. Range scans
// (List, Count, Lookup) are not tracked for conflicts: a transaction that
// decides something from a count does not conflict with a concurrent insert.
package kv
