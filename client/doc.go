// Package client is the Go client of coffer's HTTP API (version 1, the
// types of package api): over the daemon's Unix socket (NewClient), over
// AF_VSOCK from inside a VM (NewVsockClient), with or without a bearer
// token (WithToken).
//
// It imports the standard library, package api and small pure-Go
// packages (mdlayher/vsock) only: no cgo, nothing of the daemon, so a
// program built with CGO_ENABLED=0 can use it, and so can coffer-client,
// the static CLI for guests and containers. TestNoDaemonDependencies holds
// that.
//
// Errors: an answer of 400 or above is an *APIError that matches one of
// api's error classes (api.ErrNotFound, ...) with errors.Is, the class of
// the daemon's error it came from; a daemon that cannot be reached is an
// *UnreachableError. No error carries a token, a payload or a secret's
// name.
package client
