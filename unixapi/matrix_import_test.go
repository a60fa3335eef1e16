package unixapi

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hostseal"
)

// sealed returns a fresh sealed file for project, sealed to the daemon's
// import key, as the JSON body of an import.
func (f *matrixEnv) sealed(t *testing.T, project string) string {
	t.Helper()
	k, err := f.svc.ImportKey(f.ctx, f.root(t, daemon.ActReadImportKey, daemon.Resource{}))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := hostseal.ParsePublicKey([]byte(k.PublicKeyPEM))
	if err != nil {
		t.Fatal(err)
	}
	file, err := hostseal.Seal(pub, project, "matrix import", hostseal.Contents{Payload: []byte("p")}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(file)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// importedOnce returns a sealed file for p1 that was imported already.
func importedOnce() func(*testing.T, *matrixEnv) matrixReq {
	var body string
	return func(t *testing.T, f *matrixEnv) matrixReq {
		if body == "" {
			body = f.sealed(t, "p1")
			var file hostseal.File
			if err := json.Unmarshal([]byte(body), &file); err != nil {
				t.Fatal(err)
			}
			if _, err := f.svc.ImportSecret(f.ctx, f.root(t, daemon.ActManageProject, daemon.Resource{Project: "p1"}), &file); err != nil {
				t.Fatal(err)
			}
		}
		return reqPOST("/v1/projects/p1/secrets:import", body)
	}
}
