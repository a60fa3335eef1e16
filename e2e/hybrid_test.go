package e2e

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/client"
)

// TestHybridVsockDelivery plays a Firecracker VMM: the guest's connection
// to the host's vsock port arrives on <uds_path>_<port>, and the socket it
// arrives on names the VM. A user bound to that VM name receives its
// payload; other VMs get 404. SIGHUP adds a VM from the config file.
func TestHybridVsockDelivery(t *testing.T) {
	t.Parallel()
	dir := workDir(t)
	const port = 5107
	cfg := filepath.Join(dir, "coffer.toml")
	vm := func(name string) string {
		return fmt.Sprintf("[[vm]]\nname = %q\nuds_path = %q\nvmm_user = %d\n", name, filepath.Join(dir, name+".vsock"), os.Getuid())
	}
	if err := os.WriteFile(cfg, []byte(vm("vm-web")+vm("vm-db")), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "--config", cfg, "--vsock-port", fmt.Sprint(port))
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "web", "kind": "workload", "vm_names": []string{"vm-web"}}, http.StatusCreated, nil)
	d.setRole(t, "default", "web", "reader")
	sec := d.createSecret(t, "default", "web db password", []byte("hybrid-payload"), nil)
	d.mustAPI(t, "POST", "/v1/secrets/"+sec.ID+"/bindings", map[string]any{"user": "web", "name": "dbpass"}, http.StatusCreated, nil)

	guest := func(name string) *client.Client {
		return client.NewClient(filepath.Join(dir, fmt.Sprintf("%s.vsock_%d", name, port)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got, err := guest("vm-web").Deliver(ctx, "dbpass")
	if err != nil || string(got) != "hybrid-payload" {
		t.Fatalf("vm-web delivery: %q %v", got, err)
	}
	// The other VM is nobody: 404 for the payload, 403 for the API.
	var ae *client.APIError
	if _, err := guest("vm-db").Deliver(ctx, "dbpass"); !errors.As(err, &ae) || ae.Status != http.StatusNotFound {
		t.Fatalf("vm-db delivery: %v, want 404", err)
	}
	if _, err := guest("vm-db").ListSecrets(ctx, "default", client.PageQuery{}); !errors.As(err, &ae) || ae.Status != http.StatusForbidden {
		t.Fatalf("vm-db list: %v, want 403", err)
	}
	// A VM added to the config file is served after SIGHUP.
	if err := os.WriteFile(cfg, []byte(vm("vm-web")+vm("vm-db")+vm("vm-new")), 0o600); err != nil {
		t.Fatal(err)
	}
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "new", "kind": "workload", "vm_names": []string{"vm-new"}}, http.StatusCreated, nil)
	d.setRole(t, "default", "new", "reader")
	d.mustAPI(t, "POST", "/v1/secrets/"+sec.ID+"/bindings", map[string]any{"user": "new", "name": "dbpass"}, http.StatusCreated, nil)
	if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	var last error
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		got, last = guest("vm-new").Deliver(ctx, "dbpass")
		if last == nil {
			break
		}
	}
	if last != nil || string(got) != "hybrid-payload" {
		t.Fatalf("vm-new after SIGHUP: %q %v\n%s", got, last, d.stderr)
	}
}
