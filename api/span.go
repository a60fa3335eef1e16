package api

import (
	"fmt"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/internal/span"
)

// Spans: the relative times of the API (expire_in, a rotation's grace,
// expiring_within), parsed the same way by the daemon and, before it
// asks, by the CLI.

// MaxExpiryYears bounds every relative expiry and window: at most this many
// calendar years after now (now.AddDate(MaxExpiryYears, 0, 0)).
const MaxExpiryYears = 2

// MaxExpiry returns the latest accepted expiry for a request made at now.
func MaxExpiry(now time.Time) time.Time { return now.AddDate(MaxExpiryYears, 0, 0) }

// expiryForms names the accepted spellings in error messages.
const expiryForms = span.Forms

// resolveSpan parses s and places it after now, checking (now, MaxExpiry].
func resolveSpan(s string, now time.Time) (time.Time, span.Problem) {
	sp, prob := span.Parse(s)
	if prob != span.OK {
		return time.Time{}, prob
	}
	t := sp.From(now)
	switch {
	case !t.After(now):
		return time.Time{}, span.NotPositive
	case t.After(MaxExpiry(now)):
		return time.Time{}, span.TooFar
	}
	return t, span.OK
}

// quoteSpanInput quotes user input for an error message, cut to a sane length.
func quoteSpanInput(s string) string {
	const limit = 40
	if len(s) > limit {
		return strconv.Quote(s[:limit]) + "…"
	}
	return strconv.Quote(s)
}

// ParseExpireIn turns a relative expiry into an absolute time after now.
//
// Accepted: "<n><unit>" where n is a positive whole number (digits only, no
// sign) and unit is second(s), minute(s), hour(s), day(s) or d, week(s) or
// w, month(s) or year(s) — e.g. "600seconds", "45minutes", "7hour",
// "3days", "2weeks", "6months", "7d", "2w" — or any positive Go duration
// ("90m", "1h30m"). Days and weeks are exact 24h multiples; months and
// years are calendar units (now.AddDate). The result must be after now and
// no later than MaxExpiry(now); otherwise the error says why (the daemon
// answers it as 400 invalid_expiry).
func ParseExpireIn(s string, now time.Time) (time.Time, error) {
	t, prob := resolveSpan(s, now)
	switch prob {
	case span.Syntax:
		return time.Time{}, fmt.Errorf("expire_in %s is not a valid expiry: %s", quoteSpanInput(s), expiryForms)
	case span.NotPositive:
		return time.Time{}, fmt.Errorf("expire_in %s is not in the future: %s", quoteSpanInput(s), expiryForms)
	case span.TooFar:
		return time.Time{}, fmt.Errorf("expire_in %s is more than %d years away", quoteSpanInput(s), MaxExpiryYears)
	}
	return t, nil
}

// ParseWindow parses a span such as a rotation grace ("10m") or an
// expiring_within filter ("7d"), in the forms ParseExpireIn accepts, and
// returns it as a duration relative to now (calendar months via AddDate).
// It must be > 0 and reach no later than MaxExpiry(now); otherwise the
// error says why, naming the parameter what.
func ParseWindow(what, s string, now time.Time) (time.Duration, error) {
	t, prob := resolveSpan(s, now)
	switch prob {
	case span.Syntax:
		return 0, fmt.Errorf("%s %s is not a valid duration: %s", what, quoteSpanInput(s), expiryForms)
	case span.NotPositive:
		return 0, fmt.Errorf("%s %s must be positive: %s", what, quoteSpanInput(s), expiryForms)
	case span.TooFar:
		return 0, fmt.Errorf("%s %s is longer than %d years", what, quoteSpanInput(s), MaxExpiryYears)
	}
	return t.Sub(now), nil
}
