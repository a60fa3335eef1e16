package unixapi

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/coffer-hsm/coffer/daemon"
)

// The error classes are the daemon's: a client error matches the same class
// with errors.Is as the server-side error it came from.
var (
	ErrInvalidArgument = daemon.ErrInvalidArgument
	ErrNotFound        = daemon.ErrNotFound
	ErrAlreadyExists   = daemon.ErrAlreadyExists
	ErrConflict        = daemon.ErrConflict
	ErrForbidden       = daemon.ErrForbidden
	ErrUnauthenticated = daemon.ErrUnauthenticated
	ErrUnavailable     = daemon.ErrUnavailable
	ErrRateLimited     = daemon.ErrRateLimited
)

var classStatus = []struct {
	class  error
	status int
}{
	{ErrInvalidArgument, http.StatusBadRequest},
	{ErrNotFound, http.StatusNotFound},
	{ErrAlreadyExists, http.StatusConflict},
	{ErrConflict, http.StatusConflict},
	{ErrForbidden, http.StatusForbidden},
	{ErrUnauthenticated, http.StatusUnauthorized},
	{ErrUnavailable, http.StatusServiceUnavailable},
	{ErrRateLimited, http.StatusTooManyRequests},
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

// APIError is an error response as the client received it.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s (HTTP %d)", e.Code, e.Status)
	}
	return e.Message
}

// Is maps the status back to the error class, so callers can write
// errors.Is(err, unixapi.ErrNotFound).
func (e *APIError) Is(target error) bool {
	if e.Status == http.StatusConflict {
		if e.Code == daemon.CodeAlreadyExists {
			return target == ErrAlreadyExists
		}
		return target == ErrConflict
	}
	if e.Status == http.StatusRequestEntityTooLarge {
		return target == ErrInvalidArgument
	}
	if e.Status == http.StatusInsufficientStorage {
		return target == ErrUnavailable
	}
	for _, c := range classStatus {
		if c.status == e.Status && c.class != ErrAlreadyExists {
			return target == c.class
		}
	}
	return false
}

// UnreachableError says the daemon could not be reached at all.
type UnreachableError struct {
	Addr string
	Err  error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the daemon at %s: is it running? (%v)", e.Addr, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }
