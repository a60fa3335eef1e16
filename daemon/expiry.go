package daemon

import (
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// MaxExpiryYears bounds every relative expiry and window: at most this many
// calendar years after now (api.MaxExpiry).
const MaxExpiryYears = api.MaxExpiryYears

// MaxExpiry returns the latest accepted expiry for a request made at now.
func MaxExpiry(now time.Time) time.Time { return api.MaxExpiry(now) }

// ParseExpireIn turns a relative expiry into an absolute time after now,
// as api.ParseExpireIn does; its error is Invalid(CodeInvalidExpiry, ...).
func ParseExpireIn(s string, now time.Time) (time.Time, error) {
	t, err := api.ParseExpireIn(s, now)
	if err != nil {
		return time.Time{}, Invalid(CodeInvalidExpiry, "%s", err)
	}
	return t, nil
}

// ParseWindow parses a span such as a rotation grace ("10m") or an
// expiring_within filter ("7d") as api.ParseWindow does; its error is
// Invalid(CodeInvalidArgument, ...) naming the parameter what.
func ParseWindow(what, s string, now time.Time) (time.Duration, error) {
	d, err := api.ParseWindow(what, s, now)
	if err != nil {
		return 0, Invalid(CodeInvalidArgument, "%s", err)
	}
	return d, nil
}

// credentialExpiry is a new credential's expiry: expireIn from now, or the
// time expiresAt, or none. Each must be in the future and within
// MaxExpiry(now); giving both is an error.
func credentialExpiry(expireIn string, expiresAt *time.Time, now time.Time) (*time.Time, error) {
	switch {
	case expireIn != "" && expiresAt != nil:
		return nil, Invalid(CodeInvalidExpiry, "give expire_in or expires_at, not both")
	case expireIn != "":
		t, err := ParseExpireIn(expireIn, now)
		if err != nil {
			return nil, err
		}
		return utcPtr(&t), nil
	case expiresAt == nil:
		return nil, nil
	case !expiresAt.After(now):
		return nil, Invalid(CodeInvalidExpiry, "expires_at %s is not in the future", expiresAt.UTC().Format(time.RFC3339))
	case expiresAt.After(MaxExpiry(now)):
		return nil, Invalid(CodeInvalidExpiry, "expires_at %s is more than %d years away", expiresAt.UTC().Format(time.RFC3339), MaxExpiryYears)
	}
	return utcPtr(expiresAt), nil
}
