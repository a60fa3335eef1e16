package unixapi

import (
	"errors"
	"testing"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// TestClientClassesAreTheDaemons: an error of each daemon class, written
// as statusOf and daemon.CodeOf write it, is read back by the client as
// the class of the same name, and as no other.
func TestClientClassesAreTheDaemons(t *testing.T) {
	classes := []error{client.ErrInvalidArgument, client.ErrNotFound, client.ErrAlreadyExists, client.ErrConflict,
		client.ErrForbidden, client.ErrUnauthenticated, client.ErrUnavailable, client.ErrRateLimited}
	for _, tt := range []struct {
		err  error
		want error
	}{
		{daemon.Invalid(daemon.CodeInvalidName, "bad name"), client.ErrInvalidArgument},
		{daemon.Invalid(daemon.CodeBodyTooLarge, "too large"), client.ErrInvalidArgument},
		{daemon.NotFound("no such secret"), client.ErrNotFound},
		{&daemon.Error{Class: daemon.ErrAlreadyExists, Message: "exists"}, client.ErrAlreadyExists},
		{daemon.Conflict(daemon.CodeVersionConflict, "version"), client.ErrConflict},
		{daemon.Forbidden("no"), client.ErrForbidden},
		{&daemon.Error{Class: daemon.ErrUnauthenticated, Message: "who"}, client.ErrUnauthenticated},
		{&daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeHSMUnavailable, Message: "hsm"}, client.ErrUnavailable},
		{&daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeStoreFull, Message: "full"}, client.ErrUnavailable},
		{&daemon.Error{Class: daemon.ErrRateLimited, Message: "slow down"}, client.ErrRateLimited},
	} {
		ae := &client.APIError{Status: statusOf(tt.err), Code: daemon.CodeOf(tt.err)}
		for _, class := range classes {
			if got := errors.Is(ae, class); got != (class == tt.want) {
				t.Errorf("%s (HTTP %d, %s): errors.Is(%v) = %v", tt.err, ae.Status, ae.Code, class, got)
			}
		}
	}
}
