package daemon

import (
	"errors"
	"fmt"

	"github.com/coffer-hsm/coffer/api"
)

// Error classes. Every error the Service returns wraps exactly one of them,
// so the transport can map it to a status with errors.Is and the client can
// map the status back. They are the API's (package api), so a client's
// error matches the class of the server-side error it came from.
var (
	ErrInvalidArgument = api.ErrInvalidArgument
	ErrNotFound        = api.ErrNotFound
	ErrAlreadyExists   = api.ErrAlreadyExists
	ErrConflict        = api.ErrConflict
	ErrForbidden       = api.ErrForbidden
	ErrUnauthenticated = api.ErrUnauthenticated
	ErrUnavailable     = api.ErrUnavailable
	// ErrRateLimited: the caller failed to authenticate too often and must
	// wait (the cause is a *RetryAfterError saying how long).
	ErrRateLimited = api.ErrRateLimited
)

// Error codes: the stable machine-readable names written to the wire as
// {"error": code}. A class has a default code; some errors carry a more
// precise one.
const (
	CodeInvalidArgument    = "invalid_argument"
	CodeInvalidJSON        = "invalid_json"
	CodeInvalidName        = "invalid_name"
	CodeInvalidDisplayName = "invalid_display_name"
	CodeInvalidPayload     = "invalid_payload"
	CodeInvalidExpiry      = "invalid_expiry"
	CodeBodyTooLarge       = "request_body_too_large"
	CodeNotFound           = "not_found"
	CodeAlreadyExists      = "already_exists"
	CodeConflict           = "conflict"
	CodeVersionConflict    = "version_conflict"
	CodeSecretRevoked      = "secret_revoked"
	CodeProjectNotEmpty    = "project_not_empty"
	CodeUserNotAdmitted    = "user_not_admitted"  // the user holds no role on the project
	CodeDeliveryAmbiguous  = "delivery_ambiguous" // a name bound to the caller in several projects
	CodeForbidden          = "forbidden"
	CodeUnauthenticated    = "unauthenticated"
	CodeRateLimited        = "rate_limited"
	CodeUnavailable        = "unavailable"
	CodeHSMUnavailable     = "hsm_unavailable"
	CodeStoreUnavailable   = "store_unavailable"
	CodeStoreFull          = "store_full" // its filesystem is short of room (HTTP 507)
	CodeInternal           = "internal"
)

// Error codes of a sealed import (import.go).
const (
	CodeSealedForOtherHost    = "sealed_for_other_host"   // sealed to another host's import key
	CodeInvalidSealedSecret   = "invalid_sealed_secret"   // malformed, or does not verify
	CodeSealedSecretReplayed  = "sealed_secret_replayed"  // this file was imported before
	CodeSealedProjectMismatch = "sealed_project_mismatch" // sealed for another project
)

// Error is an error with a class, a wire code and a human message. The
// message must never contain secret material.
type Error struct {
	Class   error
	Code    string
	Message string
	Err     error // optional cause, for logs only; never written to the wire
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Message + ": " + e.Err.Error()
	}
	return e.Message
}

// Is makes errors.Is(err, ErrNotFound) and friends work.
func (e *Error) Is(target error) bool { return target == e.Class }

func (e *Error) Unwrap() error { return e.Err }

func newErr(class error, code, format string, args ...any) *Error {
	return &Error{Class: class, Code: code, Message: fmt.Sprintf(format, args...)}
}

// Invalid returns an invalid-argument error with a precise code.
func Invalid(code, format string, args ...any) error {
	return newErr(ErrInvalidArgument, code, format, args...)
}

// NotFound returns a not-found error.
func NotFound(format string, args ...any) error {
	return newErr(ErrNotFound, CodeNotFound, format, args...)
}

// Forbidden returns a forbidden error.
func Forbidden(format string, args ...any) error {
	return newErr(ErrForbidden, CodeForbidden, format, args...)
}

// Conflict returns a conflict error with a precise code.
func Conflict(code, format string, args ...any) error {
	return newErr(ErrConflict, code, format, args...)
}

// unavailable wraps an infrastructure failure; cause is kept for the log.
func unavailable(code, msg string, cause error) error {
	return &Error{Class: ErrUnavailable, Code: code, Message: msg, Err: cause}
}

// CodeOf returns the wire code of err: its own when it carries one, else the
// default code of its class, else "internal".
func CodeOf(err error) string {
	var e *Error
	if errors.As(err, &e) && e.Code != "" {
		return e.Code
	}
	for _, c := range []struct {
		class error
		code  string
	}{
		{ErrInvalidArgument, CodeInvalidArgument},
		{ErrNotFound, CodeNotFound},
		{ErrAlreadyExists, CodeAlreadyExists},
		{ErrConflict, CodeConflict},
		{ErrForbidden, CodeForbidden},
		{ErrUnauthenticated, CodeUnauthenticated},
		{ErrUnavailable, CodeUnavailable},
		{ErrRateLimited, CodeRateLimited},
	} {
		if errors.Is(err, c.class) {
			return c.code
		}
	}
	return CodeInternal
}

// MessageOf returns the human message of err that is safe to send to the
// caller: the Message of an *Error, or a generic text for anything else
// (whose details stay in the log).
func MessageOf(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Message
	}
	return "internal error"
}
