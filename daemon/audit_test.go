package daemon

import (
	"context"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/kv"
)

// TestEveryStoreWriteIsAudited holds the line that update (audit.go) is
// the only way the domain writes to the store: a store.Update anywhere
// else would be a change without its audit entry.
func TestEveryStoreWriteIsAudited(t *testing.T) {
	fset := token.NewFileSet()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	allowed := map[string]bool{"audit.go": true} // update, and the drainer's own deletions
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			sel, ok := n.(*ast.SelectorExpr)
			if !ok || sel.Sel.Name != "Update" {
				return true
			}
			if inner, ok := sel.X.(*ast.SelectorExpr); ok && inner.Sel.Name == "store" && !allowed[name] {
				t.Errorf("%s: a store write outside update (audit.go): its change would have no audit entry", fset.Position(sel.Pos()))
			}
			return true
		})
	}
}

// Every state change reaches the audit log with its change number, in
// order, exactly once, and names ids only.
func TestEveryChangeIsRecorded(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	p1 := e.grant(t, ActReadProject, Resource{Project: "p1"}).project.ID
	before := len(e.changes(t))

	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "Payroll DB", Payload: []byte("x")})
	g := e.grant(t, ActManageSecret, Resource{Secret: sec.ID})
	if _, err := e.svc.RotateSecret(ctx, g, RotateInput{Payload: []byte("y")}); err != nil {
		t.Fatal(err)
	}
	b, err := e.svc.CreateBinding(ctx, e.grant(t, ActManageBindings, Resource{Secret: sec.ID}), BindingInput{User: "carol", Name: "dbpass"})
	if err != nil {
		t.Fatal(err)
	}
	c, auth := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "bob", Name: "bobs-laptop"})
	sess, _, err := e.svc.Login(WithPrincipal(ctx, uidPrincipal(1002)), auth.Token)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "carol", "member"); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.RevokeSession(ctx, e.grant(t, ActManageSession, Resource{Session: sess.ID})); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.DeleteSecret(ctx, g); err != nil {
		t.Fatal(err)
	}

	got := e.changes(t)[before:]
	want := []struct {
		action string
		target map[string]string
	}{
		{"secret.create", map[string]string{"project": p1, "secret": sec.ID, "version": "1"}},
		{"secret.rotate", map[string]string{"secret": sec.ID, "version": "2"}},
		{"binding.create", map[string]string{"secret": sec.ID, "binding": b.ID}},
		{"credential.create", map[string]string{"credential": c.ID, "project": p1}},
		{"auth.login", map[string]string{"session": sess.ID, "credential": c.ID}},
		{"role.grant", map[string]string{"project": p1, "role": "member"}},
		{"session.revoke", map[string]string{"session": sess.ID}},
		{"secret.delete", map[string]string{"secret": sec.ID}},
	}
	if len(got) != len(want) {
		t.Fatalf("%d changes recorded, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		if _, ok := findEvent(got[i:i+1], w.action, audit.OutcomeOK, w.target); !ok {
			t.Errorf("change %d: %+v, want %s with %v", i, got[i], w.action, w.target)
		}
		if i > 0 && got[i].Change != got[i-1].Change+1 {
			t.Errorf("change %d has number %d after %d", i, got[i].Change, got[i-1].Change)
		}
	}
	// The counter in the store is the last number handed out.
	var ctr changeCounter
	if err := e.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableChanges, changesLast, &ctr) }); err != nil {
		t.Fatal(err)
	}
	if last := got[len(got)-1].Change; ctr.Seq != last {
		t.Errorf("the store's last change is %d, the log's %d", ctr.Seq, last)
	}
	// Ids, never names: neither the secret's display name, the
	// credential's name nor the delivery name is in any event or in the
	// daemon's log.
	for _, ev := range append(e.changes(t), e.events()...) {
		for _, v := range ev.Target {
			if v == "Payroll DB" || v == "bobs-laptop" || v == "dbpass" {
				t.Errorf("a name in %+v", ev)
			}
		}
	}
	for _, name := range []string{"Payroll DB", "bobs-laptop", "dbpass"} {
		if strings.Contains(e.logs.String(), name) {
			t.Errorf("the daemon log holds the name %q", name)
		}
	}
}

// The audit trail fails closed: while the log refuses changes they wait in
// the store (none is lost), and past a bound new changes are refused with
// 503 audit_unavailable; once the log takes them again, every waiting
// change arrives, in order, and changes are accepted again.
func TestChangesFailClosed(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	before := len(e.changes(t))
	e.audit.setFail(errors.New("no space left on device"))
	var acked []string
	var refused error
	for i := 0; i < outboxWhileFailing+10 && refused == nil; i++ {
		s, err := e.svc.CreateSecret(ctx, e.grant(t, ActManageProject, Resource{Project: "p1"}), SecretInput{DisplayName: "x", Payload: []byte("x")})
		if err != nil {
			refused = err
			break
		}
		acked = append(acked, s.ID)
		_ = e.svc.drainOutbox(ctx) // fails: the log refuses
	}
	wantCode(t, refused, CodeAuditUnavailable)
	if len(acked) < outboxWhileFailing-1 {
		t.Errorf("refused after %d changes, want about %d", len(acked), outboxWhileFailing)
	}
	// Reads and deliveries go on.
	if _, err := e.svc.Authorize(ctx, uidPrincipal(1003), ActReadProject, Resource{Project: "p1"}); err != nil {
		t.Errorf("a read during the outage: %v", err)
	}
	if _, ok := findEvent(e.events(), "secret.create", audit.OutcomeFailed, nil); !ok {
		t.Error("the refused change is not recorded as failed")
	}

	e.audit.setFail(nil)
	got := e.changes(t)[before:]
	if len(got) != len(acked) {
		t.Fatalf("%d changes reached the log, %d were acknowledged", len(got), len(acked))
	}
	for i, id := range acked {
		if got[i].Target["secret"] != id {
			t.Errorf("change %d is %+v, want the creation of %s", i, got[i], id)
		}
	}
	if _, err := e.svc.CreateSecret(ctx, e.grant(t, ActManageProject, Resource{Project: "p1"}), SecretInput{DisplayName: "x", Payload: []byte("x")}); err != nil {
		t.Errorf("after the log recovered: %v", err)
	}
}

