//go:build nodaemon

package main

import "github.com/coffer-hsm/coffer/api"

// coffer-client has no daemon code to check with: the daemon checks
// expire_in and the windows (a mistake is its 400, exit 1), and only the
// daemon's CEL environment compiles a policy.

func checkExpireIn(string) error       { return nil }
func checkWindow(string, string) error { return nil }

func checkPolicy(api.PolicyDocument) error {
	return usagef("'coffer policy check' compiles with the daemon's CEL environment, which is %s", notInThisBuildWhy)
}
