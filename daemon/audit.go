package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/kv"
)

// The audit trail is recorded by the domain, where things happen, in two
// ways:
//
//   - A state change records its event in the same store transaction as
//     the change itself (update): into an outbox table, numbered by the
//     store's change sequence. No change is acknowledged without its
//     entry, a crash loses none, and the drainer copies the outbox to the
//     audit log (Append: written and synced) before deleting it. When the
//     audit log cannot take them, changes are refused (503
//     audit_unavailable) instead of piling up unrecorded.
//   - Everything else — denials, failed authentications, deliveries,
//     reads worth recording — goes to the audit log directly (Record):
//     best effort, never blocking the request, repeated denials
//     coalesced there, and what is lost is counted into the log.
//
// update is the only way a domain method writes to the store; the few
// writes that are not state changes (the drainer's own deletions) say so
// where they are made, and TestEveryStoreWriteIsAudited holds the line.
// (The audit package is the one place that knows the log's format; the
// daemon imports it for its Event type.)

const (
	// tableOutbox holds the events of committed changes until the audit
	// log has them, keyed by their change sequence number (20 digits, so
	// that the key order is the number order).
	tableOutbox = "audit_outbox"
	// tableChanges holds the last change sequence number (record
	// changesLast): every state change ever committed has one.
	tableChanges = "changes"
	changesLast  = "last"

	// maxOutbox is how many changes may wait for the audit log at most;
	// beyond it, and beyond outboxWhileFailing while the log refuses
	// them, changes are refused.
	maxOutbox          = 4096
	outboxWhileFailing = 64
	// outboxBatch is how many events the drainer hands the log at once;
	// drained records are deleted outboxDeleteBatch at a time, or every
	// outboxDeleteEvery (one commit for many: the deletions take the
	// committer's time from every writer).
	outboxBatch       = 512
	outboxDeleteBatch = 2048
	outboxDeleteEvery = 5 * time.Second
	// drainGather is how long the drainer waits after a change for more to
	// come, so that one Append (one fsync of the log) takes many: the
	// change is durable in the store already, and every fsync of the log is
	// one the store's commits wait behind on the same disk.
	drainGather = 100 * time.Millisecond

	CodeAuditUnavailable = "audit_unavailable"
)

// AuditLog is where the daemon's audit trail goes; *audit.Log is one.
type AuditLog interface {
	// Record appends an event, best effort, without blocking.
	Record(e audit.Event)
	// Append writes events of state changes and syncs them; events whose
	// Change the log has already are skipped.
	Append(ctx context.Context, events []audit.Event) error
	// LastChange is the highest Change the log holds durably.
	LastChange() uint64
}

// outboxRecord is one change's event waiting for the audit log.
type outboxRecord struct {
	Event audit.Event `json:"event"`
	At    time.Time   `json:"at"`
}

type changeCounter struct {
	Seq uint64 `json:"seq"`
}

// auditTrail is the Service's side of the audit log.
type auditTrail struct {
	log     atomic.Pointer[auditLogRef]
	pending atomic.Int64 // outbox records not yet drained
	failing atomic.Bool  // the last drain failed
	kick    chan struct{}

	mu         sync.Mutex // held by a drain; guards the fields below
	appended   string     // the outbox key of the last event the log took
	drained    []string   // outbox keys the log has, not yet deleted
	lastDelete time.Time

	stop    context.CancelFunc
	stopped chan struct{}
	errLog  logEvery // drain failures: one line per interval
}

type auditLogRef struct{ AuditLog }

func newAuditTrail() auditTrail { return auditTrail{kick: make(chan struct{}, 1)} }

