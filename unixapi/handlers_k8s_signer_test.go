package unixapi

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

// k8sSignerBackend answers the Kubernetes signing key endpoints.
type k8sSignerBackend struct {
	fakeBackend
	keys    []daemon.K8sSAKey
	rot     daemon.K8sSAKeyRotation
	rotErr  error
	rotated int
}

func (k *k8sSignerBackend) K8sSAKeys(context.Context, daemon.Grant) ([]daemon.K8sSAKey, error) {
	return k.keys, nil
}

func (k *k8sSignerBackend) RotateK8sSAKey(context.Context, daemon.Grant) (daemon.K8sSAKeyRotation, error) {
	k.rotated++
	return k.rot, k.rotErr
}

func TestK8sSignerEndpoints(t *testing.T) {
	b := &k8sSignerBackend{}
	c, _ := serve(t, b)
	ctx := context.Background()
	// None yet: an empty list, not null.
	if status, _, _ := raw(t, c, "GET", "/v1/k8s/sa-keys", ""); status != http.StatusOK {
		t.Fatalf("GET /v1/k8s/sa-keys: %d", status)
	}
	if k, err := c.K8sSAKeys(ctx); err != nil || k.Keys == nil || len(k.Keys) != 0 {
		t.Fatalf("K8sSAKeys = %+v, %v", k, err)
	}
	ra := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	b.keys = []daemon.K8sSAKey{
		{Label: "coffer-k8s-sa-2", Version: 2, Kid: "k2", Alg: "ES256", Current: true, Published: true, Signed: 7},
		{Label: "coffer-k8s-sa-1", Version: 1, Kid: "k1", Alg: "ES256", Published: true, RetireAfter: &ra},
	}
	k, err := c.K8sSAKeys(ctx)
	if err != nil || len(k.Keys) != 2 || k.Keys[0] != (api.K8sSAKey{Label: "coffer-k8s-sa-2", Version: 2, Kid: "k2", Alg: "ES256", Current: true, Published: true, Signed: 7}) ||
		!k.Keys[1].RetireAfter.Equal(ra) {
		t.Fatalf("K8sSAKeys = %+v, %v", k, err)
	}
	// The first key: no previous.
	b.rot = daemon.K8sSAKeyRotation{Current: daemon.K8sSAKey{Label: "coffer-k8s-sa-1", Kid: "k1", Current: true}}
	r, err := c.RotateK8sSAKey(ctx)
	if err != nil || r.Current.Kid != "k1" || r.Previous != nil {
		t.Fatalf("RotateK8sSAKey = %+v, %v", r, err)
	}
	b.rot.Previous = &daemon.K8sSAKey{Label: "coffer-k8s-sa-0", Kid: "k0", Published: true, RetireAfter: &ra}
	if r, err = c.RotateK8sSAKey(ctx); err != nil || r.Previous == nil || r.Previous.Kid != "k0" || !r.Previous.RetireAfter.Equal(ra) {
		t.Fatalf("RotateK8sSAKey = %+v, %v", r, err)
	}
	if status, eb, _ := raw(t, c, "POST", "/v1/k8s/sa-key:rotate", `{"x":1}`); status != http.StatusBadRequest || eb.Error != "invalid_json" {
		t.Fatalf("rotate with a body: %d %+v", status, eb)
	}
	b.rotErr = &daemon.Error{Class: daemon.ErrUnavailable, Code: daemon.CodeHSMUnavailable, Message: "the HSM is unavailable", Err: errors.New("CKR_DEVICE_REMOVED")}
	_, err = c.RotateK8sSAKey(ctx)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusServiceUnavailable || ae.Code != daemon.CodeHSMUnavailable {
		t.Fatalf("RotateK8sSAKey with the HSM gone: %v", err)
	}
}

func TestK8sSignerEndpointsForbidden(t *testing.T) {
	b := &k8sSignerBackend{fakeBackend: fakeBackend{authErr: daemon.Forbidden("not allowed to manage HSM keys")}}
	c, _ := serve(t, b)
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/v1/k8s/sa-keys", ""},
		{"POST", "/v1/k8s/sa-key:rotate", "{not json"},
	} {
		if status, eb, _ := raw(t, c, req.method, req.path, req.body); status != http.StatusForbidden || eb.Error != "forbidden" {
			t.Errorf("%s %s: %d %+v, want 403 forbidden", req.method, req.path, status, eb)
		}
	}
	if b.rotated != 0 {
		t.Fatal("the backend rotated on a forbidden request")
	}
}