// Changes committed while no audit log is attached (or that the log never
// acknowledged before a crash) wait in the store and reach the log after a
// restart; what the log already had is not written twice.
func TestOutboxSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	keys := newFakeKeys()
	open := func() (*Service, *kv.Store) {
		store, err := kv.Open(context.Background(), kv.Options{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		svc, err := New(context.Background(), Config{Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}, keys, store)
		if err != nil {
			t.Fatal(err)
		}
		return svc, store
	}
	ctx := context.Background()
	svc, _ := open()
	log := &recordingAudit{}
	log.setFail(errors.New("disk full"))
	if err := svc.SetAuditLog(ctx, log); err != nil {
		t.Fatal(err)
	}
	grant := func(svc *Service) Grant {
		g, err := svc.Authorize(ctx, rootPrincipal, ActManageProjects, Resource{})
		if err != nil {
			t.Fatal(err)
		}
		return g
	}
	for _, name := range []string{"a", "b", "c"} {
		if _, err := svc.CreateProject(ctx, grant(svc), name); err != nil {
			t.Fatal(err)
		}
	}
	svc.CloseAudit(ctx)
	svc.Close() // as a crash would: the outbox is still full

	svc, _ = open()
	defer svc.Close()
	log.setFail(nil)
	if err := svc.SetAuditLog(ctx, log); err != nil {
		t.Fatal(err)
	}
	if err := svc.CloseAudit(ctx); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, ev := range log.appended {
		if ev.Action == "project.create" && ev.Principal.Channel == string(ChannelUnix) {
			names = append(names, ev.Target["project"])
		}
	}
	if len(names) != 3 {
		t.Fatalf("after the restart the log has %d of the 3 projects' creations: %+v", len(names), log.appended)
	}
	// A log that already holds them (a crash after its fsync, before the
	// outbox was emptied) skips them: nothing twice.
	n := len(log.appended)
	if err := svc.store.Update(ctx, func(tx *kv.Txn) error {
		ev := log.appended[n-1]
		return tx.Put(tableOutbox, outboxKey(ev.Change), outboxRecord{Event: ev})
	}); err != nil {
		t.Fatal(err)
	}
	if err := svc.SetAuditLog(ctx, log); err != nil {
		t.Fatal(err)
	}
	if err := svc.CloseAudit(ctx); err != nil {
		t.Fatal(err)
	}
	if len(log.appended) != n {
		t.Errorf("a change already in the log was written again")
	}
}

// Refusals are recorded by the domain where they are decided: a denial by
// Authorize, a bad bearer token by Authenticate, both with who asked.
func TestDenialsAreRecorded(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	_, err := e.svc.Authorize(WithRoute(ctx, "POST /v1/projects"), uidPrincipal(1003), ActManageProjects, Resource{})
	wantCode(t, err, CodeForbidden)
	ev, ok := findEvent(e.events(), "project.manage", audit.OutcomeDenied, map[string]string{"route": "POST /v1/projects"})
	if !ok || ev.Principal == nil || ev.Principal.UID == nil || *ev.Principal.UID != 1003 {
		t.Errorf("the denial: %+v %v", ev, ok)
	}
	c, tok := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob"})
	if _, err := e.svc.RevokeCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: c.ID})); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Authenticate(ctx, uidPrincipal(5555), tok.Token)
	wantCode(t, err, CodeUnauthenticated)
	parsed, _ := ParseToken(tok.Token)
	ev, ok = findEvent(e.events(), "authenticate", audit.OutcomeDenied, nil)
	if !ok || ev.Principal.TokenID != "cft_"+parsed.ID || ev.Reason == "" {
		t.Errorf("the refused token: %+v %v", ev, ok)
	}
	for _, ev := range e.events() {
		if strings.Contains(ev.Reason, tok.Token) || strings.Contains(ev.Principal.TokenID, tok.Token[8:]) {
			t.Errorf("a token in %+v", ev)
		}
	}
}

// The audit log witnesses the store: a store whose last change is older
// than the log's last one has lost acknowledged changes, and attaching the
// log to it is refused, naming both numbers.
func TestAuditLogWitnessesTheStore(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	last := e.changes(t)[len(e.changes(t))-1].Change
	svc := e.svc
	svc.CloseAudit(ctx)
	ahead := &recordingAudit{appended: []audit.Event{{Change: last + 7}}}
	err := svc.SetAuditLog(ctx, ahead)
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("records state change %d, but the store's last change is %d", last+7, last)) {
		t.Fatalf("a log ahead of the store: %v", err)
	}
	if svc.auditLog() != nil {
		t.Error("the refused log was attached")
	}
	even := &recordingAudit{appended: []audit.Event{{Change: last}}}
	if err := svc.SetAuditLog(ctx, even); err != nil {
		t.Fatalf("a log at the store's last change: %v", err)
	}
}
