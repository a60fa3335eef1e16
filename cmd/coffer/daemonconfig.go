//go:build !nodaemon

package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/urfave/cli/v2"
)

// daemonFile is the daemon's config file: a flat table whose keys are the
// daemon's flag names in snake_case (state_dir, hsm_token, ...), plus
// socket, and [[vm]] tables for hybrid-vsock guests. Flags and COFFER_*
// environment variables override it.
type daemonFile struct {
	values map[string]string
	// lists are the keys given as lists of numbers: their values hold one
	// element a line, each set on the (repeatable) flag on its own.
	lists map[string]bool
	VMs   []vmConfig
}

// vmConfig names a Firecracker / Cloud Hypervisor guest by the host side
// of its hybrid vsock.
type vmConfig struct {
	Name    string `toml:"name"`
	UDSPath string `toml:"uds_path"`
	// VMMUID is the uid (number or user name) the VMM runs as: only it may
	// connect to the VM's socket.
	VMMUID uint32
}

// loadDaemonFile reads path. A missing default file is no error; a
// missing file that was asked for is.
func loadDaemonFile(path string, explicit bool) (daemonFile, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && !explicit {
		return daemonFile{values: map[string]string{}}, nil
	}
	if err != nil {
		return daemonFile{values: map[string]string{}}, fmt.Errorf("config %s: %w", path, err)
	}
	return parseDaemonFile(path, data)
}

// parseDaemonFile parses the contents of the config file path.
func parseDaemonFile(path string, data []byte) (daemonFile, error) {
	out := daemonFile{values: map[string]string{}}
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return out, fmt.Errorf("config %s: %w", path, err)
	}
	for key, v := range raw {
		if key == "vm" {
			vms, ok := v.([]map[string]any)
			if !ok {
				return out, fmt.Errorf("config %s: vm must be [[vm]] tables with name and uds_path", path)
			}
			for i, m := range vms {
				var vm vmConfig
				haveUID := false
				for k, x := range m {
					if k == "vmm_user" {
						uid, err := lookupUID(x)
						if err != nil {
							return out, fmt.Errorf("config %s: vm[%d].vmm_user: %w", path, i, err)
						}
						vm.VMMUID, haveUID = uid, true
						continue
					}
					s, ok := x.(string)
					switch {
					case !ok:
						return out, fmt.Errorf("config %s: vm[%d].%s must be a string", path, i, k)
					case k == "name":
						vm.Name = s
					case k == "uds_path":
						vm.UDSPath = s
					default:
						return out, fmt.Errorf("config %s: vm[%d] has unknown key %q", path, i, k)
					}
				}
				if !haveUID {
					return out, fmt.Errorf("config %s: vm[%d] needs vmm_user: the user (name or uid) its VMM runs as, the only peer allowed on its socket", path, i)
				}
				out.VMs = append(out.VMs, vm)
			}
			continue
		}
		switch x := v.(type) {
		case string:
			out.values[key] = x
		case int64:
			out.values[key] = fmt.Sprint(x)
		case bool:
			out.values[key] = fmt.Sprint(x)
		case time.Duration:
			out.values[key] = x.String()
		case []any: // a list of numbers (kms_allow_uids = [1001, 1002])
			var parts []string
			for _, e := range x {
				n, ok := e.(int64)
				if !ok {
					return out, fmt.Errorf("config %s: %s must be a list of numbers", path, key)
				}
				parts = append(parts, fmt.Sprint(n))
			}
			out.values[key] = strings.Join(parts, "\n")
			if out.lists == nil {
				out.lists = map[string]bool{}
			}
			out.lists[key] = true
		default:
			return out, fmt.Errorf("config %s: %s must be a string, number or boolean", path, key)
		}
	}
	return out, nil
}

// fromFile are the daemon flags whose values came from the config file (so
// a reload may change them; the command line and environment win for good).
var fromFile = map[string]bool{}

// apply sets every flag of c that the command line and environment left
// unset from the file. Unknown keys are errors, so a typo is not silently
// ignored.
func (f daemonFile) apply(c *cli.Context, path string) error {
	known := map[string]bool{}
	for _, fl := range c.Command.Flags {
		for _, n := range fl.Names() {
			known[n] = true
		}
	}
	keys := make([]string, 0, len(f.values))
	for k := range f.values {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, key := range keys {
		name := strings.ReplaceAll(key, "_", "-")
		switch {
		case strings.Contains(key, "-"):
			return fmt.Errorf("config %s: key %q: write keys in snake_case (%s)", path, key, strings.ReplaceAll(key, "-", "_"))
		case name == "socket" || name == "dev" || name == "config":
			continue // read by the caller, or not settable from the file
		case !known[name]:
			return fmt.Errorf("config %s: unknown key %q", path, key)
		case c.IsSet(name):
			continue
		}
		vals := []string{f.values[key]}
		if f.lists[key] {
			vals = strings.Split(f.values[key], "\n")
		}
		for _, v := range vals {
			if err := c.Set(name, v); err != nil {
				return fmt.Errorf("config %s: %s: %w", path, key, err)
			}
		}
		fromFile[name] = true
	}
	return nil
}

// daemonConfigPath returns the config file to read and whether it was asked for.
func daemonConfigPath(c *cli.Context) (string, bool) {
	if c.IsSet("config") {
		return c.String("config"), true
	}
	if c.Bool("dev") {
		return "", false
	}
	if _, err := os.Stat(defaultConfigFile); err == nil {
		return defaultConfigFile, false
	}
	return "", false
}

// lookupUID turns a TOML user name or uid into a uid.
func lookupUID(v any) (uint32, error) {
	switch x := v.(type) {
	case int64:
		if x < 0 || x > 1<<32-1 {
			return 0, fmt.Errorf("uid %d out of range", x)
		}
		return uint32(x), nil
	case string:
		if n, err := strconv.ParseUint(x, 10, 32); err == nil {
			return uint32(n), nil
		}
		u, err := user.Lookup(x)
		if err != nil {
			return 0, err
		}
		n, err := strconv.ParseUint(u.Uid, 10, 32)
		if err != nil {
			return 0, fmt.Errorf("user %s has uid %q", x, u.Uid)
		}
		return uint32(n), nil
	}
	return 0, errors.New("must be a user name or a uid")
}
