package unixapi

import (
	"bytes"
	"encoding/json"
	"go/ast"
	"go/parser"
	"go/printer"
	"go/token"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/hostseal"
)

// requestBodies is every request body type the server decodes, with
// whether an empty body is allowed. TestRequestBodiesAreAllFuzzed keeps it
// in step with the handlers.
var requestBodies = []struct {
	name     string
	optional bool
	new      func() any
}{
	{"api.ProjectCreateRequest", false, func() any { return new(api.ProjectCreateRequest) }},
	{"api.SecretCreateRequest", false, func() any { return new(api.SecretCreateRequest) }},
	{"api.SecretRotateRequest", false, func() any { return new(api.SecretRotateRequest) }},
	{"api.UserCreateRequest", false, func() any { return new(api.UserCreateRequest) }},
	{"api.UserPatchRequest", false, func() any { return new(api.UserPatchRequest) }},
	{"api.CredentialCreateRequest", false, func() any { return new(api.CredentialCreateRequest) }},
	{"api.CredentialRotateRequest", true, func() any { return new(api.CredentialRotateRequest) }},
	{"api.AccessRule", false, func() any { return new(api.AccessRule) }},
	{"api.BindingCreateRequest", false, func() any { return new(api.BindingCreateRequest) }},
	{"api.AuthorizeRequest", false, func() any { return new(api.AuthorizeRequest) }},
	{"api.PolicyRequest", false, func() any { return new(api.PolicyRequest) }},
	{"api.ProjectPatchRequest", false, func() any { return new(api.ProjectPatchRequest) }},
	{"hostseal.File", false, func() any { return new(hostseal.File) }},
	{"struct{}", true, func() any { return new(struct{}) }},
}

// TestRequestBodiesAreAllFuzzed reads the handlers' source: every
// decodeJSON(w, r, &v, optional) call must decode into a type listed in
// requestBodies, with the same optional flag, and every listed type must
// be decoded somewhere.
func TestRequestBodiesAreAllFuzzed(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	found := map[string]bool{} // "Type optional"
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			fn, ok := n.(*ast.FuncDecl)
			if !ok || fn.Body == nil {
				return true
			}
			vars := map[string]string{} // local var name -> type source
			ast.Inspect(fn.Body, func(n ast.Node) bool {
				switch n := n.(type) {
				case *ast.ValueSpec:
					if n.Type != nil {
						for _, id := range n.Names {
							vars[id.Name] = typeString(fset, n.Type)
						}
					}
				case *ast.CallExpr:
					id, ok := n.Fun.(*ast.Ident)
					if !ok || !(id.Name == "decodeJSON" && len(n.Args) == 4 || id.Name == "decodeJSONLimit" && len(n.Args) == 5) {
						return true
					}
					if fn.Name.Name == "decodeJSON" {
						return true // the wrapper passes its argument on
					}
					u, ok := n.Args[2].(*ast.UnaryExpr)
					var v *ast.Ident
					if ok {
						v, ok = u.X.(*ast.Ident)
					}
					if !ok || vars[v.Name] == "" {
						t.Errorf("%s: decodeJSON into something other than &localVar", fset.Position(n.Pos()))
						return true
					}
					found[vars[v.Name]+" "+typeString(fset, n.Args[3])] = true
				}
				return true
			})
			return false
		})
	}
	listed := map[string]bool{}
	for _, rb := range requestBodies {
		key := rb.name
		if rb.optional {
			key += " true"
		} else {
			key += " false"
		}
		listed[key] = true
		got := strings.ReplaceAll(strings.TrimPrefix(reflect.TypeOf(rb.new()).Elem().String(), "unixapi."), " ", "")
		if got != rb.name {
			t.Errorf("requestBodies entry %s makes a %s", rb.name, got)
		}
	}
	for k := range found {
		if !listed[k] {
			t.Errorf("handlers decode %q, which requestBodies does not list", k)
		}
	}
	for k := range listed {
		if !found[k] {
			t.Errorf("requestBodies lists %q, which no handler decodes", k)
		}
	}
	if len(found) < 10 {
		t.Fatalf("found only %d decodeJSON calls: the scan is broken", len(found))
	}
}

var discardLog = slog.New(slog.NewTextHandler(io.Discard, nil))

func typeString(fset *token.FileSet, e ast.Expr) string {
	var b strings.Builder
	if err := printer.Fprint(&b, fset, e); err != nil {
		return ""
	}
	return b.String()
}

// decodeBody runs decodeJSON on body as the server receives it: with its
// Content-Length, or without one (chunked).
func decodeBody(body []byte, v any, optional, chunked bool) error {
	r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
	if chunked {
		r.ContentLength = -1
	}
	return decodeJSON(httptest.NewRecorder(), r, v, optional)
}

// decodeMessages are the shapes of every decode error message; none quotes
// a value from the body.
var decodeMessages = []string{
	"invalid JSON body: syntax error at byte ",
	"invalid JSON body: field ",
	"invalid JSON body: the body must be a JSON object",
	"invalid JSON body: unexpected end of input",
	"invalid JSON body: unexpected data after the object",
	"invalid JSON body: json: unknown field ",
	"request body must be a JSON object",
	"request body is larger than 8192 bytes",
	// RoleNames (wire_identity.go): a fixed text and an index.
	"invalid JSON body: roles must be a list of role names",
	"invalid JSON body: roles[",
}