// SetAuditLog attaches the audit log: the outbox is drained into it from
// now on (what waits from before is drained first), and best-effort events
// go to it. Call CloseAudit before closing l.
//
// The log is a witness of the store: every state change it records was
// committed to the store first, so a store whose last change is older
// than the log's has lost acknowledged changes (a damaged or missing
// MANIFEST or write-ahead log, a store copied back from elsewhere).
// SetAuditLog refuses it, attaching nothing.
func (s *Service) SetAuditLog(ctx context.Context, l AuditLog) error {
	var ctr changeCounter
	err := s.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableChanges, changesLast, &ctr) })
	if err != nil && !errors.Is(err, kv.ErrNotFound) {
		return fmt.Errorf("read the store's last change: %w", err)
	}
	if logged := l.LastChange(); logged > ctr.Seq {
		return fmt.Errorf("the audit log records state change %d, but the store's last change is %d: the store has lost %d acknowledged changes (a damaged or missing MANIFEST or write-ahead log, or an older copy of the store); restore it from a backup with coffer restore (see \"When storage fails\" in the README)", logged, ctr.Seq, logged-ctr.Seq)
	}
	s.audit.log.Store(&auditLogRef{l})
	drainCtx, cancel := context.WithCancel(context.Background())
	s.audit.stop, s.audit.stopped = cancel, make(chan struct{})
	go s.runDrain(drainCtx)
	s.kickDrain()
	return nil
}

// CloseAudit drains the outbox into the audit log one last time (within
// ctx) and detaches the log. Changes made after it wait in the outbox for
// the next start.
func (s *Service) CloseAudit(ctx context.Context) error {
	if s.audit.stop == nil {
		return nil
	}
	s.audit.stop()
	<-s.audit.stopped
	err := s.drainOutbox(ctx)
	s.audit.mu.Lock()
	err = errors.Join(err, s.deleteDrained(ctx))
	s.audit.mu.Unlock()
	s.audit.log.Store(nil)
	return err
}

func (s *Service) auditLog() AuditLog {
	if r := s.audit.log.Load(); r != nil {
		return r.AuditLog
	}
	return nil
}

// countOutbox sets the pending count from the store (at start).
func (s *Service) countOutbox(ctx context.Context) error {
	return s.store.View(ctx, func(tx *kv.Txn) error {
		n, err := tx.Count(tableOutbox, kv.Query{})
		s.audit.pending.Store(int64(n))
		return err
	})
}

// change is what a state-changing method tells update about itself: the
// ids its event names.
type change struct {
	target map[string]string
}

// set adds key=value pairs to the event's target; empty values are left
// out.
func (c *change) set(kvs ...string) {
	for i := 0; i+1 < len(kvs); i += 2 {
		if kvs[i+1] == "" {
			continue
		}
		if c.target == nil {
			c.target = make(map[string]string, len(kvs)/2)
		}
		c.target[kvs[i]] = kvs[i+1]
	}
}

// update runs fn in a store transaction and, when fn succeeds, records the
// change's event in the same transaction: action by p, with the target fn
// set. A change the audit trail cannot take is refused before fn runs. A
// change fn refuses (not found, conflict, forbidden, ...) is recorded, best
// effort, as failed or denied.
func (s *Service) update(ctx context.Context, p Principal, action string, fn func(tx *kv.Txn, c *change) error) error {
	if err := s.auditAdmits(); err != nil {
		s.recordFailure(p, action, nil, err)
		return err
	}
	var c change
	start := time.Now()
	err := s.store.Update(ctx, func(tx *kv.Txn) error {
		c = change{}
		if err := fn(tx, &c); err != nil {
			return err
		}
		return s.recordChange(tx, p, action, c)
	})
	if s.cfg.Observer != nil {
		s.cfg.Observer.ObserveCommit(time.Since(start), err)
	}
	if err != nil {
		t := c.target
		if rt := routeTarget(ctx); rt != nil {
			t = maps.Clone(t)
			if t == nil {
				t = map[string]string{}
			}
			maps.Copy(t, rt)
		}
		s.recordFailure(p, action, t, err)
		return err
	}
	s.audit.pending.Add(1)
	s.kickDrain()
	s.logChange(ctx, p, action, c.target)
	return nil
}

// nameTargets are the target keys of change events that hold names, not
// ids: the host's unit and credential names, which the audit log keeps
// and the daemon's own lines leave out.
var nameTargets = map[string]bool{"unit": true, "unit_credential": true}

