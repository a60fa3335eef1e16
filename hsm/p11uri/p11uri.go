// Package p11uri parses the RFC 7512 "pkcs11:" URIs with which an operator
// names coffer's token, module and PIN:
//
//	pkcs11:token=coffer;serial=1a2b3c4d?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/coffer/hsm-pin
//
// Hand-written on purpose. The one Go library for these URIs,
// github.com/stefanberger/go-pkcs11uri, keeps the attributes in private
// maps with no way to list them, so a misspelt or unsupported attribute
// (pin-sorce=, object=) could not be refused and would be silently
// dropped; its GetPIN reads any file with no check of its mode and keeps
// the trailing newline; and its module-name lookup matches substrings of
// file names rather than p11-kit's module names. The grammar itself is a
// few dozen lines.
//
// What coffer accepts, and why:
//   - path attributes token, serial, manufacturer, model and slot-id
//     select the token; every other path attribute is refused: object,
//     id and type name keys, which coffer chooses itself, and ignoring an
//     attribute that narrows the match could select a token the operator
//     meant to exclude;
//   - query attributes module-path (absolute), module-name, pin-source
//     (file: only) and pin-value (parsed so it can be refused by name;
//     see PINValue); any other query attribute, including RFC 7512's
//     vendor x- attributes, is refused: coffer has no vendor extensions,
//     and a typo must not silently drop the PIN source or the module;
//   - values are percent-decoded (RFC 3986 %XX); an attribute given
//     twice is an error.
//
// Errors never quote the value of pin-value.
package p11uri

import (
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
)

// URI is a parsed pkcs11: URI. Empty strings and a nil SlotID are
// attributes the URI does not give.
type URI struct {
	Token        string // CK_TOKEN_INFO label
	Serial       string // CK_TOKEN_INFO serialNumber
	Manufacturer string // CK_TOKEN_INFO manufacturerID
	Model        string // CK_TOKEN_INFO model
	SlotID       *uint  // CK_SLOT_ID

	ModulePath string // absolute path of the PKCS#11 module
	ModuleName string // p11-kit module name (see ResolveModule)
	PINSource  string // absolute path of the PIN file, from pin-source
	// PINValue is the PIN given in the URI itself. coffer refuses it
	// (the URI is on command lines and in logs); it is parsed only to say
	// so by name. Never logged or put in an error.
	PINValue string `json:"-"`
}

// pathAttrs and queryAttrs are the attributes Parse accepts.
var (
	pathAttrs  = []string{"token", "serial", "manufacturer", "model", "slot-id"}
	queryAttrs = []string{"module-path", "module-name", "pin-source", "pin-value"}
)

const scheme = "pkcs11:"

// Parse parses s. The scheme is case-insensitive (RFC 3986), attribute
// names are not (RFC 7512).
func Parse(s string) (*URI, error) {
	u, err := parse(s)
	if err != nil && strings.Contains(strings.ToLower(s), "pin-value") {
		// A malformed part could be a piece of the PIN (a & or ; inside
		// it): name nothing.
		return nil, errors.New("PKCS#11 URI: malformed; the details are withheld because it holds a pin-value (coffer takes pin-source=file:... instead)")
	}
	return u, err
}

func parse(s string) (*URI, error) {
	if len(s) < len(scheme) || !strings.EqualFold(s[:len(scheme)], scheme) {
		return nil, errors.New(`not a PKCS#11 URI: it must start with "pkcs11:"`)
	}
	rest := s[len(scheme):]
	path, query, hasQuery := strings.Cut(rest, "?")
	if strings.Contains(path, "#") || strings.Contains(query, "#") {
		return nil, errors.New("PKCS#11 URI: a fragment (#) is not allowed; write # in a value as %23")
	}
	u := &URI{}
	seen := map[string]bool{}
	if path != "" {
		for _, part := range strings.Split(path, ";") {
			if err := u.set(part, "path", pathAttrs, seen); err != nil {
				return nil, err
			}
		}
	}
	if hasQuery && query != "" {
		for _, part := range strings.Split(query, "&") {
			if err := u.set(part, "query", queryAttrs, seen); err != nil {
				return nil, err
			}
		}
	}
	if u.PINSource != "" && u.PINValue != "" {
		return nil, errors.New("PKCS#11 URI: pin-source and pin-value exclude each other")
	}
	if u.ModulePath != "" && u.ModuleName != "" {
		return nil, errors.New("PKCS#11 URI: module-path and module-name exclude each other")
	}
	return u, nil
}