func FuzzDecodeRequest(f *testing.F) {
	for i, body := range []string{
		`{"name":"default"}`,
		`{"display_name":"x","payload":"cA==","key_values":{"a":"b"},"expires_at":"2030-01-01T00:00:00Z"}`,
		`{"payload":"cA==","key_values":{},"cas":3}`,
		`{"name":"u","kind":"workload","unix_uids":[1000],"vsock_cids":[3],"vm_names":["vm1"],"access_token_ttl":"1h"}`,
		`{"disabled":true,"unix_uids":[],"vm_names":null,"access_token_ttl":"2h"}`,
		`{"type":"oauth2","user":"u","roles":["member"],"access_rules":[{"service":"s","method":"GET","path":"/**"},{"id":"r1"}],"expire_in":"3days","one_time":true}`,
		`{"grace":"10m"}`,
		`{"service":"coffer","method":"GET","path":"/v1/{p}"}`,
		`{"unit":"a.service","credential":"db"}`,
		`{"unit":"a.service","credential":"db","on_rotate":"try-restart"}`,
		`{"token":"cft_x","service":"s","method":"GET","path":"/"}`,
		``,
	} {
		f.Add(uint8(i), []byte(body), uint16(0), false)
	}
	f.Add(uint8(0), []byte(`{"name":`), uint16(0), false)
	f.Add(uint8(0), []byte(`{} {}`), uint16(0), true)
	f.Add(uint8(0), []byte(`null`), uint16(0), false)
	f.Add(uint8(0), []byte(`{"NAME":"x"}`), uint16(0), false)
	f.Add(uint8(0), []byte(`{"nope":1}`), uint16(0), false)
	f.Add(uint8(1), []byte(`{"key_values":{"a":1}}`), uint16(0), false)
	f.Add(uint8(5), []byte(`{"description":"<&>\u2028\xff"}`), uint16(0), false)
	f.Add(uint8(0), []byte(`{"name":"x"}`), uint16(api.BodyLimit-len(`{"name":"x"}`)), false)
	f.Add(uint8(0), []byte(`{"name":"x"}`), uint16(api.BodyLimit-len(`{"name":"x"}`)+1), true)
	f.Add(uint8(6), []byte(" \t\r\n"), uint16(api.BodyLimit), false)
	f.Fuzz(func(t *testing.T, which uint8, body []byte, pad uint16, chunked bool) {
		rb := requestBodies[int(which)%len(requestBodies)]
		// Leading white space lets the fuzzer reach the size limit.
		full := append(bytes.Repeat([]byte(" "), int(pad)%(api.BodyLimit+64)), body...)
		v := rb.new()
		err := decodeBody(full, v, rb.optional, chunked)
		if err != nil {
			checkDecodeError(t, err, full)
			return
		}
		if len(full) > api.BodyLimit {
			t.Fatalf("%s: accepted a body of %d bytes", rb.name, len(full))
		}
		if len(bytes.TrimSpace(full)) == 0 {
			if !rb.optional {
				t.Fatalf("%s: accepted an empty body", rb.name)
			}
			return
		}

		// What the client sends for v decodes to v again, and encodes to
		// the same bytes: the wire form is a fixed point.
		again, err := api.EncodeRequest(v)
		if err != nil {
			t.Fatalf("%s: re-encode: %v", rb.name, err)
		}
		v2 := rb.new()
		if len(again) <= api.BodyLimit {
			err = decodeBody(again, v2, rb.optional, chunked)
		} else {
			// Re-encoding may grow a body (U+FFFD for invalid UTF-8,
			// \u2028): decode it as strictly, without the limit.
			dec := json.NewDecoder(bytes.NewReader(again))
			dec.DisallowUnknownFields()
			err = dec.Decode(v2)
		}
		if err != nil {
			t.Fatalf("%s: %s does not decode again: %v", rb.name, again, err)
		}
		if !reflect.DeepEqual(omitEmpty(v), omitEmpty(v2)) {
			t.Fatalf("%s: round trip changed\n%#v\nto\n%#v", rb.name, v, v2)
		}
		if third, _ := api.EncodeRequest(v2); !bytes.Equal(third, again) {
			t.Fatalf("%s: encoding is not stable:\n%s\n%s", rb.name, again, third)
		}

		switch req := v.(type) {
		case *api.SecretCreateRequest:
			checkPayloadAndExpiry(t, req.Payload, req.ExpiresAt)
		case *api.SecretRotateRequest:
			checkPayloadAndExpiry(t, req.Payload, req.ExpiresAt)
		}
	})
}

