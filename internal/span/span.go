// Package span reads the spans of time coffer's users write: "7d",
// "2weeks", "6months", "90m". One syntax for every expiry, window and
// duration flag, so that what works for --expire-in works for
// --expiry-warning too. Go's time.ParseDuration has no days, weeks or
// calendar months, hence this small parser.
package span

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Forms names the accepted spellings in error messages.
const Forms = "use <n><unit> with a whole n and unit second(s), minute(s), hour(s), day(s) or d, week(s) or w, month(s), year(s) " +
	"(e.g. 600seconds, 45minutes, 7hour, 3days, 2weeks, 6months, 7d), or a Go duration (e.g. 90m, 1h30m)"

// A Span is a relative time: calendar months plus an exact duration.
type Span struct {
	Months int
	D      time.Duration
}

// From places s after t.
func (s Span) From(t time.Time) time.Time {
	if s.Months != 0 {
		t = t.AddDate(0, s.Months, 0)
	}
	return t.Add(s.D)
}

// Problem is what is wrong with a span's text.
type Problem int

const (
	OK          Problem = iota
	Syntax              // not a span
	NotPositive         // zero or negative
	TooFar              // a number too large to represent
)

// units are the word units. Days and weeks are exact multiples of 24h;
// months and years are calendar units (AddDate).
var units = map[string]struct {
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

// Parse parses "<n><unit>" or a Go duration; the span must be positive.
// It never overflows: an n too large to represent is TooFar.
func Parse(s string) (Span, Problem) {
	if s == "" {
		return Span{}, Syntax
	}
	if s[0] == '-' {
		// A well-formed negative span says "not positive"; junk is junk.
		if _, p := Parse(s[1:]); p == OK || p == TooFar {
			return Span{}, NotPositive
		}
		return Span{}, Syntax
	}
	if s[0] == '+' {
		return Span{}, Syntax
	}
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	if i > 0 && i < len(s) {
		if u, ok := units[s[i:]]; ok {
			n, err := strconv.ParseUint(s[:i], 10, 64)
			switch {
			case err != nil: // only ErrRange is possible: all digits
				return Span{}, TooFar
			case n == 0:
				return Span{}, NotPositive
			case u.months != 0:
				// Anything past a generous bound is too far, and AddDate
				// stays far from overflow.
				if n > 1000*12/uint64(u.months) {
					return Span{}, TooFar
				}
				return Span{Months: int(n) * u.months}, OK
			default:
				if n > uint64(math.MaxInt64/int64(u.d)) {
					return Span{}, TooFar
				}
				return Span{D: time.Duration(n) * u.d}, OK
			}
		}
	}
	d, err := time.ParseDuration(s)
	switch {
	case err != nil:
		return Span{}, Syntax
	case d <= 0:
		return Span{}, NotPositive
	}
	return Span{D: d}, OK
}

// Duration parses a flag's duration: a span of Parse's forms of a fixed
// length (no months or years), or zero ("0", "0s") where a flag means
// "off" by it.
func Duration(s string) (time.Duration, error) {
	sp, p := Parse(s)
	switch p {
	case OK:
		if sp.Months != 0 {
			return 0, fmt.Errorf("%q: months and years have no fixed length here: use days or weeks", s)
		}
		return sp.D, nil
	case NotPositive:
		if s[0] == '-' {
			return 0, fmt.Errorf("%q is negative", s)
		}
		return 0, nil // "0", "0s", "0d"
	case TooFar:
		return 0, fmt.Errorf("%q is too long", s)
	}
	return 0, fmt.Errorf("%q is not a duration: %s", s, Forms)
}
