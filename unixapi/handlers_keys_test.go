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

// keysBackend answers the HSM key endpoints.
type keysBackend struct {
	fakeBackend
	removeErr error
	removed   []string
	forced    []bool
}

func (k *keysBackend) HSMKeys(context.Context, daemon.Grant) (daemon.HSMKeys, error) {
	ra := time.Date(2030, 1, 1, 0, 5, 0, 0, time.UTC)
	return daemon.HSMKeys{
		KEKs: []daemon.KEKVersion{{Label: "coffer-kek-1", Version: 1, Records: 0}, {Label: "coffer-kek-2", Version: 2, Current: true, Scheme: "rsa-3072-oaep-sha256", Records: 7}},
		SigningKeys: []daemon.SigningKey{
			{Label: "coffer-sig-2", Version: 2, Kid: "k2", Current: true, Published: true, Tokens: 1},
			{Label: "coffer-sig-1", Version: 1, Kid: "k1", Published: true, Tokens: 3, RetireAfter: &ra},
		},
		Rotation: &daemon.KEKRotation{Target: "coffer-kek-2", Previous: "coffer-kek-1", State: daemon.RotationDone, Rewrapped: 7},
	}, nil
}

func (k *keysBackend) RotateKEK(context.Context, daemon.Grant) (daemon.KEKRotation, error) {
	return daemon.KEKRotation{Target: "coffer-kek-3", Previous: "coffer-kek-2", State: daemon.RotationRunning}, nil
}

func (k *keysBackend) RemoveKEK(_ context.Context, _ daemon.Grant, label string, opts daemon.RemoveKEKOptions) error {
	k.removed = append(k.removed, label)
	k.forced = append(k.forced, opts.Force)
	return k.removeErr
}

func (k *keysBackend) RotateSigningKey(context.Context, daemon.Grant) (daemon.SigningKeyRotation, error) {
	return daemon.SigningKeyRotation{Current: daemon.SigningKey{Label: "coffer-sig-3", Kid: "k3", Current: true}, Previous: daemon.SigningKey{Label: "coffer-sig-2"}}, nil
}

func TestKeysEndpoints(t *testing.T) {
	b := &keysBackend{}
	c, _ := serve(t, b)
	ctx := context.Background()
	keys, err := c.HSMKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(keys.KEKs) != 2 || keys.KEKs[1] != (api.KEKVersion{Label: "coffer-kek-2", Version: 2, Current: true, Scheme: "rsa-3072-oaep-sha256", Records: 7}) || keys.SigningKeys[1].RetireAfter == nil ||
		keys.SigningKeys[1].Tokens != 3 || keys.Rotation == nil || keys.Rotation.State != "done" {
		t.Fatalf("HSMKeys = %+v", keys)
	}
	rot, err := c.RotateKEK(ctx)
	if err != nil || rot.Target != "coffer-kek-3" || rot.State != "running" {
		t.Fatalf("RotateKEK = %+v, %v", rot, err)
	}
	status, _, hdr := raw(t, c, "POST", "/v1/hsm/kek:rotate", "")
	if status != http.StatusAccepted || hdr.Get("Location") != "/v1/hsm/keys" {
		t.Fatalf("POST /v1/hsm/kek:rotate: %d, Location %q", status, hdr.Get("Location"))
	}
	if status, eb, _ := raw(t, c, "POST", "/v1/hsm/kek:rotate", `{"x":1}`); status != http.StatusBadRequest || eb.Error != "invalid_json" {
		t.Fatalf("rotate with a body: %d %+v", status, eb)
	}
	sr, err := c.RotateSigningKey(ctx)
	if err != nil || sr.Current.Kid != "k3" || sr.Previous.Label != "coffer-sig-2" {
		t.Fatalf("RotateSigningKey = %+v, %v", sr, err)
	}
	if err := c.RemoveKEK(ctx, "coffer-kek-1", false); err != nil {
		t.Fatal(err)
	}
	b.removeErr = daemon.Conflict(daemon.CodeConflict, "KEK coffer-kek-1 still wraps 2 sealed records; rotate the KEK first")
	err = c.RemoveKEK(ctx, "coffer-kek-1", true)
	var ae *client.APIError
	if !errors.As(err, &ae) || ae.Status != http.StatusConflict || ae.Code != "conflict" || !errors.Is(err, api.ErrConflict) {
		t.Fatalf("RemoveKEK of a referenced KEK: %v", err)
	}
	if len(b.removed) != 2 || b.removed[0] != "coffer-kek-1" || b.forced[0] || !b.forced[1] {
		t.Fatalf("removed %v (forced %v)", b.removed, b.forced)
	}
	if status, eb, _ := raw(t, c, "DELETE", "/v1/hsm/keks/coffer-kek-1?force=yes", ""); status != http.StatusBadRequest || eb.Error != "invalid_argument" {
		t.Fatalf("force=yes: %d %+v", status, eb)
	}
}

func TestKeysEndpointsForbidden(t *testing.T) {
	b := &keysBackend{fakeBackend: fakeBackend{authErr: daemon.Forbidden("not allowed to manage HSM keys")}}
	c, _ := serve(t, b)
	for _, req := range []struct{ method, path, body string }{
		{"GET", "/v1/hsm/keys", ""},
		{"POST", "/v1/hsm/kek:rotate", "{not json"},
		{"DELETE", "/v1/hsm/keks/coffer-kek-1", ""},
		{"POST", "/v1/hsm/signing-key:rotate", ""},
	} {
		if status, eb, _ := raw(t, c, req.method, req.path, req.body); status != http.StatusForbidden || eb.Error != "forbidden" {
			t.Errorf("%s %s: %d %+v, want 403 forbidden", req.method, req.path, status, eb)
		}
	}
	if len(b.removed) != 0 {
		t.Fatal("the backend acted on a forbidden request")
	}
}
