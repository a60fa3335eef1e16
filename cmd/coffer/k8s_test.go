package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// TestEncryptionConfig: the printed EncryptionConfiguration is what
// kube-apiserver reads: KMS v2 provider "coffer" on the socket, then
// identity; bad flags are usage errors.
func TestEncryptionConfig(t *testing.T) {
	t.Setenv("COFFER_KMS_SOCKET", "")
	var stdout, stderr bytes.Buffer
	args := []string{"coffer", "k8s", "encryption-config", "--kms-socket", "/run/coffer/kms.sock", "--timeout", "5s", "--resource", "secrets", "--resource", "configmaps"}
	if code := run(context.Background(), args, strings.NewReader(""), &stdout, &stderr); code != exitOK {
		t.Fatalf("exit %d: %s", code, stderr.String())
	}
	var doc struct {
		APIVersion string `yaml:"apiVersion"`
		Kind       string `yaml:"kind"`
		Resources  []struct {
			Resources []string         `yaml:"resources"`
			Providers []map[string]any `yaml:"providers"`
		} `yaml:"resources"`
	}
	if err := yaml.Unmarshal(stdout.Bytes(), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.APIVersion != "apiserver.config.k8s.io/v1" || doc.Kind != "EncryptionConfiguration" || len(doc.Resources) != 1 {
		t.Fatalf("%+v", doc)
	}
	r := doc.Resources[0]
	if strings.Join(r.Resources, ",") != "secrets,configmaps" || len(r.Providers) != 2 {
		t.Fatalf("%+v", r)
	}
	kms, _ := r.Providers[0]["kms"].(map[string]any)
	if kms["apiVersion"] != "v2" || kms["name"] != "coffer" || kms["endpoint"] != "unix:///run/coffer/kms.sock" || kms["timeout"] != "5s" {
		t.Fatalf("kms provider %v", kms)
	}
	if id, ok := r.Providers[1]["identity"].(map[string]any); !ok || len(id) != 0 {
		t.Fatalf("second provider %v, want identity: {}", r.Providers[1])
	}

	for _, bad := range [][]string{
		{"--kms-socket", "kms.sock"},
		{"--timeout", "0s"},
		{"extra"},
	} {
		stdout.Reset()
		stderr.Reset()
		if code := run(context.Background(), append([]string{"coffer", "k8s", "encryption-config"}, bad...), strings.NewReader(""), &stdout, &stderr); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", bad, code, exitUsage, stderr.String())
		}
	}
}