// logChange writes one line per change to the daemon log: what happened
// in words, the action and the ids it is about as attributes (never a
// name: names are tenants' data), and who.
func (s *Service) logChange(ctx context.Context, p Principal, action string, target map[string]string) {
	if !s.log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	attrs := make([]slog.Attr, 0, len(target)+1)
	for _, k := range slices.Sorted(maps.Keys(target)) {
		if !nameTargets[k] {
			attrs = append(attrs, slog.String(k, target[k]))
		}
	}
	attrs = append(attrs, slog.String("action", action), slog.String("by", p.String()))
	// The message in words, from the ids alone (audit.Describe), like the
	// audit log's copy in the journal.
	msg := audit.Describe(audit.Event{Action: action, Outcome: audit.OutcomeOK, Principal: auditPrincipal(p), Target: target})
	s.log.LogAttrs(ctx, slog.LevelInfo, msg, attrs...)
}

// systemPrincipal is the daemon itself (start-up work, maintenance).
var systemPrincipal = Principal{Channel: ChannelDaemon}

// recordChange numbers the change and puts its event in the outbox.
func (s *Service) recordChange(tx *kv.Txn, p Principal, action string, c change) error {
	var ctr changeCounter
	if err := tx.Get(tableChanges, changesLast, &ctr); err != nil && !errors.Is(err, kv.ErrNotFound) {
		return err
	}
	ctr.Seq++
	// Unindexed writes: neither table has index entries, so there is no
	// previous version to read (the committer's time is every writer's).
	if err := tx.PutUnindexed(tableChanges, changesLast, ctr); err != nil {
		return err
	}
	ev := audit.Event{Action: action, Outcome: audit.OutcomeOK, Principal: auditPrincipal(p), Target: c.target, Change: ctr.Seq}
	return tx.PutUnindexed(tableOutbox, outboxKey(ctr.Seq), outboxRecord{Event: ev, At: s.now()})
}

func outboxKey(seq uint64) string { return fmt.Sprintf("%020d", seq) }

// auditAdmits refuses a change when the audit log is behind: with a log
// attached, more than maxOutbox changes waiting, or more than
// outboxWhileFailing while the log refuses them (a full or failing disk).
func (s *Service) auditAdmits() error {
	if s.auditLog() == nil {
		return nil // not attached yet (start-up) or tests without a log: the outbox keeps them
	}
	n := s.audit.pending.Load()
	if n >= maxOutbox || (s.audit.failing.Load() && n >= outboxWhileFailing) {
		if h := s.storeHealth(); h.Err != nil {
			// The store refuses writes too (its filesystem is usually
			// the log's): that is the cause to report, with its state
			// in status, and what the operator must mend first.
			return storeFault(h.Err)
		}
		return unavailable(CodeAuditUnavailable, "the audit log cannot record changes now; try again later", errors.New("audit outbox full"))
	}
	return nil
}

// kickDrain wakes the drainer.
func (s *Service) kickDrain() {
	select {
	case s.audit.kick <- struct{}{}:
	default:
	}
}

// drainRetry is how often a failing drain is retried (and an idle one
// looks anyway).
const drainRetry = time.Second

// runDrain drains the outbox whenever a change is committed, and retries
// every drainRetry while the log refuses.
func (s *Service) runDrain(ctx context.Context) {
	defer close(s.audit.stopped)
	t := time.NewTicker(drainRetry)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-s.audit.kick:
			// Let a burst gather: one Append for many changes.
			select {
			case <-ctx.Done():
				return
			case <-time.After(drainGather):
			}
		case <-t.C:
		}
		_ = s.drainOutbox(ctx)
	}
}

// FlushAudit writes the changes that wait for the audit log to it now
// (they are in the store already; the drainer would write them within a
// moment), for a reader of the log who must see every acknowledged change.
func (s *Service) FlushAudit(ctx context.Context) error { return s.drainOutbox(ctx) }

