//go:build !nodaemon

package main

import (
	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
)

// policy check compiles a policy's conditions with the daemon's CEL
// environment; coffer-client (checks_nodaemon.go) has none.
func checkPolicy(doc api.PolicyDocument) error { return daemon.CheckPolicy(doc) }
