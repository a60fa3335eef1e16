package hsm

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/miekg/pkcs11"

	"github.com/coffer-hsm/coffer/internal/atomicfile"
)

// ReadPIN reads a PIN file, trimming trailing whitespace. A missing,
// unreadable or empty file is an error naming the path, never the content;
// so is a file that other users may read (mode o+r): a PIN there is no
// secret, whether it came from --hsm-pin-file or a pkcs11: URI's
// pin-source; nor one that other users may write (o+w). (Group read is
// fine: /etc/coffer/hsm-pin root:coffer 0640.)
func ReadPIN(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", pinFileError(path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", pinFileError(path, err)
	}
	if fi.Mode().IsRegular() && fi.Mode().Perm()&0o004 != 0 {
		return "", fmt.Errorf("HSM PIN file %s is readable by every user (mode %04o): chmod o-rwx %s", path, fi.Mode().Perm(), path)
	}
	if fi.Mode().IsRegular() && fi.Mode().Perm()&0o002 != 0 {
		// Anyone could put another PIN there, and an HSM that counts
		// failed logins would lock the token at the next start.
		return "", fmt.Errorf("HSM PIN file %s is writable by every user (mode %04o): chmod o-rwx %s", path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return "", pinFileError(path, err)
	}
	pin := strings.TrimRight(string(b), " \t\r\n")
	clear(b)
	if pin == "" {
		return "", fmt.Errorf("HSM PIN file %s is empty", path)
	}
	return pin, nil
}

func pinFileError(path string, err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		err = pe.Err
	}
	return fmt.Errorf("read HSM PIN file %s: %w", path, err)
}

// devConf is the SoftHSM config this process's module was initialised with
// by PrepareDevToken, while some *HSM kept the module loaded. Guarded by moduleMu.
var devConf string

// PrepareDevToken makes a self-contained SoftHSM setup under dir and
// initialises token tokenLabel in it if it does not exist yet:
//
//	dir/softhsm2.conf   tokendir = dir/tokens, file backend, log level ERROR
//	dir/tokens/         token store (0700)
//	dir/hsm-pin         user PIN (0600, random on first use)
//	dir/hsm-so-pin      SO PIN (0600, random on first use)
//
// It sets SOFTHSM2_CONF for this process. SoftHSM reads the file when the
// module is initialised, so one process should use one dir.
//
// The directories and files are written crash-safely (fsynced, renamed or
// linked into place, directory fsynced): a crash or power loss never leaves
// an empty or torn PIN file next to a token initialised with that PIN.
func PrepareDevToken(ctx context.Context, dir, modulePath, tokenLabel string) (cfg Config, err error) {
	defer func() {
		if r := recover(); r != nil {
			cfg, err = Config{}, fmt.Errorf("prepare dev token %s: %v", tokenLabel, panicError(r))
		}
	}()
	if modulePath == "" {
		modulePath = DefaultModulePath
	}
	if tokenLabel == "" || len(tokenLabel) > maxTokenLabelLen {
		return Config{}, fmt.Errorf("dev token label %q must be 1 to %d bytes", tokenLabel, maxTokenLabelLen)
	}
	if err := ctx.Err(); err != nil {
		return Config{}, err
	}
	if err := checkModuleFile(modulePath); err != nil {
		return Config{}, err
	}
	dir, err = filepath.Abs(dir)
	if err != nil {
		return Config{}, fmt.Errorf("dev token dir: %w", err)
	}
	tokens := filepath.Join(dir, "tokens")
	for _, d := range []string{dir, tokens} {
		if err := atomicfile.MkdirAll(d, 0o700); err != nil {
			return Config{}, fmt.Errorf("create dev token dir: %w", err)
		}
	}
	confPath := filepath.Join(dir, "softhsm2.conf")
	conf := fmt.Sprintf("# written by coffer: development SoftHSM token store\n"+
		"directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n", tokens)
	if old, err := os.ReadFile(confPath); err != nil || string(old) != conf {
		if err := atomicfile.Write(confPath, []byte(conf), 0o600); err != nil {
			return Config{}, fmt.Errorf("write %s: %w", confPath, err)
		}
	}
	pin, err := devPIN(filepath.Join(dir, "hsm-pin"))
	if err != nil {
		return Config{}, err
	}
	soPIN, err := devPIN(filepath.Join(dir, "hsm-so-pin"))
	if err != nil {
		return Config{}, err
	}

	moduleMu.Lock()
	defer moduleMu.Unlock()
	prevConf, hadConf := os.LookupEnv("SOFTHSM2_CONF")
	if err := os.Setenv("SOFTHSM2_CONF", confPath); err != nil {
		return Config{}, fmt.Errorf("set SOFTHSM2_CONF: %w", err)
	}
	if err := initDevToken(ctx, modulePath, confPath, tokenLabel, soPIN, pin); err != nil {
		// Leave the environment as it was, so a later module load still
		// finds the config that worked before.
		if hadConf {
			_ = os.Setenv("SOFTHSM2_CONF", prevConf)
		} else {
			_ = os.Unsetenv("SOFTHSM2_CONF")
		}
		return Config{}, err
	}
	return Config{ModulePath: modulePath, TokenLabel: tokenLabel, PIN: pin}, nil
}

