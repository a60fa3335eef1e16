package client

import (
	"fmt"
	"net/http"

	"github.com/coffer-hsm/coffer/api"
)

// codeAlreadyExists is the code that sets ErrAlreadyExists apart from
// ErrConflict: both are 409.
const codeAlreadyExists = "already_exists"

// statusClass: the API's error class (api.ErrNotFound, ...) of an answer's
// status, but for 409 (api.ErrAlreadyExists or api.ErrConflict, by the code).
var statusClass = map[int]error{
	http.StatusBadRequest:            api.ErrInvalidArgument,
	http.StatusRequestEntityTooLarge: api.ErrInvalidArgument, // request_body_too_large
	http.StatusNotFound:              api.ErrNotFound,
	http.StatusForbidden:             api.ErrForbidden,
	http.StatusUnauthorized:          api.ErrUnauthenticated,
	http.StatusServiceUnavailable:    api.ErrUnavailable,
	http.StatusInsufficientStorage:   api.ErrUnavailable, // store_full
	http.StatusTooManyRequests:       api.ErrRateLimited,
}

// APIError is an error response as the client received it: the HTTP
// status and the body's {"error": Code, "message": Message}.
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
// errors.Is(err, api.ErrNotFound).
func (e *APIError) Is(target error) bool {
	if e.Status == http.StatusConflict {
		if e.Code == codeAlreadyExists {
			return target == api.ErrAlreadyExists
		}
		return target == api.ErrConflict
	}
	class, ok := statusClass[e.Status]
	return ok && target == class
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
