package unixapi

import (
	"regexp"
	"strings"
	"testing"
)

// nameSpec is the API's name rule (DESIGN §4) as an expression.
var nameSpec = regexp.MustCompile(`^[a-z0-9]([a-z0-9._-]{0,62}[a-z0-9])?$`)

// FuzzCheckHybridVMs: hybrid vsock has no in-band handshake to parse (the
// guest connects to the host, and the VMM connects to "<uds_path>_<port>"
// with nothing sent first), so its hostile input is the VM list of the
// config file. A list that passes must give every VM a valid name and a
// distinct socket path that fits in sun_path; one that fails says why in a
// "hybrid vsock: " error.
func FuzzCheckHybridVMs(f *testing.F) {
	f.Add("vm1", "/run/fc/vm1.vsock", "vm2", "/run/fc/vm2.vsock", uint32(hybridPort))
	f.Add("vm1", "/run/fc/v.sock", "vm1", "/run/fc/w.sock", uint32(1))
	f.Add("a", "/x", "b", "/x", uint32(52))
	f.Add("a", "/x_5", "b", "/x", uint32(55))
	f.Add("A", "/x", "b", "/y", uint32(1))
	f.Add("a", "", "b", "/y", uint32(1))
	f.Add("a", "/x\x00y", "b", "/y", uint32(1))
	f.Add("a", "/"+strings.Repeat("p", 100), "b", "/y", uint32(4294967295))
	f.Add("a", "/"+strings.Repeat("p", 95), "b", "/y", uint32(1))
	f.Fuzz(func(t *testing.T, n1, p1, n2, p2 string, port uint32) {
		vms := []HybridVM{{Name: n1, UDSPath: p1}, {Name: n2, UDSPath: p2}}
		err := checkHybridVMs(vms, port)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "hybrid vsock: ") {
				t.Fatalf("error %q", err)
			}
			return
		}
		a, b := HybridSocketPath(vms[0], port), HybridSocketPath(vms[1], port)
		for _, vm := range vms {
			p := HybridSocketPath(vm, port)
			if !nameSpec.MatchString(vm.Name) || vm.UDSPath == "" || len(p) > maxSunPath || strings.ContainsRune(p, 0) {
				t.Fatalf("accepted %+v (socket %q)", vm, p)
			}
		}
		if n1 == n2 || a == b {
			t.Fatalf("accepted %+v with a shared name or socket", vms)
		}
	})
}