// devPIN reads the PIN in path, creating it with 128 random bits (hex) first
// if the file does not exist. The file appears whole or not at all, and of
// two processes creating it at once both end up with the one that won.
func devPIN(path string) (string, error) {
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		b := make([]byte, 16)
		if _, err := rand.Read(b); err != nil {
			return "", fmt.Errorf("generate dev PIN: %w", err)
		}
		pin := make([]byte, hex.EncodedLen(len(b))+1)
		hex.Encode(pin, b)
		pin[len(pin)-1] = '\n'
		err := atomicfile.Create(path, pin, 0o600)
		clear(b)
		clear(pin)
		if err != nil && !errors.Is(err, fs.ErrExist) {
			return "", fmt.Errorf("write dev PIN file %s: %w", path, err)
		}
	}
	return ReadPIN(path)
}

// initDevToken initialises tokenLabel through a raw miekg handle. Called
// with moduleMu held, so no crypto11 Configure/Close runs meanwhile.
func initDevToken(ctx context.Context, modulePath, confPath, tokenLabel, soPIN, pin string) error {
	p := pkcs11.New(modulePath)
	if p == nil {
		return fmt.Errorf("cannot load PKCS#11 module %s: not a loadable PKCS#11 library", modulePath)
	}
	defer p.Destroy()
	fail := func(what string, err error) error {
		return fmt.Errorf("prepare dev token %s (module %s): %s: %s", tokenLabel, modulePath, what, ckrName(err))
	}
	err := p.Initialize()
	switch {
	case err == nil:
		// We own this initialisation: finalise so crypto11 starts fresh
		// and SoftHSM re-reads SOFTHSM2_CONF.
		defer func() { _ = p.Finalize() }()
		devConf = ""
	case hasCKR(err, pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED):
		// An open *HSM holds the module; SoftHSM keeps the config it read
		// then. Only the same dir can work.
		if devConf != "" && devConf != confPath {
			return fmt.Errorf("prepare dev token %s: module %s is already loaded with %s; use one dev token dir per process", tokenLabel, modulePath, devConf)
		}
	default:
		return fail("C_Initialize", err)
	}
	if devConf == "" {
		// Remember which config the module ends up running with.
		defer func() { devConf = confPath }()
	}

	slot, info, found, err := findSlot(p, tokenLabel)
	if err != nil {
		return fail("list slots", err)
	}
	if !found {
		if err := ctx.Err(); err != nil {
			return err
		}
		free, ok, err := freeSlot(p)
		if err != nil {
			return fail("list slots", err)
		}
		if !ok {
			return fmt.Errorf("prepare dev token %s (module %s): no free slot", tokenLabel, modulePath)
		}
		if err := p.InitToken(free, soPIN, tokenLabel); err != nil {
			return fail("C_InitToken", err)
		}
		// SoftHSM renumbers the slot once it holds a token: find it again.
		if slot, info, found, err = findSlot(p, tokenLabel); err != nil {
			return fail("list slots", err)
		}
		if !found {
			return fmt.Errorf("prepare dev token %s (module %s): token not found after C_InitToken", tokenLabel, modulePath)
		}
	}
	if info.Flags&pkcs11.CKF_USER_PIN_INITIALIZED != 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s, err := p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return fail("C_OpenSession", err)
	}
	defer func() { _ = p.CloseSession(s) }()
	if err := p.Login(s, pkcs11.CKU_SO, soPIN); err != nil {
		return fail("log in as SO", err)
	}
	defer func() { _ = p.Logout(s) }()
	if err := p.InitPIN(s, pin); err != nil {
		return fail("C_InitPIN", err)
	}
	return nil
}

// findSlot finds the initialised token labelled label.
func findSlot(p *pkcs11.Ctx, label string) (uint, pkcs11.TokenInfo, bool, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, pkcs11.TokenInfo{}, false, err
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return 0, pkcs11.TokenInfo{}, false, err
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0 && strings.TrimRight(ti.Label, " ") == label {
			return s, ti, true, nil
		}
	}
	return 0, pkcs11.TokenInfo{}, false, nil
}

// freeSlot finds a slot whose token is not initialised yet.
func freeSlot(p *pkcs11.Ctx) (uint, bool, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, false, err
	}
	for _, s := range slots {
		ti, err := p.GetTokenInfo(s)
		if err != nil {
			return 0, false, err
		}
		if ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED == 0 {
			return s, true, nil
		}
	}
	return 0, false, nil
}
