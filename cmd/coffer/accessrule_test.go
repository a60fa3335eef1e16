package main

import (
	"errors"
	"reflect"
	"testing"

	"github.com/coffer-hsm/coffer/api"
)

func TestParseAccessRule(t *testing.T) {
	tests := []struct {
		in      string
		want    api.AccessRule
		wantErr string
	}{
		{in: "coffer:GET:/v1/status", want: api.AccessRule{Service: "coffer", Method: "GET", Path: "/v1/status"}},
		{in: "billing:post:/invoices/*", want: api.AccessRule{Service: "billing", Method: "POST", Path: "/invoices/*"}},
		{in: "svc:DELETE:/a/{id}/**", want: api.AccessRule{Service: "svc", Method: "DELETE", Path: "/a/{id}/**"}},
		{in: "svc:GET:/time/12:30", want: api.AccessRule{Service: "svc", Method: "GET", Path: "/time/12:30"}},
		{in: "svc:GET:/", want: api.AccessRule{Service: "svc", Method: "GET", Path: "/"}},
		{in: "coffer:GET", wantErr: `--access-rule "coffer:GET": want SERVICE:METHOD:PATH, e.g. coffer:GET:/v1/status`},
		{in: "coffer", wantErr: `--access-rule "coffer": want SERVICE:METHOD:PATH, e.g. coffer:GET:/v1/status`},
		{in: "", wantErr: `--access-rule "": want SERVICE:METHOD:PATH, e.g. coffer:GET:/v1/status`},
		{in: ":GET:/x", wantErr: "access rule: the service is empty"},
		{in: "svc::/x", wantErr: `access rule: method "" is not one of GET, HEAD, POST, PUT, PATCH, DELETE`},
		{in: "svc:FETCH:/x", wantErr: `access rule: method "FETCH" is not one of GET, HEAD, POST, PUT, PATCH, DELETE`},
		{in: "svc:GET:", wantErr: `access rule: path "" must start with /`},
		{in: "svc:GET:x/y", wantErr: `access rule: path "x/y" must start with /`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseAccessRule(tt.in)
			if tt.wantErr != "" {
				var ue *usageError
				if !errors.As(err, &ue) || err.Error() != tt.wantErr {
					t.Fatalf("err = %v (%T), want usage error %q", err, err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestAccessRules(t *testing.T) {
	tests := []struct {
		name    string
		inline  []string
		ids     []string
		none    bool
		want    []api.AccessRule
		wantErr string
	}{
		{name: "no flags: not restricted", want: nil},
		{name: "no-access: empty list", none: true, want: []api.AccessRule{}},
		{name: "inline and ids", inline: []string{"a:GET:/x"}, ids: []string{"r1"},
			want: []api.AccessRule{{Service: "a", Method: "GET", Path: "/x"}, {ID: "r1"}}},
		{name: "no-access with a rule", none: true, inline: []string{"a:GET:/x"}, wantErr: "--no-access does not go with --access-rule or --access-rule-id"},
		{name: "no-access with an id", none: true, ids: []string{"r1"}, wantErr: "--no-access does not go with --access-rule or --access-rule-id"},
		{name: "bad rule", inline: []string{"a:GET"}, wantErr: `--access-rule "a:GET": want SERVICE:METHOD:PATH, e.g. coffer:GET:/v1/status`},
		{name: "empty id", ids: []string{""}, wantErr: "--access-rule-id is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := accessRules(tt.inline, tt.ids, tt.none)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) || (got == nil) != (tt.want == nil) {
				t.Fatalf("got %#v, want %#v", got, tt.want)
			}
		})
	}
}
