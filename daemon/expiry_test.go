package daemon

import (
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// expiryNow is a Jan 31 so that calendar months show AddDate's
// normalisation (Jan 31 + 1 month = Mar 3 in 2025).
var expiryNow = time.Date(2025, time.January, 31, 10, 30, 0, 0, time.UTC)

func TestParseExpireIn(t *testing.T) {
	now := expiryNow
	day := 24 * time.Hour
	tests := []struct {
		in   string
		want time.Time
	}{
		{"600seconds", now.Add(600 * time.Second)},
		{"1second", now.Add(time.Second)},
		{"1seconds", now.Add(time.Second)},
		{"45minutes", now.Add(45 * time.Minute)},
		{"1minute", now.Add(time.Minute)},
		{"7hour", now.Add(7 * time.Hour)},
		{"7hours", now.Add(7 * time.Hour)},
		{"3days", now.Add(3 * day)},
		{"1day", now.Add(day)},
		{"7d", now.Add(7 * day)},
		{"007d", now.Add(7 * day)},
		{"2weeks", now.Add(14 * day)},
		{"1week", now.Add(7 * day)},
		{"2w", now.Add(14 * day)},
		{"104w", now.Add(104 * 7 * day)},
		{"6months", now.AddDate(0, 6, 0)},
		{"1month", now.AddDate(0, 1, 0)},
		{"24months", now.AddDate(0, 24, 0)},
		{"1year", now.AddDate(1, 0, 0)},
		{"2years", now.AddDate(2, 0, 0)},
		{"90m", now.Add(90 * time.Minute)},
		{"1h30m", now.Add(90 * time.Minute)},
		{"1.5h", now.Add(90 * time.Minute)},
		{"600s", now.Add(600 * time.Second)},
		{"300ms", now.Add(300 * time.Millisecond)},
		{"1ns", now.Add(1)},
		{"17520h", now.Add(17520 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseExpireIn(tt.in, now)
			if err != nil {
				t.Fatalf("ParseExpireIn(%q): %v", tt.in, err)
			}
			if !got.Equal(tt.want) {
				t.Fatalf("ParseExpireIn(%q) = %v, want %v", tt.in, got, tt.want)
			}
		})
	}
}

func TestParseExpireInRejects(t *testing.T) {
	now := expiryNow
	tests := []struct {
		in   string
		why  string // a word the message must contain
		note string
	}{
		{"", "600seconds", "empty"},
		{"0s", "future", "zero Go duration"},
		{"0", "future", "bare zero (a valid Go duration)"},
		{"0d", "future", "zero days"},
		{"0seconds", "future", "zero seconds"},
		{"000months", "future", "zero months"},
		{"-5m", "future", "negative Go duration"},
		{"-3days", "future", "negative word form"},
		{"-1h-1m", "600seconds", "junk after a sign"},
		{"3", "600seconds", "no unit"},
		{"days", "600seconds", "no number"},
		{"d", "600seconds", "short unit only"},
		{"3 days", "600seconds", "space"},
		{" 3days", "600seconds", "leading space"},
		{"3days ", "600seconds", "trailing space"},
		{"3days\n", "600seconds", "trailing newline"},
		{"3dayz", "600seconds", "misspelt unit"},
		{"3Days", "600seconds", "capitalised unit"},
		{"3DAYS", "600seconds", "upper-case unit"},
		{"3y", "600seconds", "y is not a unit"},
		{"3mo", "600seconds", "mo is not a unit"},
		{"3dd", "600seconds", "doubled unit"},
		{"1w2d", "600seconds", "combined word units"},
		{"1d12h", "600seconds", "combined word and Go units"},
		{"3.5d", "600seconds", "fractional days"},
		{"+3d", "600seconds", "plus sign"},
		{"+5m", "600seconds", "plus sign on a Go duration"},
		{"٣d", "600seconds", "non-ASCII digit"},
		{"1e3s", "600seconds", "exponent"},
		{"0x10s", "600seconds", "hex"},
		{"25months", "2 years", "over two years in months"},
		{"3years", "2 years", "over two years"},
		{"731d", "2 years", "over two years in days"},
		{"105w", "2 years", "over two years in weeks"},
		{"17545h", "2 years", "over two years as a Go duration"},
		{"99999999999999999999d", "2 years", "n overflows uint64"},
		{"9223372036854775807seconds", "2 years", "n*unit overflows"},
		{"18446744073709551615months", "2 years", "n overflows int"},
		{"99999999999h", "600seconds", "Go duration overflow"},
	}
	for _, tt := range tests {
		t.Run(tt.note, func(t *testing.T) {
			got, err := ParseExpireIn(tt.in, now)
			if err == nil {
				t.Fatalf("ParseExpireIn(%q) = %v, want an error", tt.in, got)
			}
			if !got.IsZero() {
				t.Errorf("rejected input returned %v", got)
			}
			if code := CodeOf(err); code != CodeInvalidExpiry || !errors.Is(err, ErrInvalidArgument) {
				t.Errorf("ParseExpireIn(%q) error code %q (%v), want %s", tt.in, code, err, CodeInvalidExpiry)
			}
			if msg := MessageOf(err); !strings.Contains(msg, tt.why) || !strings.Contains(msg, "expire_in") {
				t.Errorf("ParseExpireIn(%q) message %q does not mention %q", tt.in, msg, tt.why)
			}
		})
	}
}

func TestParseExpireInCalendarMonths(t *testing.T) {
	tests := []struct {
		now  time.Time
		in   string
		want time.Time
	}{
		{expiryNow, "1month", expiryNow.AddDate(0, 1, 0)},
		{time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC), "1year", time.Date(2024, 2, 29, 0, 0, 0, 0, time.UTC).AddDate(1, 0, 0)},
		{time.Date(2024, 8, 31, 12, 0, 0, 0, time.UTC), "6months", time.Date(2024, 8, 31, 12, 0, 0, 0, time.UTC).AddDate(0, 6, 0)},
		{time.Date(2025, 3, 15, 8, 0, 0, 0, time.FixedZone("X", 5*3600+1800)), "1month", time.Date(2025, 4, 15, 8, 0, 0, 0, time.FixedZone("X", 5*3600+1800))},
	}
	for _, tt := range tests {
		got, err := ParseExpireIn(tt.in, tt.now)
		if err != nil {
			t.Fatalf("ParseExpireIn(%q, %v): %v", tt.in, tt.now, err)
		}
		if !got.Equal(tt.want) {
			t.Errorf("ParseExpireIn(%q, %v) = %v, want %v", tt.in, tt.now, got, tt.want)
		}
	}
	// The documented example: AddDate normalises Feb 31 to Mar 3 (2025).
	got, _ := ParseExpireIn("1month", expiryNow)
	if want := time.Date(2025, 3, 3, 10, 30, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("Jan 31 + 1month = %v, want %v", got, want)
	}
}

