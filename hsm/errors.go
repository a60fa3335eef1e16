package hsm

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/miekg/pkcs11"
)

// ErrOpen is returned (wrapped) when sealed data fails authentication: wrong
// aad, tampered fields or an unknown KEK.
var ErrOpen = errors.New("sealed data cannot be opened")

// ErrUnavailable is returned (wrapped) when the HSM cannot serve a request.
var ErrUnavailable = errors.New("hsm unavailable")

// crypto11 reports a missing token with an unexported error; this is its text.
const crypto11TokenNotFound = "could not find PKCS#11 token"

// ckrPattern finds a CKR_ code name; compiled on first use, not at every
// process start.
var ckrPattern = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`CKR_[A-Z0-9_]+`) })

// ckrName names a PKCS#11 failure for an operator: the CKR_ code name when
// there is one (miekg formats pkcs11.Error as "pkcs11: 0xA0: CKR_PIN_INCORRECT"
// and crypto11 often re-wraps it with %v), otherwise the library's message.
// Errors from crypto11 and miekg never carry key material or PINs.
func ckrName(err error) string {
	if err == nil {
		return ""
	}
	if m := ckrPattern().FindString(err.Error()); m != "" {
		return m
	}
	var p pkcs11.Error
	if errors.As(err, &p) {
		return fmt.Sprintf("CKR 0x%X", uint(p))
	}
	return strings.TrimSpace(err.Error())
}

// hasCKR reports whether err carries one of the named CKR codes, either as a
// pkcs11.Error in its chain or in its text (crypto11 wraps some with %v).
func hasCKR(err error, codes ...uint) bool {
	if err == nil {
		return false
	}
	for _, c := range codes {
		if errors.Is(err, pkcs11.Error(c)) {
			return true
		}
	}
	name := ckrName(err)
	for _, c := range codes {
		if m := ckrPattern().FindString(pkcs11.Error(c).Error()); m != "" && m == name {
			return true
		}
	}
	return false
}

// panicError turns a recovered panic value into an error without formatting
// arbitrary values that might hold data.
func panicError(r any) error {
	if e, ok := r.(error); ok {
		return e
	}
	return errors.New("unexpected panic in PKCS#11 layer")
}
