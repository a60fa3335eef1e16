package unixapi

import (
	"errors"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// TestClientReadsTheClassTheServerWrote: an error of each class, written
// as statusOf and daemon.CodeOf write it, is read back by the client as
// that class (the daemon's classes are api's), and as no other.
func TestClientReadsTheClassTheServerWrote(t *testing.T) {
	classes := []error{api.ErrInvalidArgument, api.ErrNotFound, api.ErrAlreadyExists, api.ErrConflict,
		api.ErrForbidden, api.ErrUnauthenticated, api.ErrUnavailable, api.ErrRateLimited}
	for _, tt := range []struct {
		err  error
		want error
	}{
		{daemon.Invalid(daemon.CodeInvalidName, "bad name"), api.ErrInvalidArgument},
		{daemon.Invalid(daemon.CodeBodyTooLarge, "too large"), api.ErrInvalidArgument},
		{daemon.NotFound("no such secret"), api.ErrNotFound},
		{&daemon.Error{Class: daemon.ErrAlreadyExists, Message: "exists"}, api.ErrAlreadyExists},
		{daemon.Conflict(daemon.CodeVersionConflict, "version"), api.ErrConflict},
		{daemon.Forbidden("no"), api.ErrForbidden},
		{&daemon.Error{Class: daemon.ErrUnauthenticated, Message: "who"}, api.ErrUnauthenticated},
		{&daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeHSMUnavailable, Message: "hsm"}, api.ErrUnavailable},
		{&daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeStoreFull, Message: "full"}, api.ErrUnavailable},
		{&daemon.Error{Class: daemon.ErrRateLimited, Message: "slow down"}, api.ErrRateLimited},
	} {
		ae := &client.APIError{Status: statusOf(tt.err), Code: daemon.CodeOf(tt.err)}
		for _, class := range classes {
			if got := errors.Is(ae, class); got != (class == tt.want) || !errors.Is(tt.err, tt.want) {
				t.Errorf("%s (HTTP %d, %s): errors.Is(%v) = %v", tt.err, ae.Status, ae.Code, class, got)
			}
		}
	}
}
