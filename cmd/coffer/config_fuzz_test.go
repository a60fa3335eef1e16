//go:build !nodaemon

package main

import (
	"bytes"
	"maps"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"
)

// FuzzDaemonConfig: the daemon's config file either fails with an error
// naming the file, or parses into values and VMs that, written back as
// TOML, parse to the same again.
func FuzzDaemonConfig(f *testing.F) {
	for _, s := range []string{
		"state_dir = \"/var/lib/coffer\"\nhsm_token = \"coffer\"\nadmin_group = \"wheel\"\n",
		"socket = '/run/coffer/coffer.sock'\nvsock_port = 5000\ndebug = true\n",
		"[[vm]]\nname = \"vm1\"\nuds_path = \"/run/fc/vm1.vsock\"\nvmm_user = 1000\n",
		"[[vm]]\nname = \"vm1\"\nuds_path = \"/x\"\nvmm_user = \"root\"\n[[vm]]\nname = \"vm2\"\nuds_path = \"/y\"\nvmm_user = \"0\"\n",
		"vm = [{name = \"a\", uds_path = \"/a\", vmm_user = 7}]\n",
		"[[vm]]\nname = \"vm1\"\n",
		"[[vm]]\nname = 1\nvmm_user = 0\n",
		"[[vm]]\nextra = \"x\"\nvmm_user = 0\n",
		"[[vm]]\nvmm_user = -1\n",
		"[[vm]]\nvmm_user = 4294967296\n",
		"[[vm]]\nvmm_user = \"no-such-user-here\"\n",
		"[[vm]]\nvmm_user = 1.5\n",
		"[vm]\nname = \"a\"\n",
		"vm = []\n",
		"ttl = 1.5\n",
		"when = 2024-01-01T00:00:00Z\n",
		"list = [1, 2]\n",
		"[table]\nk = \"v\"\n",
		"\"quoted key\" = \"v\"\n'a.b' = 'c'\n",
		"s = \"\"\"\nmulti\nline\"\"\"\n",
		"s = \"\\u0000\\t\\\\\"\n",
		"x = 0x10\ny = 1_000\nz = -0\n",
		"= \"v\"\n",
		"a = \"unterminated\n",
		"a = 1\na = 2\n",
	} {
		f.Add([]byte(s))
	}
	const path = "/etc/coffer/coffer.toml"
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := parseDaemonFile(path, data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if _, ok := got.values["vm"]; ok {
			t.Fatal("vm taken as a plain value")
		}
		doc := map[string]any{}
		for k, v := range got.values {
			doc[k] = v
		}
		if len(got.VMs) > 0 {
			vms := make([]map[string]any, 0, len(got.VMs))
			for _, vm := range got.VMs {
				vms = append(vms, map[string]any{"name": vm.Name, "uds_path": vm.UDSPath, "vmm_user": int64(vm.VMMUID)})
			}
			doc["vm"] = vms
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(doc); err != nil {
			t.Fatalf("cannot write %+v back: %v", got, err)
		}
		again, err := parseDaemonFile(path, buf.Bytes())
		if err != nil {
			t.Fatalf("written back as\n%s\nit does not parse: %v", buf.Bytes(), err)
		}
		if !maps.Equal(got.values, again.values) || !reflect.DeepEqual(got.VMs, again.VMs) {
			t.Fatalf("round trip changed %+v to %+v", got, again)
		}
	})
}

// FuzzProfileConfig: the client's config file either fails with an error
// naming the file, or loads into a config that `coffer profile add|use`
// saves (with saveConfig's encoder) and loads back unchanged.
func FuzzProfileConfig(f *testing.F) {
	for _, s := range []string{
		"current = \"dev\"\n[profiles.dev]\nsocket = \"/run/coffer/coffer.sock\"\ntoken_file = \"/home/u/.coffer-token\"\n",
		"[profiles.\"a b\"]\nsocket = \"/x\"\n[profiles.c]\nsocket = ''\n",
		"[profiles]\n",
		"current = \"\"\n",
		"token = \"cfs_secret\"\n",
		"[profiles.dev]\nsocket = \"/x\"\ntoken = \"cfs_secret\"\n",
		"[profiles.dev]\nsocket = 1\n",
		"profiles = 3\n",
		"current = \"\\u0000\\\\\\\"\"\n",
		"[profiles.\"\\n\"]\nsocket = \"\\u007f\"\n",
		"[profiles.dev]\nsocket = \"\"\"\nx\"\"\"\n",
		"[[profiles]]\n",
		"current = 'a'\ncurrent = 'b'\n",
		"\xff = 1\n",
	} {
		f.Add([]byte(s))
	}
	const path = "/home/u/.config/coffer/config.toml"
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := parseConfig(path, data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "config "+path+": ") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		var buf bytes.Buffer
		if err := toml.NewEncoder(&buf).Encode(cfg); err != nil {
			t.Fatalf("cannot save %+v: %v", cfg, err)
		}
		again, err := parseConfig(path, buf.Bytes())
		if err != nil {
			t.Fatalf("saved as\n%s\nit does not load: %v", buf.Bytes(), err)
		}
		if len(cfg.Profiles) == 0 {
			cfg.Profiles = nil // omitempty: an empty [profiles] is not written
		}
		if !reflect.DeepEqual(cfg, again) {
			t.Fatalf("save and load changed %+v to %+v (saved as\n%s)", cfg, again, buf.Bytes())
		}
	})
}
