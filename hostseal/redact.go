package hostseal

import (
	"fmt"
	"log/slog"
	"strconv"
)

// Format makes every fmt verb print String (fmt would print the payload's
// bytes for %d or %x, which do not call String).
func (c Contents) Format(f fmt.State, verb rune) {
	s := c.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// LogValue logs String (slog's JSON handler would encode the payload).
func (c Contents) LogValue() slog.Value { return slog.StringValue(c.String()) }
