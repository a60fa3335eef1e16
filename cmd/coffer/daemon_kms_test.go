//go:build !nodaemon

package main

import "testing"

// TestConfigAllowUIDs: kms_allow_uids and k8s_signer_allow_uids are lists
// of numbers in coffer.toml, handed to the repeatable flags as one
// value a line, each set on its own; anything else in a list is an error.
func TestConfigAllowUIDs(t *testing.T) {
	f, err := parseDaemonFile("coffer.toml", []byte("kms_allow_uids = [1001, 1002]\nk8s_signer_allow_uids = [7]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if f.values["kms_allow_uids"] != "1001\n1002" || !f.lists["kms_allow_uids"] || f.values["k8s_signer_allow_uids"] != "7" {
		t.Fatalf("values %q", f.values)
	}
	if _, err := parseDaemonFile("coffer.toml", []byte(`kms_allow_uids = ["root"]`)); err == nil {
		t.Fatal("a list of strings was taken")
	}
}