// drainOutbox copies the outbox to the audit log, oldest first. What the
// log holds durably is deleted later, many at a time (deleteDrained).
func (s *Service) drainOutbox(ctx context.Context) error {
	s.audit.mu.Lock()
	defer s.audit.mu.Unlock()
	l := s.auditLog()
	if l == nil {
		return nil
	}
	for {
		var keys []string
		var events []audit.Event
		err := s.store.View(ctx, func(tx *kv.Txn) error {
			return tx.List(tableOutbox, kv.Query{After: s.audit.appended, Limit: outboxBatch}, func(id string, decode func(any) error) error {
				var rec outboxRecord
				if err := decode(&rec); err != nil {
					return err
				}
				// The line's time is when the log writes it; when the
				// change was committed goes with it.
				if rec.Event.Target == nil {
					rec.Event.Target = map[string]string{}
				}
				rec.Event.Target["committed_at"] = rec.At.UTC().Format(time.RFC3339Nano)
				keys, events = append(keys, id), append(events, rec.Event)
				return nil
			})
		})
		if err == nil && len(keys) > 0 {
			// Events the log has already (a crash after its fsync, before
			// their deletion) are skipped by it.
			err = l.Append(ctx, events)
		}
		if err != nil {
			s.audit.failing.Store(true)
			if ctx.Err() == nil {
				s.audit.errLog.log(s.log, "audit: cannot write changes to the audit log; changes wait in the store, and are refused past a limit", err)
				if p, ok := s.store.(storeProber); ok {
					// Changes are refused here before the store writes
					// again: let it find out now whether its filesystem
					// failed too, so that status says so.
					_ = p.Probe()
				}
			}
			return err
		}
		if s.audit.failing.Swap(false) {
			s.log.Info("audit: the audit log takes changes again")
		}
		if len(keys) > 0 {
			s.audit.appended = keys[len(keys)-1]
			s.audit.drained = append(s.audit.drained, keys...)
			s.audit.pending.Add(-int64(len(keys)))
		}
		if len(keys) < outboxBatch {
			break
		}
	}
	if len(s.audit.drained) >= outboxDeleteBatch || (len(s.audit.drained) > 0 && time.Since(s.audit.lastDelete) >= outboxDeleteEvery) {
		return s.deleteDrained(ctx)
	}
	return nil
}

