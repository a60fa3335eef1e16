//go:build nodaemon

package main

import "github.com/coffer-hsm/coffer/api"

// coffer-client has no CEL environment to compile a policy with: only the
// daemon's does.
func checkPolicy(api.PolicyDocument) error {
	return usagef("'coffer policy check' compiles with the daemon's CEL environment, which is %s", notInThisBuildWhy)
}