// checkDecodeError: a decode error is invalid_json (400) or, exactly when
// the body is over the limit, request_body_too_large (413); the response
// says so in the error shape, with a message that quotes nothing.
func checkDecodeError(t *testing.T, err error, body []byte) {
	t.Helper()
	code, status := daemon.CodeOf(err), statusOf(err)
	switch {
	case len(body) > api.BodyLimit:
		if code != daemon.CodeBodyTooLarge || status != http.StatusRequestEntityTooLarge {
			t.Fatalf("%d-byte body: %s (%d), want %s (413)", len(body), code, status, daemon.CodeBodyTooLarge)
		}
	case code != daemon.CodeInvalidJSON || status != http.StatusBadRequest:
		t.Fatalf("%d-byte body: %s (%d), want %s (400): %v", len(body), code, status, daemon.CodeInvalidJSON, err)
	}
	msg := daemon.MessageOf(err)
	if !slices.ContainsFunc(decodeMessages, func(p string) bool { return strings.HasPrefix(msg, p) }) {
		t.Fatalf("unexpected message %q", msg)
	}
	rec := httptest.NewRecorder()
	NewServer(nil, discardLog).writeError(rec, httptest.NewRequest(http.MethodPost, "/", nil), err)
	var eb api.ErrorBody
	dec := json.NewDecoder(rec.Body)
	dec.DisallowUnknownFields()
	if rec.Code != status || dec.Decode(&eb) != nil || eb.Error != code || eb.Message != msg {
		t.Fatalf("response %d %+v, want %d %s %q", rec.Code, eb, status, code, msg)
	}
}

func checkPayloadAndExpiry(t *testing.T, payload, expiresAt string) {
	t.Helper()
	p, err := decodePayload(payload)
	if err != nil && daemon.CodeOf(err) != daemon.CodeInvalidPayload {
		t.Fatalf("payload error code %s", daemon.CodeOf(err))
	}
	if err == nil && len(p) == 0 {
		t.Fatal("accepted an empty payload")
	}
	if err != nil && len(payload) >= 4 && strings.Contains(daemon.MessageOf(err), payload) {
		t.Fatal("payload error quotes the payload")
	}
	if _, err := parseExpiry(expiresAt); err != nil && daemon.CodeOf(err) != daemon.CodeInvalidExpiry {
		t.Fatalf("expiry error code %s", daemon.CodeOf(err))
	}
}

// omitEmpty returns a copy of the struct *v in which empty slices and maps
// of omitempty fields, which the client does not send, are nil: the
// server treats nil and empty alike there (fields where the difference
// matters, such as access_rules and rotate's key_values, are not
// omitempty).
func omitEmpty(v any) any {
	rv := reflect.ValueOf(v).Elem()
	out := reflect.New(rv.Type()).Elem()
	out.Set(rv)
	for i := range out.NumField() {
		fv := out.Field(i)
		tag := out.Type().Field(i).Tag.Get("json")
		if !strings.Contains(tag, ",omitempty") {
			continue
		}
		if (fv.Kind() == reflect.Slice || fv.Kind() == reflect.Map) && fv.Len() == 0 {
			fv.Set(reflect.Zero(fv.Type()))
		}
	}
	return out.Interface()
}

// TestEncodeBodyKeepsHTMLCharacters: '&', '<' and '>' (common in
// connection strings) are sent as themselves, not as six-byte escapes that
// count against the body limit.
func TestEncodeBodyKeepsHTMLCharacters(t *testing.T) {
	b, err := api.EncodeRequest(api.SecretCreateRequest{DisplayName: "<db>", KeyValues: map[string]string{"dsn": "a=1&b=2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"display_name":"<db>","payload":"","key_values":{"dsn":"a=1&b=2"}}`
	if string(b) != want {
		t.Fatalf("EncodeRequest = %s, want %s", b, want)
	}
}

var watchMessages = []string{
	"wait must be a duration from 0s to 5m0s, such as 30s",
	"after_version must be a version number (0 or more)",
}

// FuzzParseWatch: a watch's query (GET /v1/deliver/{name}?wait=&after_version=)
// is accepted only within its bounds, and its errors are the two codes,
// with messages that never quote the input.
func FuzzParseWatch(f *testing.F) {
	for _, s := range [][2]string{
		{"30s", "3"}, {"", ""}, {"5m", "0"}, {"5m0.000000001s", "1"}, {"-1s", "1"}, {"1h", ""},
		{"abc", "1"}, {"1s", "-1"}, {"1s", "2147483648"}, {"1s", "+1"}, {"0", "0"}, {"9223372036854775807ns", "1"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, wait, after string) {
		d, n, err := ParseWatch(wait, after)
		if err != nil {
			code := daemon.CodeOf(err)
			if code != daemon.CodeInvalidWait && code != daemon.CodeInvalidAfterVersion {
				t.Fatalf("ParseWatch(%q, %q): code %s", wait, after, code)
			}
			// One fixed message per code: nothing of the input in it.
			if msg := daemon.MessageOf(err); !slices.Contains(watchMessages, msg) {
				t.Fatalf("ParseWatch(%q, %q): message %q", wait, after, msg)
			}
			return
		}
		if d < 0 || d > daemon.MaxDeliveryWait || n < 0 {
			t.Fatalf("ParseWatch(%q, %q) = %v, %d: out of bounds", wait, after, d, n)
		}
	})
}
