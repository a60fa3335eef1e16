package p11uri

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
)

// ModuleConfigDirs are where ResolveModule looks for p11-kit module
// configs, most important first: the administrator's, then the packages'.
// (A user's ~/.config/pkcs11/modules is not read: coffer is a system
// daemon.)
var ModuleConfigDirs = []string{"/etc/pkcs11/modules", "/usr/share/p11-kit/modules"}

// ModuleDirs are where a relative "module:" of a p11-kit config is
// looked up, as p11-kit's compiled-in module path does on Debian (the
// multiarch directory) and Fedora.
var ModuleDirs = moduleDirs()

func moduleDirs() []string {
	triplet := map[string]string{
		"amd64": "x86_64-linux-gnu", "arm64": "aarch64-linux-gnu", "386": "i386-linux-gnu",
		"arm": "arm-linux-gnueabihf", "ppc64le": "powerpc64le-linux-gnu", "s390x": "s390x-linux-gnu",
		"riscv64": "riscv64-linux-gnu",
	}[runtime.GOARCH]
	var dirs []string
	if triplet != "" {
		dirs = append(dirs, "/usr/lib/"+triplet+"/pkcs11")
	}
	return append(dirs, "/usr/lib64/pkcs11", "/usr/lib/pkcs11")
}

// ResolveModule finds the module p11-kit knows as name: the "module:"
// line of NAME.module in ModuleConfigDirs (the first dir that has the file
// wins), an absolute path or a file name in ModuleDirs. This is how
// p11-kit names modules (p11-kit list-modules shows the names), so
// module-name=softhsm2 means what it means to p11-kit, OpenSSL's pkcs11
// provider and GnuTLS.
func ResolveModule(name string) (string, error) {
	for _, dir := range ModuleConfigDirs {
		conf := filepath.Join(dir, name+".module")
		f, err := os.Open(conf)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return "", fmt.Errorf("module-name %s: %w", name, err)
		}
		module, err := moduleLine(f)
		f.Close()
		if err != nil {
			return "", fmt.Errorf("module-name %s: %s: %w", name, conf, err)
		}
		if filepath.IsAbs(module) {
			return module, nil
		}
		for _, d := range ModuleDirs {
			p := filepath.Join(d, module)
			if _, err := os.Stat(p); err == nil {
				return p, nil
			}
		}
		return "", fmt.Errorf("module-name %s: %s names module %s, which is in none of %s", name, conf, module, strings.Join(ModuleDirs, ", "))
	}
	return "", fmt.Errorf("module-name %s: no p11-kit module of that name (no %s.module in %s); give the module's file with module-path=", name, name, strings.Join(ModuleConfigDirs, " or "))
}

// moduleLine returns the value of the "module:" line of a p11-kit config.
func moduleLine(f *os.File) (string, error) {
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if ok && strings.TrimSpace(k) == "module" {
			if v = strings.TrimSpace(v); v != "" {
				return v, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", errors.New(`no "module:" line`)
}
