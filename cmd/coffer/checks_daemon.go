//go:build !nodaemon

package main

import (
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// The checks a command makes before it asks the daemon, with the daemon's
// own code, so that a mistake is a usage error (exit 2) on the spot.
// coffer-client (checks_nodaemon.go) leaves them to the daemon.

// checkExpireIn checks an --expire-in as the daemon parses expire_in.
func checkExpireIn(s string) error {
	_, err := daemon.ParseExpireIn(s, time.Now())
	return err
}

// checkWindow checks a duration flag as the daemon parses its parameter.
func checkWindow(what, s string) error {
	_, err := daemon.ParseWindow(what, s, time.Now())
	return err
}

// checkPolicy compiles a policy's conditions with the daemon's CEL
// environment.
func checkPolicy(doc api.PolicyDocument) error { return daemon.CheckPolicy(doc) }
