package main

import (
	"context"
	"errors"
	"testing"

	"github.com/coffer-hsm/coffer/audit"
)

// audit tail puts the names the caller may read beside the ids, one
// look-up per id; what it may not read keeps its bare id.
func TestEntryLineNames(t *testing.T) {
	const sec, hidden, proj = "01a2b3c4-0000-4000-8000-000000000001", "01a2b3c4-0000-4000-8000-000000000002", "5ab0c0de-0000-4000-8000-000000000003"
	calls := 0
	r := &nameResolver{ctx: context.Background(), cache: map[string]string{}, get: func(_ context.Context, kind, id string) (string, error) {
		calls++
		switch kind + "/" + id {
		case "secret/" + sec:
			return "db password", nil
		case "project/" + proj:
			return "default", nil
		}
		return "", errors.New("forbidden")
	}}
	uid := uint32(1000)
	e := audit.Entry{Seq: 7, Time: "2026-12-05T14:00:00Z", Type: audit.TypeEvent, Event: audit.Event{
		Action: "secret.rotate", Outcome: audit.OutcomeOK, Change: 3,
		Principal: &audit.Principal{Channel: "unix", UID: &uid},
		Target:    map[string]string{"secret": sec, "project": proj, "version": "2"},
	}}
	want := `7       2026-12-05T14:00:00Z  secret.rotate      ok     change 3 by unix uid=1000 project=` + proj + `("default") secret=` + sec + `("db password") version=2`
	if got := entryLine(e, r); got != want {
		t.Fatalf("entryLine =\n  %s\nwant\n  %s", got, want)
	}
	e.Target["secret"] = hidden
	if got := entryLine(e, r); got != `7       2026-12-05T14:00:00Z  secret.rotate      ok     change 3 by unix uid=1000 project=`+proj+`("default") secret=`+hidden+` version=2` {
		t.Fatalf("a secret the caller may not read: %s", got)
	}
	entryLine(e, r)
	if calls != 3 {
		t.Fatalf("%d look-ups, want 3 (one per id)", calls)
	}
	if got := entryLine(e, nil); got != `7       2026-12-05T14:00:00Z  secret.rotate      ok     change 3 by unix uid=1000 project=`+proj+` secret=`+hidden+` version=2` {
		t.Fatalf("--ids: %s", got)
	}
}