func TestParseExpireInTwoYearBoundary(t *testing.T) {
	nows := []time.Time{
		expiryNow,
		time.Date(2024, 2, 29, 23, 59, 59, 0, time.UTC), // from a leap day
		time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC),     // across a leap day
		time.Date(2025, 6, 1, 12, 0, 0, 123456789, time.FixedZone("Y", -7*3600)),
	}
	for _, now := range nows {
		limit := MaxExpiry(now)
		if !limit.Equal(now.AddDate(2, 0, 0)) {
			t.Fatalf("MaxExpiry(%v) = %v", now, limit)
		}
		secs := int64(limit.Sub(now) / time.Second)
		if limit.Sub(now)%time.Second != 0 {
			t.Fatalf("two years from %v is not whole seconds", now)
		}
		for _, in := range []string{"2years", "24months", fmt.Sprintf("%ds", secs), fmt.Sprintf("%dseconds", secs), fmt.Sprintf("%dh", secs/3600)} {
			got, err := ParseExpireIn(in, now)
			if err != nil {
				t.Errorf("ParseExpireIn(%q, %v): %v; exactly two years must be accepted", in, now, err)
			} else if !got.Equal(limit) {
				t.Errorf("ParseExpireIn(%q, %v) = %v, want %v", in, now, got, limit)
			}
		}
		for _, in := range []string{fmt.Sprintf("%ds", secs+1), fmt.Sprintf("%dseconds", secs+1), fmt.Sprintf("%dns", int64(limit.Sub(now))+1)} {
			if got, err := ParseExpireIn(in, now); err == nil || CodeOf(err) != CodeInvalidExpiry {
				t.Errorf("ParseExpireIn(%q, %v) = %v, %v; two years + a bit must be rejected", in, now, got, err)
			}
		}
	}
}

func TestParseExpireInLongInputIsCut(t *testing.T) {
	in := strings.Repeat("9", 5000) + "x"
	_, err := ParseExpireIn(in, expiryNow)
	if err == nil || len(MessageOf(err)) > 500 {
		t.Fatalf("error for a 5000-char input: %v", err)
	}
}

