package audit

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"

	"github.com/coffer-hsm/coffer/api"
)

// Report is the outcome of a verification, as the API answers it
// (api.AuditReport).
type Report = api.AuditReport

// VerifyDir verifies the log in dir as a whole: every file in order
// (archived ones too) from entry 1, every checkpoint signature with keys,
// and that the log still reaches the checkpoint recorded in head. A log
// whose oldest files were deleted by retention starts later: its first
// entry's prev is trusted only if an ActionPruned entry records it (the
// same prev, ending right before it) and a later checkpoint signs that
// record. An error is returned only when the files cannot be read;
// everything found wrong is in the Report.
func VerifyDir(ctx context.Context, dir string, keys KeySource) (Report, error) {
	head, err := readHead(dir)
	if err != nil {
		return Report{}, err
	}
	files, err := listFiles(dir)
	if err != nil {
		return Report{}, err
	}
	lr, err := openFiles(files, false)
	if err != nil {
		return Report{}, err
	}
	defer lr.Close()
	return verify(ctx, lr, head, keys, false), nil
}

// VerifyFile verifies one file on its own (such as a rotated file, archived
// or not): its
// chain from its first line on, whatever that line's seq, and its
// checkpoints. What came before the file, and truncation after its last
// checkpoint, are not checked.
func VerifyFile(ctx context.Context, path string, keys KeySource) (Report, error) {
	gz, err := isGzip(path)
	if err != nil {
		return Report{}, fmt.Errorf("audit: %w", err)
	}
	lr, err := openFiles([]logFile{{path: path, gz: gz}}, false)
	if err != nil {
		return Report{}, err
	}
	defer lr.Close()
	return verify(ctx, lr, nil, keys, true), nil
}

