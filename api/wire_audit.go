package api

import "encoding/json"

// AuditEntries is the answer of GET /v1/audit: lines of the log as they
// are written, and the seq of the last line written.
type AuditEntries struct {
	Entries []json.RawMessage `json:"entries"`
	LastSeq uint64            `json:"last_seq"`
}

// AuditReport is the answer of POST /v1/audit/verify: the outcome of a
// verification (audit.Report). When OK is false, FirstBadSeq is the first
// entry that can no longer be trusted and Reason says why; the counts
// cover the entries checked before it.
type AuditReport struct {
	OK          bool   `json:"ok"`
	Entries     uint64 `json:"entries"`     // lines checked
	Checkpoints uint64 `json:"checkpoints"` // checkpoints whose signature verified
	FirstSeq    uint64 `json:"first_seq"`
	LastSeq     uint64 `json:"last_seq"`
	// LastCheckpoint is the seq of the last verified checkpoint; Unsigned
	// the entries after it, which only the hash chain covers (they can
	// be dropped without a trace by whoever can write the files).
	LastCheckpoint uint64   `json:"last_checkpoint_seq"`
	Unsigned       uint64   `json:"unsigned"`
	FirstBadSeq    uint64   `json:"first_bad_seq,omitempty"`
	Reason         string   `json:"reason,omitempty"`
	Notes          []string `json:"notes,omitempty"` // recovered crashes, lost events, pruned entries
	// LastChange is the highest change seq (audit.Event.Change) of the entries
	// checked: the store's changes up to it are in the log.
	LastChange uint64 `json:"last_change,omitempty"`
	// Pruned: entries 1 to Pruned were deleted by retention, as a signed
	// ActionPruned entry records; the log starts at Pruned+1 (FirstSeq).
	Pruned uint64 `json:"pruned,omitempty"`
}
