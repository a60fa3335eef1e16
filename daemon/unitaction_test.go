package daemon

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeUnits records what it is asked and fails the units in fail.
type fakeUnits struct {
	mu    sync.Mutex
	calls []string
	fail  map[string]error
	block chan struct{} // when set, Act waits for it or ctx
}

func (f *fakeUnits) Act(ctx context.Context, unit, action string) error {
	f.mu.Lock()
	f.calls = append(f.calls, action+" "+unit)
	err, block := f.fail[unit], f.block
	f.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

type namedFailure struct{}

func (namedFailure) Error() string       { return "restart x.service: job failed" }
func (namedFailure) UnitFailure() string { return "job failed" }

func TestOnRotate(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	units := &fakeUnits{fail: map[string]error{"broken.service": namedFailure{}}}
	e.svc.SetUnitController(units, time.Second)
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "db", Payload: []byte("pw-1")})
	g := e.grant(t, ActManageBindings, Resource{Secret: sec.ID})
	bind := []struct {
		in   BindingInput
		want string // on_rotate stored, or an error code
	}{
		{BindingInput{Unit: "app.service", Credential: "db"}, OnRotateTryRestart},
		{BindingInput{Unit: "web.service", Credential: "db", OnRotate: "restart"}, OnRotateRestart},
		{BindingInput{Unit: "proxy.service", Credential: "db", OnRotate: "reload"}, OnRotateReload},
		{BindingInput{Unit: "batch.service", Credential: "db", OnRotate: "none"}, OnRotateNone},
		{BindingInput{Unit: "broken.service", Credential: "db", OnRotate: "restart"}, OnRotateRestart},
		{BindingInput{Unit: "bad.service", Credential: "db", OnRotate: "stop"}, CodeInvalidBinding},
		{BindingInput{Unit: "bad.service", Credential: "db", OnRotate: "Restart"}, CodeInvalidBinding},
		{BindingInput{User: "bob", Name: "db", OnRotate: "restart"}, CodeInvalidBinding},
		{BindingInput{User: "bob", Name: "db"}, ""},
	}
	for _, b := range bind {
		got, err := e.svc.CreateBinding(ctx, g, b.in)
		switch {
		case strings.Contains(b.want, "_"):
			wantCode(t, err, b.want)
		case err != nil:
			t.Fatalf("bind %+v: %v", b.in, err)
		case got.OnRotate != b.want:
			t.Fatalf("bind %+v: on_rotate %q, want %q", b.in, got.OnRotate, b.want)
		}
	}

	units.fail["app.service"] = errors.New("connect to the system bus: no such file")
	out, err := e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte("pw-2")})
	if err != nil {
		t.Fatalf("a failing unit action failed the rotation: %v", err)
	}
	if out.Version != 2 {
		t.Fatalf("version %d", out.Version)
	}
	// The rotation is committed whatever the units did.
	if d, err := e.svc.DeliverCredential(ctx, "app.service", "db"); err != nil || string(d.Payload) != "pw-2" {
		t.Fatalf("after rotation: %q %v", d.Payload, err)
	}
	got := map[string]UnitAction{}
	for _, a := range out.UnitActions {
		got[a.Unit] = a
	}
	want := map[string][2]string{
		"app.service":    {"try-restart", "failed"},
		"web.service":    {"restart", "restarted"},
		"proxy.service":  {"reload", "reloaded"},
		"broken.service": {"restart", "failed"},
	}
	if len(got) != len(want) {
		t.Fatalf("unit actions %+v", out.UnitActions)
	}
	for u, w := range want {
		if a := got[u]; a.Action != w[0] || a.Result != w[1] || (w[1] == "failed") != (a.Error != "") {
			t.Errorf("%s: %+v, want %v", u, a, w)
		}
	}
	slices.Sort(units.calls)
	if want := []string{"reload proxy.service", "restart broken.service", "restart web.service", "try-restart app.service"}; !slices.Equal(units.calls, want) {
		t.Fatalf("calls %v, want %v", units.calls, want)
	}
	// Each result is in the audit log, by ids and the unit name; failures
	// with a fixed reason.
	es := e.events()
	if _, ok := findEvent(es, "unit.restart", "ok", map[string]string{"unit": "web.service", "secret": sec.ID, "version": "2"}); !ok {
		t.Error("the restart is not audited")
	}
	if ev, ok := findEvent(es, "unit.restart", "failed", map[string]string{"unit": "broken.service"}); !ok || ev.Reason != "job failed" || ev.Code != CodeUnitActionFailed {
		t.Errorf("the failed restart: %+v %v", ev, ok)
	}
	if ev, ok := findEvent(es, "unit.try-restart", "failed", map[string]string{"unit": "app.service"}); !ok || ev.Reason != "systemd refused or could not be reached" {
		t.Errorf("the unreachable bus: %+v %v", ev, ok)
	}
	if strings.Contains(e.logs.String(), "pw-2") || strings.Contains(e.logs.String(), "pw-1") {
		t.Fatal("a payload is in the log")
	}

	// A unit that never finishes: the timeout ends the wait, the rotation
	// stands.
	units.block = make(chan struct{})
	e.svc.SetUnitController(units, 50*time.Millisecond)
	out, err = e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte("pw-3")})
	if err != nil || out.Version != 3 {
		t.Fatalf("rotation with a hung unit: %v %v", out.Version, err)
	}
	for _, a := range out.UnitActions {
		if a.Result != UnitResultFailed {
			t.Fatalf("hung unit: %+v", a)
		}
	}
	if _, ok := findEvent(e.events(), "unit.restart", "failed", map[string]string{"unit": "web.service", "version": "3"}); !ok {
		t.Error("the timed-out restart is not audited")
	}
	close(units.block)

	// No controller: recorded as failed, the rotation stands.
	e.svc.SetUnitController(nil, 0)
	out, err = e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte("pw-4")})
	if err != nil || len(out.UnitActions) != 4 || out.UnitActions[0].Error != "no systemd connection" {
		t.Fatalf("no controller: %+v %v", out.UnitActions, err)
	}
}

// A unit binding stored before on_rotate existed reads as none and does
// nothing on rotation.
func TestOnRotateLegacyBinding(t *testing.T) {
	r := bindingRecord{Kind: BindUnit}
	if r.onRotate() != OnRotateNone {
		t.Fatalf("legacy unit binding: %q", r.onRotate())
	}
	if (bindingRecord{Kind: BindUser}).onRotate() != "" {
		t.Fatal("a user binding has an on_rotate")
	}
}
