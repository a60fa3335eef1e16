package api

import "errors"

// Error classes. Every error answer is of exactly one, by its HTTP status
// (and, for 409, its code): the daemon sorts its errors into them before
// it writes them (daemon.ErrNotFound is ErrNotFound), and the client's
// *APIError matches them with errors.Is, so a program can say precise
// things without knowing the daemon.
var (
	ErrInvalidArgument = errors.New("invalid argument")
	ErrNotFound        = errors.New("not found")
	ErrAlreadyExists   = errors.New("already exists")
	ErrConflict        = errors.New("conflict")
	ErrForbidden       = errors.New("forbidden")
	ErrUnauthenticated = errors.New("unauthenticated")
	ErrUnavailable     = errors.New("unavailable")
	// ErrRateLimited: the caller failed to authenticate too often, or holds
	// too many connections or watches, and must wait (Retry-After).
	ErrRateLimited = errors.New("rate limited")
)
