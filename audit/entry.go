package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
)

// Outcomes of an event.
const (
	OutcomeOK     = "ok"     // it happened
	OutcomeDenied = "denied" // authentication or authorization refused it
	OutcomeFailed = "failed" // bad input, not found, or a fault
)

// Actions the audit log writes about itself.
const (
	// ActionDiscontinuity: at start the log did not reach the checkpoint
	// recorded in head (it was cut or replaced while the daemon was
	// stopped). Verify always reports it.
	ActionDiscontinuity = "audit.discontinuity"
	// ActionRecovered: at start the last line was incomplete (a crash in
	// the middle of a write) and was removed.
	ActionRecovered = "audit.recovered"
	// ActionLost: events recorded with Record were lost because the queue
	// was full or the file could not be written; written as soon as
	// writing works again. Target: events (how many), first and last
	// (when the first and the last of them were recorded).
	ActionLost = "audit.lost"
	// ActionDropped is what logs written before ActionLost said of lost
	// events; Verify still notes it.
	ActionDropped = "audit.dropped"
	// ActionPruned: a rotated file was deleted to keep the directory
	// within Options.MaxTotalSize. Target: first_seq and last_seq (the
	// entries deleted), prev (the chain hash the next entry continues
	// from) and file. A checkpoint follows it before the file is deleted,
	// so the record is signed.
	ActionPruned = "audit.pruned"
)

// Target keys of the log's own events.
const (
	TargetEvents   = "events"    // ActionLost: how many events
	TargetFirst    = "first"     // ActionLost, coalesced denials: the time of the first event counted
	TargetLast     = "last"      // ActionLost, coalesced denials: the time of the last one
	TargetFirstSeq = "first_seq" // ActionPruned
	TargetLastSeq  = "last_seq"  // ActionPruned
	TargetPrev     = "prev"      // ActionPruned
	TargetFile     = "file"      // ActionPruned
)

// Entry types.
const (
	TypeEvent      = "event"
	TypeCheckpoint = "checkpoint"
)

// Event is one security event. No field may hold secret material: ids,
// names, the principal and the outcome only.
type Event struct {
	Action    string            `json:"action,omitempty"`
	Outcome   string            `json:"outcome,omitempty"`
	Status    int               `json:"status,omitempty"` // HTTP status, for API requests
	Code      string            `json:"code,omitempty"`   // error code
	Reason    string            `json:"reason,omitempty"` // a fixed phrase, never request data
	Principal *Principal        `json:"principal,omitempty"`
	Target    map[string]string `json:"target,omitempty"` // ids and names the event is about
	// Change is the store's change sequence number of a state change
	// written with Append (strictly increasing); 0 for events from
	// Record. A checkpoint line carries the highest Change before it.
	Change uint64 `json:"change,omitempty"`
	// Count, on a line that stands for coalesced denials, is how many
	// identical denials it stands for beyond the first (which has a line
	// of its own); Target first and last say when they happened.
	Count uint64 `json:"count,omitempty"`
	// Distinct, when set, keeps a denial apart from otherwise identical
	// ones when they are coalesced (it is not written): for callers that
	// cannot flood, such as systemd on the LoadCredential= socket, whose
	// refusals of different units and credentials each deserve a line.
	Distinct string `json:"-"`
}

// Principal is who caused an event, as the transport saw it.
type Principal struct {
	Channel    string  `json:"channel,omitempty"`
	UID        *uint32 `json:"uid,omitempty"`
	GID        *uint32 `json:"gid,omitempty"`
	PID        int32   `json:"pid,omitempty"`
	CID        *uint32 `json:"cid,omitempty"`
	VM         string  `json:"vm,omitempty"`
	TokenKind  string  `json:"token_kind,omitempty"`
	TokenID    string  `json:"token_id,omitempty"` // the public id of a presented token
	Session    string  `json:"session,omitempty"`
	Credential string  `json:"credential,omitempty"`
	User       string  `json:"user,omitempty"` // user id
	Project    string  `json:"project,omitempty"`
}

// Entry is one line of the log.
type Entry struct {
	Seq  uint64 `json:"seq"`
	Time string `json:"time"` // RFC 3339, UTC, as written (it is signed as is)
	Prev string `json:"prev"`
	Type string `json:"type"`
	Event
	KID string `json:"kid,omitempty"`
	Sig string `json:"sig,omitempty"` // base64url raw r||s
}

// hashSize is the size of a SHA-256 hash.
const hashSize = sha256.Size

// genesis is the prev of the first line.
var genesis = hex.EncodeToString(make([]byte, hashSize))

// lineHash is the chain hash of a line (without its newline).
func lineHash(line []byte) [hashSize]byte { return sha256.Sum256(line) }

// checkpointDigest is what a checkpoint's signature covers.
func checkpointDigest(seq uint64, time, prev string) []byte {
	h := sha256.New()
	fmt.Fprintf(h, "coffer-audit-checkpoint-v1\n%d\n%s\n%s\n", seq, time, prev)
	return h.Sum(nil)
}

// encodeEntry appends e as one JSON line (with its newline) to buf.
func encodeEntry(buf *bytes.Buffer, e *Entry) error {
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	return enc.Encode(e)
}

// seqPrefix starts every line the log writes.
const seqPrefix = `{"seq":`

// peekSeq reads the seq of a line without decoding it; ok is false when the
// line does not start the way the log writes lines.
func peekSeq(line []byte) (uint64, bool) {
	rest, ok := bytes.CutPrefix(line, []byte(seqPrefix))
	if !ok {
		return 0, false
	}
	end := bytes.IndexByte(rest, ',')
	if end <= 0 || end > 20 {
		return 0, false
	}
	n, err := strconv.ParseUint(string(rest[:end]), 10, 64)
	return n, err == nil
}
