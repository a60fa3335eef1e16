package unitctl

import (
	"context"
	"errors"
	"testing"

	sddbus "github.com/coreos/go-systemd/v22/dbus"
)

// Without a bus, Act says so (and reconnects on the next call).
func TestActWithoutBus(t *testing.T) {
	dials := 0
	errNoBus := errors.New("no bus here")
	c := &Controller{Dial: func(context.Context) (*sddbus.Conn, error) { dials++; return nil, errNoBus }}
	for range 2 {
		if err := c.Act(context.Background(), "a.service", Restart); !errors.Is(err, errNoBus) {
			t.Fatalf("Act: %v", err)
		}
	}
	if dials != 2 {
		t.Fatalf("dialled %d times, want 2", dials)
	}
	c.Close()
	c.Close()
}

func TestFailuresAreFixedPhrases(t *testing.T) {
	if got := (&JobError{Unit: "a.service", Action: Restart, Result: "failed"}).UnitFailure(); got != "job failed" {
		t.Fatal(got)
	}
	if got := (&BusError{Name: "org.freedesktop.DBus.Error.AccessDenied", Err: errors.New("x")}).UnitFailure(); got != "org.freedesktop.DBus.Error.AccessDenied" {
		t.Fatal(got)
	}
}