// set parses one name=value of the given part (path or query).
func (u *URI) set(part, where string, allowed []string, seen map[string]bool) error {
	name, raw, ok := strings.Cut(part, "=")
	switch {
	case part == "":
		return fmt.Errorf("PKCS#11 URI: empty %s attribute (a stray %s)", where, map[string]string{"path": ";", "query": "&"}[where])
	case !ok:
		return fmt.Errorf("PKCS#11 URI: %s attribute %q has no =value", where, clip(part))
	case !validName(name):
		return fmt.Errorf("PKCS#11 URI: %q is not an attribute name", clip(name))
	}
	if !contains(allowed, name) {
		other := pathAttrs
		if where == "path" {
			other = queryAttrs
		}
		if contains(other, name) {
			return fmt.Errorf("PKCS#11 URI: %s is a %s attribute; it belongs %s", name, opposite(where), map[string]string{"path": "before the ?", "query": "after the ?"}[opposite(where)])
		}
		return fmt.Errorf("PKCS#11 URI: unsupported %s attribute %s (coffer takes %s)", where, name, strings.Join(allowed, ", "))
	}
	if seen[name] {
		return fmt.Errorf("PKCS#11 URI: attribute %s is given twice", name)
	}
	seen[name] = true
	v, err := url.PathUnescape(raw)
	if err != nil {
		return fmt.Errorf("PKCS#11 URI: %s has a malformed percent-encoding: %q", name, clip(raw))
	}
	if v == "" && name != "serial" && name != "manufacturer" && name != "model" && name != "token" {
		return fmt.Errorf("PKCS#11 URI: %s is empty", name)
	}
	switch name {
	case "token":
		u.Token = v
	case "serial":
		u.Serial = v
	case "manufacturer":
		u.Manufacturer = v
	case "model":
		u.Model = v
	case "slot-id":
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil || strings.ContainsAny(v[:1], "+-") {
			return fmt.Errorf("PKCS#11 URI: slot-id must be a decimal number, not %q", clip(v))
		}
		id := uint(n)
		if uint64(id) != n {
			return fmt.Errorf("PKCS#11 URI: slot-id %s is out of range", v)
		}
		u.SlotID = &id
	case "module-path":
		if !filepath.IsAbs(v) {
			return fmt.Errorf("PKCS#11 URI: module-path must be an absolute path, not %q", clip(v))
		}
		u.ModulePath = filepath.Clean(v)
	case "module-name":
		if strings.ContainsAny(v, "/\x00") || v == "." || v == ".." {
			return fmt.Errorf("PKCS#11 URI: module-name %q must be a name, not a path (use module-path)", clip(v))
		}
		u.ModuleName = v
	case "pin-source":
		p, err := pinSourcePath(v)
		if err != nil {
			return err
		}
		u.PINSource = p
	case "pin-value":
		u.PINValue = v
	}
	return nil
}

