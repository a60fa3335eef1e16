package unixapi

import (
	"errors"
	"net/http"

	"github.com/coffer-hsm/coffer/daemon"
)

var classStatus = []struct {
	class  error
	status int
}{
	{daemon.ErrInvalidArgument, http.StatusBadRequest},
	{daemon.ErrNotFound, http.StatusNotFound},
	{daemon.ErrAlreadyExists, http.StatusConflict},
	{daemon.ErrConflict, http.StatusConflict},
	{daemon.ErrForbidden, http.StatusForbidden},
	{daemon.ErrUnauthenticated, http.StatusUnauthorized},
	{daemon.ErrUnavailable, http.StatusServiceUnavailable},
	{daemon.ErrRateLimited, http.StatusTooManyRequests},
}

// statusOf maps an error to its HTTP status: the one mapper from error class
// to status. Two codes refine their class's status: a body too large is
// 413, a store whose filesystem is full 507 (both stay in their class).
func statusOf(err error) int {
	switch daemon.CodeOf(err) {
	case daemon.CodeBodyTooLarge:
		return http.StatusRequestEntityTooLarge
	case daemon.CodeStoreFull:
		return http.StatusInsufficientStorage
	}
	for _, c := range classStatus {
		if errors.Is(err, c.class) {
			return c.status
		}
	}
	return http.StatusInternalServerError
}
