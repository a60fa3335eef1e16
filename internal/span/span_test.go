package span

import (
	"strings"
	"testing"
	"time"
)

func TestDuration(t *testing.T) {
	for _, tt := range []struct {
		in   string
		want time.Duration
		err  string
	}{
		{"5m", 5 * time.Minute, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"7d", 7 * 24 * time.Hour, ""},
		{"2weeks", 14 * 24 * time.Hour, ""},
		{"600seconds", 10 * time.Minute, ""},
		{"0", 0, ""},
		{"0s", 0, ""},
		{"0d", 0, ""},
		{"-5m", 0, "negative"},
		{"-0d", 0, "not a duration"},
		{"1month", 0, "no fixed length"},
		{"2years", 0, "no fixed length"},
		{"99999999999999999999d", 0, "too long"},
		{"3 days", 0, "not a duration"},
		{"", 0, "not a duration"},
		{"5", 0, "not a duration"},
		{"+5m", 0, "not a duration"},
	} {
		got, err := Duration(tt.in)
		if tt.err == "" && (err != nil || got != tt.want) {
			t.Errorf("Duration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
		if tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)) {
			t.Errorf("Duration(%q) = %v, %v; want an error saying %q", tt.in, got, err, tt.err)
		}
	}
}

// FuzzDuration: any input is a duration >= 0 or an error, never a panic,
// and the forms Go knows mean what Go says.
func FuzzDuration(f *testing.F) {
	for _, s := range []string{"5m", "7d", "2weeks", "0", "-1h", "1month", "18446744073709551616d", "1h30m"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Duration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("Duration(%q) = %v, negative", s, d)
		}
		if g, gerr := time.ParseDuration(s); gerr == nil && g >= 0 && g != d {
			t.Fatalf("Duration(%q) = %v, Go says %v", s, d, g)
		}
	})
}