// pinSourcePath turns a pin-source value into a file path: file:/abs,
// file:///abs, file://localhost/abs or a bare /abs (as OpenSSL's pkcs11
// provider and p11-kit take it). Other schemes (a |program, a dialog) are
// refused: a PIN source that cannot be read is a hard error.
func pinSourcePath(v string) (string, error) {
	p := v
	if len(v) >= 5 && strings.EqualFold(v[:5], "file:") {
		p = v[5:]
		if strings.HasPrefix(p, "//") {
			host, rest, _ := strings.Cut(p[2:], "/")
			if host != "" && host != "localhost" {
				return "", fmt.Errorf("PKCS#11 URI: pin-source %q names host %q; only local files are supported", clip(v), clip(host))
			}
			p = "/" + rest
		}
		// A file: URI inside the query is itself percent-decoded once
		// already by Parse; a second encoding layer is not undone.
	} else if !strings.HasPrefix(v, "/") {
		return "", fmt.Errorf("PKCS#11 URI: pin-source %q is not supported: give a file as file:/absolute/path", clip(v))
	}
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("PKCS#11 URI: pin-source %q must name an absolute path", clip(v))
	}
	return filepath.Clean(p), nil
}

// HasToken reports whether the URI has a path attribute selecting a token.
func (u *URI) HasToken() bool {
	return u.Token != "" || u.Serial != "" || u.Manufacturer != "" || u.Model != "" || u.SlotID != nil
}

// HasModule reports whether the URI names a module.
func (u *URI) HasModule() bool { return u.ModulePath != "" || u.ModuleName != "" }

// HasPIN reports whether the URI says where the PIN is.
func (u *URI) HasPIN() bool { return u.PINSource != "" || u.PINValue != "" }

// Format prints the URI as String does with every verb (%#v too), so no
// fmt verb prints PINValue.
func (u URI) Format(f fmt.State, verb rune) {
	s := u.String()
	if verb == 'q' {
		s = strconv.Quote(s)
	}
	_, _ = f.Write([]byte(s))
}

// LogValue logs the URI as String does.
func (u URI) LogValue() slog.Value { return slog.StringValue(u.String()) }

// String formats the URI, percent-encoding what needs it. A pin-value is
// written as pin-value=REDACTED: String is for messages and logs.
func (u URI) String() string {
	var path, query []string
	add := func(to *[]string, name, v string, isPath bool) {
		*to = append(*to, name+"="+escape(v, isPath))
	}
	if u.Token != "" {
		add(&path, "token", u.Token, true)
	}
	if u.Manufacturer != "" {
		add(&path, "manufacturer", u.Manufacturer, true)
	}
	if u.Model != "" {
		add(&path, "model", u.Model, true)
	}
	if u.Serial != "" {
		add(&path, "serial", u.Serial, true)
	}
	if u.SlotID != nil {
		add(&path, "slot-id", strconv.FormatUint(uint64(*u.SlotID), 10), true)
	}
	if u.ModulePath != "" {
		add(&query, "module-path", u.ModulePath, false)
	}
	if u.ModuleName != "" {
		add(&query, "module-name", u.ModuleName, false)
	}
	if u.PINSource != "" {
		add(&query, "pin-source", "file:"+u.PINSource, false)
	}
	if u.PINValue != "" {
		query = append(query, "pin-value=REDACTED")
	}
	s := scheme + strings.Join(path, ";")
	if len(query) > 0 {
		s += "?" + strings.Join(query, "&")
	}
	return s
}

// escape percent-encodes every byte outside RFC 7512's unreserved set and
// the few characters each part allows unencoded.
func escape(v string, isPath bool) string {
	extra := "/?|:[]@!$'()*+,=" // pk11-qchar's res-avail, '&' excluded
	if isPath {
		extra = ":[]@!$'()*+,=&" // pk11-pchar's res-avail, ';' excluded
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		c := v[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			strings.IndexByte("-._~", c) >= 0 || strings.IndexByte(extra, c) >= 0 {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

// validName: RFC 7512 attribute names are lower-case letters, digits and
// dashes.
func validName(n string) bool {
	if n == "" {
		return false
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func opposite(where string) string {
	if where == "path" {
		return "query"
	}
	return "path"
}

// clip keeps quoted input in errors short.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