// deleteDrained deletes the outbox records the audit log holds. The
// caller holds s.audit.mu. Not a state change: the events are in the log.
func (s *Service) deleteDrained(ctx context.Context) error {
	s.audit.lastDelete = time.Now()
	for len(s.audit.drained) > 0 {
		n := min(len(s.audit.drained), outboxDeleteBatch)
		err := s.store.Update(ctx, func(tx *kv.Txn) error {
			for _, k := range s.audit.drained[:n] {
				if err := tx.DeleteUnindexed(tableOutbox, k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return err // kept for the next time
		}
		s.audit.drained = s.audit.drained[n:]
	}
	s.audit.drained = nil
	return nil
}

// record hands a best-effort event to the audit log, if one is attached.
func (s *Service) record(e audit.Event) {
	if l := s.auditLog(); l != nil {
		l.Record(e)
	}
}

// recordFailure records a change that did not happen: denied when
// authorization or authentication said no, failed otherwise.
func (s *Service) recordFailure(p Principal, action string, target map[string]string, err error) {
	var bad *errBadToken
	if errors.As(err, &bad) {
		return // a refused token: the authentication records it (tokenRefused)
	}
	if p.Channel == ChannelDaemon {
		return // the daemon's own work logs its failures where it retries
	}
	e := audit.Event{Action: action, Outcome: audit.OutcomeFailed, Code: CodeOf(err), Principal: auditPrincipal(p), Target: target}
	var de *Error
	if errors.As(err, &de) && (de.Class == ErrForbidden || de.Class == ErrUnauthenticated || de.Class == ErrRateLimited) {
		e.Outcome = audit.OutcomeDenied
	}
	s.record(e)
}

// recordDenial records a refusal (coalesced by the log when repeated).
func (s *Service) recordDenial(p Principal, action, code, reason string, target map[string]string) {
	s.record(audit.Event{Action: action, Outcome: audit.OutcomeDenied, Code: code, Reason: reason, Principal: auditPrincipal(p), Target: target})
}

// auditPrincipal is the audit form of a principal.
func auditPrincipal(p Principal) *audit.Principal {
	out := &audit.Principal{Channel: string(p.Channel), VM: p.VM}
	if out.Channel == "" {
		out.Channel = "none"
	}
	if p.HasCred {
		uid, gid := p.UID, p.GID
		out.UID, out.GID, out.PID = &uid, &gid, p.PID
	}
	if p.Channel == ChannelVsock {
		cid := p.CID
		out.CID = &cid
	}
	if t := p.Token; t != nil {
		out.TokenKind, out.Session, out.Credential, out.User, out.Project = t.Kind, t.SessionID, t.CredentialID, t.UserID, t.ProjectID
	}
	return out
}

// logEvery logs an error repeated by a loop once per interval, with how
// many times it happened since the last line.
type logEvery struct {
	mu    sync.Mutex
	last  time.Time
	count int
}

const logEveryInterval = 30 * time.Second

func (l *logEvery) log(log *slog.Logger, msg string, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.count++
	if !l.last.IsZero() && time.Since(l.last) < logEveryInterval {
		return
	}
	log.Error(msg, "err", err, "failures", strconv.Itoa(l.count))
	l.last, l.count = time.Now(), 0
}

// maxAuditValue bounds one target value taken from a request.
const maxAuditValue = 128

// auditValue bounds a value taken from a request for the audit log and
// withholds anything that looks like a token, should one be pasted where
// an id or a name belongs.
func auditValue(v string) string {
	if LooksLikeJWT(v) || looksLikeToken(v) {
		return "[withheld]"
	}
	if len(v) > maxAuditValue {
		v = v[:maxAuditValue] + "..."
	}
	return v
}

// auditPath is a /v1/authorize path as the audit log records it: the
// caller's request to a service of its own (not a name coffer keeps for a
// tenant), so it is recorded, as auditValue shapes it, but without its
// query string: that is where services put API keys and signatures.
func auditPath(p string) string {
	p, _, _ = strings.Cut(p, "?")
	return auditValue(p)
}

// looksLikeToken: a coffer token prefix and more than an id's worth after
// it (a token with a typo fails its checksum but is still mostly secret).
func looksLikeToken(v string) bool {
	if len(v) <= 4+tokenIDLen || v[3] != '_' {
		return false
	}
	switch v[:3] {
	case PrefixAuthToken, PrefixOAuth2, PrefixAccessToken, PrefixSession:
		return true
	}
	return false
}

// publicTokenID is the public part of a coffer token ("cfa_<id>"), or ""
// for anything else (a JWT, garbage): never the token itself.
func publicTokenID(token string) string {
	p, err := ParseToken(token)
	if err != nil {
		return ""
	}
	return p.Prefix + "_" + p.ID
}

// cmpErr is err, or alt when err is nil (a condition that is an error
// only by what was read).
func cmpErr(err, alt error) error {
	if err != nil {
		return err
	}
	return alt
}

// recordRestore records a restore in the restored store, offline: the
// store's change sequence goes on past the last change the state
// directory's audit log holds (the log witnesses the store: a store behind
// it is refused), and a store.restore change waits in its outbox for the
// daemon to write to the log at its next start.
func recordRestore(ctx context.Context, store *kv.Store, stateDir, src string, h BackupHeader) error {
	logged, err := audit.LastChangeIn(filepath.Join(stateDir, auditDirName))
	if err != nil {
		return fmt.Errorf("read the audit log's last change: %w", err)
	}
	return store.Update(ctx, func(tx *kv.Txn) error {
		var ctr changeCounter
		if err := tx.Get(tableChanges, changesLast, &ctr); err != nil && !errors.Is(err, kv.ErrNotFound) {
			return err
		}
		from := ctr.Seq
		ctr.Seq = max(ctr.Seq, logged) + 1
		if err := tx.PutUnindexed(tableChanges, changesLast, ctr); err != nil {
			return err
		}
		ev := audit.Event{Action: "store.restore", Outcome: audit.OutcomeOK, Principal: &audit.Principal{Channel: "restore"}, Change: ctr.Seq,
			Target: map[string]string{"backup": filepath.Base(src), "backup_created_at": h.CreatedAt.UTC().Format(time.RFC3339),
				"backup_last_change": strconv.FormatUint(from, 10)}}
		return tx.PutUnindexed(tableOutbox, outboxKey(ctr.Seq), outboxRecord{Event: ev, At: time.Now().UTC()})
	})
}

// auditDirName is the audit log's directory in the state directory.
const auditDirName = "audit"
