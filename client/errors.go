package client

import (
	"errors"
	"fmt"
	"net/http"
)

// Error classes: every *APIError matches exactly one of them with
// errors.Is, chosen by its HTTP status (and, for 409, its code). They are
// the classes the daemon's errors are sorted into before they are written
// (a test in unixapi holds the two mappings to each other), so a program
// can say precise things without knowing the daemon.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
	ErrAlreadyExists   = errors.New("already exists")
	ErrConflict        = errors.New("conflict")
	ErrForbidden       = errors.New("forbidden")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrUnavailable     = errors.New("unavailable")
	ErrRateLimited     = errors.New("rate limited")
)

// codeAlreadyExists is the code that sets ErrAlreadyExists apart from
// ErrConflict: both are 409.
const codeAlreadyExists = "already_exists"

var statusClass = map[int]error{
	http.StatusBadRequest:            ErrInvalidArgument,
	http.StatusRequestEntityTooLarge: ErrInvalidArgument, // request_body_too_large
	http.StatusNotFound:              ErrNotFound,
	http.StatusForbidden:             ErrForbidden,
	http.StatusUnauthorized:          ErrUnauthenticated,
	http.StatusServiceUnavailable:    ErrUnavailable,
	http.StatusInsufficientStorage:   ErrUnavailable, // store_full
	http.StatusTooManyRequests:       ErrRateLimited,
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
// errors.Is(err, client.ErrNotFound).
func (e *APIError) Is(target error) bool {
	if e.Status == http.StatusConflict {
		if e.Code == codeAlreadyExists {
			return target == ErrAlreadyExists
		}
		return target == ErrConflict
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
