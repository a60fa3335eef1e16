package main

import (
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/internal/span"
)

// durationFlag is a flag that takes a duration in coffer's one syntax
// (internal/span: 90m, 1h30m, 7d, 2weeks), the syntax of every expiry and
// window too; cli.DurationFlag would take Go's only, without days.
func durationFlag(f cli.StringFlag, value time.Duration) *cli.StringFlag {
	f.Value = formatDuration(value)
	return &f
}

// flagDuration reads a durationFlag; a value it cannot read is a usage
// error naming the flag.
func flagDuration(c *cli.Context, name string) (time.Duration, error) {
	d, err := span.Duration(c.String(name))
	if err != nil {
		return 0, usagef("--%s %v", name, err)
	}
	return d, nil
}

// formatDuration writes d the way a user would: 7d, 5m, 1h30m, 0.
func formatDuration(d time.Duration) string {
	const day = 24 * time.Hour
	switch {
	case d == 0:
		return "0"
	case d%day == 0:
		return strconv.FormatInt(int64(d/day), 10) + "d"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
