// Package audit keeps coffer's tamper-evident audit log: an append-only
// file of JSON lines, each holding the SHA-256 of the line before it, with
// checkpoint lines signed by the HSM signing key.
//
// # Format
//
// Every line is one JSON object whose first members are always, in this
// order:
//
//	{"seq":N,"time":"RFC 3339","prev":"<hex SHA-256 of line N-1>","type":"event"|"checkpoint",...}
//
// seq starts at 1 and grows by one per line across all files; the first
// line's prev is 64 zeros. The hash of a line is the SHA-256 of its bytes
// without the newline. An event line carries what happened (action,
// outcome, status, code, principal, target: ids, names, never a secret). A
// checkpoint line carries kid (the RFC 7638 thumbprint of the signing key,
// the kid of the daemon's JWK set) and sig: the raw ECDSA P-256 r||s
// signature, base64url, over
//
//	SHA-256("coffer-audit-checkpoint-v1\n" seq "\n" time "\n" prev "\n")
//
// so a checkpoint commits to every line before it. (kid only says which
// key to verify with; a wrong kid makes the signature fail.)
//
// Two members may follow an event's target:
//
//   - change: the store's change sequence number of a state change. State
//     changes reach the log through the store's transactional outbox and
//     Append, strictly increasing; a checkpoint line carries the highest
//     change before it, so that a restart finds the last one by reading
//     back to the last checkpoint only (LastChange). Verify reports the
//     highest it checked: the store's changes up to it are in the log.
//   - count: a line standing for repeated denials (see below): how many
//     it stands for beyond the first, which has its own line; target
//     first and last are the times of the first and last of them.
//
// # Best-effort events
//
// Record never waits. Denials (outcome denied) of one caller (channel,
// uid, gid, cid, vm, token user, credential and session: not the pid nor
// the token id presented), action, code and reason are coalesced: the first
// of an interval (one second) is written at once, the others are counted
// into one line with count at the end of the interval, so a flood costs
// bytes per second. Past 4096 callers in an interval, denials are counted
// per action. Events that cannot be queued (the writer is behind) or
// written (the disk fails) are counted and told by an audit.lost entry
// (target events, first, last) as soon as writing works again. (Logs
// written before audit.lost say audit.dropped.)
//
// # Files
//
// Dir/audit.log is written; once it is over the size limit it is renamed to
// Dir/audit-<first seq, 20 digits>.log right after a checkpoint and a new
// audit.log starts (the chain goes on across files). The rotated file is
// then archived: compressed to audit-<first seq>.log.gz (written to a
// temporary file, synced, renamed, the directory synced) and only then
// removed. Dir/head holds a copy of the last checkpoint line, written after
// that line is on disk, so that a log cut below it is detected.
//
// Retention: once the log files together are over Options.MaxTotalSize,
// the oldest rotated files are deleted. Before a file is, the log writes
// an audit.pruned entry (target first_seq and last_seq: the entries
// deleted; prev: the hash the next entry continues from; file) and a
// checkpoint that signs it; the file is deleted after that checkpoint is
// on disk.
//
// # What verification finds, and what it cannot
//
// Verify finds any edited, deleted, inserted or reordered line that is
// followed by another line, a checkpoint that does not verify with a key
// of the JWK set, and a log cut below the checkpoint recorded in head. A
// log that no longer starts at entry 1 verifies only if an audit.pruned
// entry, signed by a later checkpoint, records the deletion up to its
// first entry and the prev that entry continues from; otherwise the
// missing entries are reported. Lines after the last checkpoint are
// covered by the hash chain only: whoever can write the files (root) can
// drop them, or rewrite them consistently, without a trace here; so can
// someone who rewrites head as well. An external copy (the journal gets
// every line) is what catches that.
package audit