// verify walks the lines of lr. fromAnywhere lets the chain start at any
// seq and prev (one file of a longer log); otherwise a start after entry 1
// must be accounted for by a signed ActionPruned entry.
func verify(ctx context.Context, lr *lineReader, head []byte, keys KeySource, fromAnywhere bool) Report {
	var (
		rep    Report
		prev          = genesis
		expect uint64 = 1
		lastCP uint64 // the last verified checkpoint
		// What the log holds at headSeq, and the last verified
		// checkpoint before it.
		atHead   []byte
		cpBefore uint64
		// A log that starts after entry 1: its first entry, the first
		// ActionPruned entry that accounts for it and the first
		// checkpoint after that, and the end of the latest range the
		// signed pruned entries account for otherwise.
		start     uint64
		startPrev string
		prunedAt  uint64
		signedAt  uint64
		pruned    []prunedRange
	)
	fail := func(seq uint64, format string, args ...any) Report {
		rep.OK, rep.FirstBadSeq, rep.Reason = false, seq, fmt.Sprintf(format, args...)
		rep.LastCheckpoint = lastCP
		return rep
	}
	headSeq, headOK := peekSeq(head)
	if head != nil && !headOK {
		return fail(1, "the head file is not a checkpoint line")
	}
	for n := 0; ; n++ {
		if n%4096 == 0 && ctx.Err() != nil {
			return fail(expect, "verification stopped: %v", ctx.Err())
		}
		line, err := lr.next()
		if errors.Is(err, io.EOF) {
			break
		}
		switch {
		case errors.Is(err, errTorn):
			return fail(expect, "entry %d is incomplete: the file ends in the middle of a line", expect)
		case errors.Is(err, errLong):
			return fail(expect, "entry %d is longer than %d bytes", expect, maxLine)
		case err != nil:
			return fail(expect, "entry %d cannot be read: %v", expect, err)
		}
		var e Entry
		if err := json.Unmarshal(line, &e); err != nil {
			return fail(expect, "entry %d is not valid JSON: it was altered", expect)
		}
		if rep.Entries == 0 && (fromAnywhere || e.Seq > 1) {
			expect, prev = e.Seq, e.Prev
			if !fromAnywhere {
				start, startPrev = e.Seq, e.Prev
			}
		}
		if rep.Entries == 0 {
			rep.FirstSeq = e.Seq
		}
		if e.Seq != expect {
			return fail(expect, "expected entry %d, found entry %d: entries were deleted, inserted or reordered", expect, e.Seq)
		}
		if e.Prev != prev {
			if expect == 1 {
				return fail(1, "entry 1 does not start the chain: it was altered")
			}
			return fail(expect-1, "entry %d does not match the hash recorded in entry %d: one of them was altered", expect-1, expect)
		}
		switch e.Type {
		case TypeEvent:
			switch e.Action {
			case ActionDiscontinuity:
				return fail(e.Seq, "entry %d records that the log was cut or replaced while the daemon was stopped: %s", e.Seq, e.Reason)
			case ActionRecovered, ActionDropped:
				rep.Notes = append(rep.Notes, fmt.Sprintf("entry %d: %s", e.Seq, e.Reason))
			case ActionLost:
				rep.Notes = append(rep.Notes, fmt.Sprintf("entry %d: %s events lost from %s to %s: %s",
					e.Seq, e.Target[TargetEvents], e.Target[TargetFirst], e.Target[TargetLast], e.Reason))
			case ActionPruned:
				if r, ok := parsePruned(e); ok && start > 0 {
					if prunedAt == 0 && r.last+1 == start && r.prev == startPrev {
						prunedAt = e.Seq
					}
					pruned = append(pruned, r)
				}
			}
		case TypeCheckpoint:
			pub, ok := keys.PublicKey(e.KID)
			if !ok {
				return fail(lastCP+1, "checkpoint %d is signed by key %q, which is not among the verification keys", e.Seq, e.KID)
			}
			sig, err := b64.DecodeString(e.Sig)
			if err != nil || !verifySig(pub, checkpointDigest(e.Seq, e.Time, e.Prev), sig) {
				return fail(lastCP+1, "the signature of checkpoint %d does not verify: entries %d to %d were altered or the checkpoint forged", e.Seq, lastCP+1, e.Seq)
			}
			rep.Checkpoints++
			lastCP = e.Seq
			if prunedAt > 0 && signedAt == 0 {
				signedAt = e.Seq
			}
		default:
			return fail(e.Seq, "entry %d has an unknown type: it was altered", e.Seq)
		}
		if headOK && e.Seq == headSeq {
			atHead = append([]byte(nil), line...)
		}
		if e.Seq < headSeq && e.Type == TypeCheckpoint {
			cpBefore = e.Seq
		}
		h := lineHash(line)
		prev = hex.EncodeToString(h[:])
		rep.Entries++
		rep.LastSeq = e.Seq
		rep.LastChange = max(rep.LastChange, e.Change)
		expect++
	}
	if start > 1 {
		if signedAt == 0 {
			// The first entry missing: after the last range a signed
			// record accounts for.
			first := uint64(1)
			for _, r := range pruned {
				if r.seq < lastCP && r.last < start {
					first = max(first, r.last+1)
				}
			}
			if prunedAt > 0 {
				return fail(first, "the log starts at entry %d: the audit.pruned entry %d that records the deletion of the entries before it is not signed by a later checkpoint", start, prunedAt)
			}
			return fail(first, "the log starts at entry %d: entries %d to %d were deleted and no signed audit.pruned entry records it", start, first, start-1)
		}
		rep.Pruned = start - 1
		rep.Notes = append(rep.Notes, fmt.Sprintf("entries 1 to %d were deleted by retention (audit.pruned entry %d, signed by checkpoint %d)", start-1, prunedAt, signedAt))
	}
	if headOK && !fromAnywhere {
		switch {
		case rep.LastSeq < headSeq:
			return fail(rep.LastSeq+1, "the log ends at entry %d but checkpoint %d had been written: it was truncated", rep.LastSeq, headSeq)
		case atHead == nil || lineHash(atHead) != lineHash(head):
			return fail(cpBefore+1, "checkpoint %d in the log is not the one that was written: entries after %d were replaced", headSeq, cpBefore)
		}
	}
	rep.OK = true
	rep.LastCheckpoint = lastCP
	if rep.Entries > 0 && rep.LastSeq > lastCP {
		rep.Unsigned = rep.LastSeq - max(lastCP, rep.FirstSeq-1)
	}
	return rep
}

// prunedRange is what an ActionPruned entry (at seq) says was deleted:
// entries up to last, the next one continuing from prev.
type prunedRange struct {
	seq, last uint64
	prev      string
}

func parsePruned(e Entry) (prunedRange, bool) {
	last, err := strconv.ParseUint(e.Target[TargetLastSeq], 10, 64)
	if err != nil || e.Target[TargetPrev] == "" {
		return prunedRange{}, false
	}
	return prunedRange{seq: e.Seq, last: last, prev: e.Target[TargetPrev]}, true
}

// isGzip reports whether the file at path is gzip-compressed (an archived
// file, whatever its name): a line of the log starts with '{'.
func isGzip(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	magic := make([]byte, 2)
	n, err := io.ReadFull(f, magic)
	if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, io.EOF) {
		return false, err
	}
	return n == 2 && magic[0] == 0x1f && magic[1] == 0x8b, nil
}