func TestParseWindow(t *testing.T) {
	now := expiryNow
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"10m", 10 * time.Minute},
		{"30seconds", 30 * time.Second},
		{"7d", 7 * 24 * time.Hour},
		{"2w", 14 * 24 * time.Hour},
		{"1h30m", 90 * time.Minute},
		{"1month", now.AddDate(0, 1, 0).Sub(now)},
		{"2years", now.AddDate(2, 0, 0).Sub(now)},
	}
	for _, tt := range tests {
		got, err := ParseWindow("grace", tt.in, now)
		if err != nil {
			t.Errorf("ParseWindow(%q): %v", tt.in, err)
		} else if got != tt.want {
			t.Errorf("ParseWindow(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
	if got, _ := ParseWindow("x", "1month", now); got != 31*24*time.Hour {
		t.Errorf("1month from Jan 31 = %v, want 31 days (to Mar 3)", got)
	}
	for _, in := range []string{"", "0s", "0d", "-10m", "10", "10 m", "3dayz", "+1m", "3years", "25months", "99999999999999999999d"} {
		got, err := ParseWindow("expiring_within", in, now)
		if err == nil {
			t.Errorf("ParseWindow(%q) = %v, want an error", in, got)
			continue
		}
		if CodeOf(err) != CodeInvalidArgument || !errors.Is(err, ErrInvalidArgument) || got != 0 {
			t.Errorf("ParseWindow(%q) = %v, %v (code %s), want 0 and %s", in, got, err, CodeOf(err), CodeInvalidArgument)
		}
		if !strings.HasPrefix(MessageOf(err), "expiring_within ") {
			t.Errorf("ParseWindow(%q) message %q does not name the parameter", in, MessageOf(err))
		}
	}
}

func FuzzParseExpireIn(f *testing.F) {
	for _, s := range []string{
		"600seconds", "45minutes", "7hour", "3days", "2weeks", "6months", "7d", "2w", "90m", "1h30m",
		"24months", "2years", "", "0s", "-5m", "3", "days", "3 days", "3dayz", "+3d", "25months",
		"3years", "1e3s", "99999999999999999999d", "9223372036854775807seconds", "1.5h", "-0d",
	} {
		f.Add(s)
	}
	now := expiryNow
	limit := MaxExpiry(now)
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseExpireIn(s, now)
		d, werr := ParseWindow("w", s, now)
		if (err == nil) != (werr == nil) {
			t.Fatalf("ParseExpireIn(%q) err %v but ParseWindow err %v", s, err, werr)
		}
		if err != nil {
			if CodeOf(err) != CodeInvalidExpiry || CodeOf(werr) != CodeInvalidArgument {
				t.Fatalf("ParseExpireIn(%q): codes %s / %s", s, CodeOf(err), CodeOf(werr))
			}
			return
		}
		if !got.After(now) || got.After(limit) {
			t.Fatalf("ParseExpireIn(%q) = %v, outside (%v, %v]", s, got, now, limit)
		}
		if d <= 0 || d != got.Sub(now) {
			t.Fatalf("ParseWindow(%q) = %v, want %v", s, d, got.Sub(now))
		}
	})
}

// TestCredentialExpiry: a credential expires expire_in from now, or at
// expires_at (the application-credential form, issue 14), not both.
func TestCredentialExpiry(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	at := func(d time.Duration) *time.Time { x := now.Add(d); return &x }
	zone := time.FixedZone("CET", 3600)
	inZone := time.Date(2026, 3, 2, 13, 0, 0, 500, zone)
	tests := []struct {
		name     string
		expireIn string
		at       *time.Time
		want     *time.Time
		wantErr  string
	}{
		{name: "none"},
		{name: "expire_in", expireIn: "3days", want: at(72 * time.Hour)},
		{name: "expires_at", at: at(time.Hour), want: at(time.Hour)},
		{name: "expires_at in a zone, to UTC seconds", at: &inZone, want: at(24 * time.Hour)},
		{name: "both", expireIn: "1h", at: at(time.Hour), wantErr: "give expire_in or expires_at, not both"},
		{name: "past", at: at(-time.Second), wantErr: "expires_at 2026-03-01T11:59:59Z is not in the future"},
		{name: "now", at: at(0), wantErr: "expires_at 2026-03-01T12:00:00Z is not in the future"},
		{name: "too far", at: at(3 * 365 * 24 * time.Hour), wantErr: "expires_at 2029-02-28T12:00:00Z is more than 2 years away"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := credentialExpiry(tt.expireIn, tt.at, now)
			if tt.wantErr != "" {
				if CodeOf(err) != CodeInvalidExpiry || MessageOf(err) != tt.wantErr {
					t.Fatalf("err = %v, want invalid_expiry %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || (got == nil) != (tt.want == nil) || (got != nil && (!got.Equal(*tt.want) || got.Location() != time.UTC)) {
				t.Fatalf("got %v, %v; want %v", got, err, tt.want)
			}
		})
	}
}
