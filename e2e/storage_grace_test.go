package e2e

import (
	"net/http"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// TestRotationGraceIsBounded rotates each kind of credential again and
// again with a grace: only the newest secret and the one before it (in
// its grace) work, a rotation during a grace ends the older grace at
// once, and a rotation costs the same after 150 rotations as after 5
// (it used to rewrite every earlier token).
func TestRotationGraceIsBounded(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, workDir(t), "--auth-fail-burst", "0")
	d.newUser(t, "grace")
	d.setRole(t, "default", "grace", "reader")
	for _, rc := range rotationCases {
		t.Run(rc.typ, func(t *testing.T) {
			c := d.newCred(t, "default", map[string]any{"type": rc.typ, "user": "grace"})
			secrets := []string{secretOf(c)}
			rotate := func() time.Duration {
				var r api.Credential
				start := time.Now()
				d.mustAPI(t, "POST", "/v1/credentials/"+c.ID+"/rotate", map[string]any{"grace": "1h"}, http.StatusOK, &r)
				took := time.Since(start)
				secrets = append(secrets, secretOf(r))
				return took
			}
			for range 3 {
				rotate()
			}
			for i, s := range secrets {
				want := i >= len(secrets)-2
				if got := rc.use(t, d, c, s); got != want {
					t.Errorf("%s: secret #%d of %d works %v, want %v (only the newest and the one in its grace)", rc.typ, i+1, len(secrets), got, want)
				}
			}
			if rc.typ != "auth-token" {
				return // the cost is the same for every kind: measure one
			}
			var early, late time.Duration
			for i := range 150 {
				took := rotate()
				switch {
				case i < 20:
					early += took
				case i >= 130:
					late += took
				}
			}
			if late > 3*early+20*time.Millisecond {
				t.Errorf("20 rotations took %v after 130 rotations with grace, %v at the start: the cost grows with history", late, early)
			}
			t.Logf("20 rotations with grace: %v at the start, %v after 130 more", early, late)
		})
	}
}
