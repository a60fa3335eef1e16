package api

import (
	"fmt"
	"math"
	"strconv"
	"time"
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
const expiryForms = "use <n><unit> with a positive whole n and unit second(s), minute(s), hour(s), day(s) or d, week(s) or w, month(s), year(s) " +
	"(e.g. 600seconds, 45minutes, 7hour, 3days, 2weeks, 6months, 7d), or a Go duration (e.g. 90m, 1h30m)"

// expirySpan is a parsed relative time: calendar months plus an exact duration.
type expirySpan struct {
	months int
	d      time.Duration
}

func (s expirySpan) from(now time.Time) time.Time {
	if s.months != 0 {
		now = now.AddDate(0, s.months, 0)
	}
	return now.Add(s.d)
}

// expiryUnits are the word units. Days and weeks are exact multiples of 24h;
// months and years are calendar units (AddDate).
var expiryUnits = map[string]struct {
	d      time.Duration
	months int
}{
	"second": {d: time.Second}, "seconds": {d: time.Second},
	"minute": {d: time.Minute}, "minutes": {d: time.Minute},
	"hour": {d: time.Hour}, "hours": {d: time.Hour},
	"day": {d: 24 * time.Hour}, "days": {d: 24 * time.Hour}, "d": {d: 24 * time.Hour},
	"week": {d: 7 * 24 * time.Hour}, "weeks": {d: 7 * 24 * time.Hour}, "w": {d: 7 * 24 * time.Hour},
	"month": {months: 1}, "months": {months: 1},
	"year": {months: 12}, "years": {months: 12},
}

type spanProblem int

const (
	spanOK spanProblem = iota
	spanSyntax
	spanNotPositive
	spanTooFar
)

// parseSpan parses "<n><unit>" or a Go duration. It never overflows: an n
// too large to represent is reported as spanTooFar.
func parseSpan(s string) (expirySpan, spanProblem) {
	if s == "" {
		return expirySpan{}, spanSyntax
	}
	if s[0] == '-' {
		// A well-formed negative span says "not positive"; junk is junk.
		if _, p := parseSpan(s[1:]); p == spanOK || p == spanTooFar {
			return expirySpan{}, spanNotPositive
		}
		return expirySpan{}, spanSyntax
	}
	if s[0] == '+' {
		return expirySpan{}, spanSyntax
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i > 0 && i < len(s) {
		if u, ok := expiryUnits[s[i:]]; ok {
			n, err := strconv.ParseUint(s[:i], 10, 64)
			switch {
			case err != nil: // only ErrRange is possible: all digits
				return expirySpan{}, spanTooFar
			case n == 0:
				return expirySpan{}, spanNotPositive
			case u.months != 0:
				// 2 years is 24 months; anything past a generous bound is
				// too far, and AddDate stays far from overflow.
				if n > 1000*12/uint64(u.months) {
					return expirySpan{}, spanTooFar
				}
				return expirySpan{months: int(n) * u.months}, spanOK
			default:
				if n > uint64(math.MaxInt64/int64(u.d)) {
					return expirySpan{}, spanTooFar
				}
				return expirySpan{d: time.Duration(n) * u.d}, spanOK
			}
		}
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return expirySpan{}, spanSyntax
	case d <= 0:
		return expirySpan{}, spanNotPositive
	}
	return expirySpan{d: d}, spanOK
}

// resolveSpan parses s and places it after now, checking (now, MaxExpiry].
func resolveSpan(s string, now time.Time) (time.Time, spanProblem) {
	sp, prob := parseSpan(s)
	if prob != spanOK {
		return time.Time{}, prob
	}
	t := sp.from(now)
	switch {
	case !t.After(now):
		return time.Time{}, spanNotPositive
	case t.After(MaxExpiry(now)):
		return time.Time{}, spanTooFar
	}
	return t, spanOK
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
	case spanSyntax:
		return time.Time{}, fmt.Errorf("expire_in %s is not a valid expiry: %s", quoteSpanInput(s), expiryForms)
	case spanNotPositive:
		return time.Time{}, fmt.Errorf("expire_in %s is not in the future: %s", quoteSpanInput(s), expiryForms)
	case spanTooFar:
		return time.Time{}, fmt.Errorf("expire_in %s is more than %d years away", quoteSpanInput(s), MaxExpiryYears)
	}
	return t, nil
}

// ParseWindow parses a expirySpan such as a rotation grace ("10m") or an
// expiring_within filter ("7d"), in the forms ParseExpireIn accepts, and
// returns it as a duration relative to now (calendar months via AddDate).
// It must be > 0 and reach no later than MaxExpiry(now); otherwise the
// error says why, naming the parameter what.
func ParseWindow(what, s string, now time.Time) (time.Duration, error) {
	t, prob := resolveSpan(s, now)
	switch prob {
	case spanSyntax:
		return 0, fmt.Errorf("%s %s is not a valid duration: %s", what, quoteSpanInput(s), expiryForms)
	case spanNotPositive:
		return 0, fmt.Errorf("%s %s must be positive: %s", what, quoteSpanInput(s), expiryForms)
	case spanTooFar:
		return 0, fmt.Errorf("%s %s is longer than %d years", what, quoteSpanInput(s), MaxExpiryYears)
	}
	return t.Sub(now), nil
}
