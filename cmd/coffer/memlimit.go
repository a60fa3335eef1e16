//go:build !nodaemon

package main

import (
	"fmt"
	"log/slog"
	"math"
	"os"
	"runtime/debug"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// defaultMemoryLimit is none. A soft limit makes the runtime collect more
// often as memory nears it, and the live heap of a daemon taking a burst
// of writes (Badger's table builds) comes close to any limit low enough to
// matter: with 192 MiB the bench's write scenarios lost a third of their
// rate and reads right after them two thirds, to collections. The warm
// footprint is bounded instead by handing memory back once a burst is over
// (internal/memtrim).
const defaultMemoryLimit = "0"

var memoryLimitFlag = &cli.StringFlag{
	Name: "memory-limit",
	Usage: "soft limit on the daemon's Go memory, as `SIZE` (e.g. 512MiB, 1GiB; 0: none): near it the runtime collects more often (CPU) and returns memory to the system. " +
		"$GOMEMLIMIT, when set, is used instead of the default",
	Value: defaultMemoryLimit, EnvVars: []string{"COFFER_MEMORY_LIMIT"},
}

// applyMemoryLimit sets the runtime's soft memory limit from
// --memory-limit. GOMEMLIMIT in the environment wins over the default (the
// runtime has already applied it), not over an explicit flag.
func applyMemoryLimit(c *cli.Context, log *slog.Logger) error {
	v := c.String(memoryLimitFlag.Name)
	if !c.IsSet(memoryLimitFlag.Name) && !fromFile[memoryLimitFlag.Name] && os.Getenv("GOMEMLIMIT") != "" {
		return nil
	}
	n, err := parseByteSize(v)
	if err != nil {
		return usagef("--memory-limit: %v", err)
	}
	if n == 0 {
		n = math.MaxInt64 // the runtime's "no limit"
	}
	debug.SetMemoryLimit(n)
	log.Debug("memory limit set", "bytes", n)
	return nil
}

// parseByteSize reads a size such as 128MiB, 1GiB, 512KiB, 4096 or 0
// (binary units; a bare number is bytes).
func parseByteSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt64/mult {
		return 0, fmt.Errorf("%q is not a size: write a whole number of bytes, KiB, MiB or GiB (e.g. 128MiB)", s)
	}
	return n * mult, nil
}
