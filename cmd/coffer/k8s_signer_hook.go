package main

// TEMPORARY hook, until the 'k8s' parent command (cmd/coffer/k8s.go) is
// merged: delete this file and its line in main.go then, and add
// k8sSignerCommands()... to that command's subcommands.
var k8sCommand = group("k8s", "Kubernetes integrations: the external service-account token signer's keys (system admins)",
	k8sSignerCommands()...)
