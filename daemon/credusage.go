package daemon

import (
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// restartCount starts rec's authentication count again for the token a
// rotation issues: max_authn is what each issued token may do, so a used-up
// one-time credential rotated is usable once more. During a grace the old
// token's authentications count against the same new budget; an exhausted
// credential's old token gets no grace at all (it could not be in use, and
// must not come back with the new count). It returns the grace to give the
// old token.
func restartCount(tx *kv.Txn, rec *credentialRecord, grace time.Duration, c *change) (time.Duration, error) {
	if err := withUse(tx, rec); err != nil {
		return 0, err
	}
	if rec.AuthnCount == 0 {
		return grace, nil
	}
	if rec.MaxAuthn > 0 && rec.AuthnCount >= rec.MaxAuthn {
		grace = 0
	}
	c.set("previous_authn_count", strconv.Itoa(rec.AuthnCount))
	rec.AuthnCount = 0
	return grace, tx.Put(tableCredentialUse, rec.ID, credentialUse{LastUsedAt: rec.LastUsedAt})
}
