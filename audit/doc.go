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
// # Files
//
// Dir/audit.log is written; once it is over the size limit it is renamed to
// Dir/audit-<first seq, 20 digits>.log right after a checkpoint and a new
// audit.log starts (the chain goes on across files). Dir/head holds a copy
// of the last checkpoint line, written after that line is on disk, so that
// a log cut below it is detected.
//
// # What verification finds, and what it cannot
//
// Verify finds any edited, deleted, inserted or reordered line that is
// followed by another line, a checkpoint that does not verify with a key
// of the JWK set, and a log cut below the checkpoint recorded in head.
// Lines after the last checkpoint are covered by the hash chain only: whoever
// can write the files (root) can drop them, or rewrite them consistently,
// without a trace here; so can someone who rewrites head as well. An
// external copy (the journal gets every line) is what catches that.
package audit
