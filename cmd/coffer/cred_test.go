package main

import (
	"errors"
	"testing"

	"github.com/coffer-hsm/coffer/unixapi"
)

func TestCredentialID(t *testing.T) {
	const id1, id2, id3 = "01a202f3-2c18-7786-bed2-3cb9bd08ba0c", "01a202f3-2c24-7286-808c-3d17ec5d4efd", "01a202f3-4b4b-790d-a6f1-b53075dc987a"
	pages := map[string]unixapi.List[unixapi.Credential]{
		"":  {Items: []unixapi.Credential{{ID: id1, Name: "web"}, {ID: id2, Name: "dup"}}, Next: id2},
		id2: {Items: []unixapi.Credential{{ID: id3, Name: "dup"}, {ID: "x", Name: "last"}}},
	}
	tests := []struct {
		ref       string
		want      string
		wantErr   string
		wantCalls int
	}{
		{ref: id1, want: id1, wantCalls: 0},
		{ref: "01A202F3-2C18-7786-BED2-3CB9BD08BA0C", want: "01A202F3-2C18-7786-BED2-3CB9BD08BA0C", wantCalls: 0},
		{ref: "web", want: id1, wantCalls: 2},
		{ref: "last", want: "x", wantCalls: 2},
		// 32 hex digits is a valid name, not an id.
		{ref: "01a202f32c187786bed23cb9bd08ba0c", wantErr: `no credential named "01a202f32c187786bed23cb9bd08ba0c" in project p (pass its ID, or the project with --project)`, wantCalls: 2},
		{ref: "nope", wantErr: `no credential named "nope" in project p (pass its ID, or the project with --project)`, wantCalls: 2},
		{ref: "dup", wantErr: `2 credentials are named "dup" in project p: pass one of their IDs (` + id2 + ", " + id3 + ")", wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.ref, func(t *testing.T) {
			calls := 0
			got, err := credentialID(tt.ref, "p", func(q unixapi.PageQuery) (unixapi.List[unixapi.Credential], error) {
				calls++
				return pages[q.After], nil
			})
			if calls != tt.wantCalls {
				t.Errorf("listed %d pages, want %d", calls, tt.wantCalls)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("got %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestCredentialIDListError(t *testing.T) {
	denied := &unixapi.APIError{Status: 403, Code: "forbidden", Message: "not allowed to read project"}
	_, err := credentialID("web", "p", func(unixapi.PageQuery) (unixapi.List[unixapi.Credential], error) {
		return unixapi.List[unixapi.Credential]{}, denied
	})
	var apiErr *unixapi.APIError
	if !errors.As(err, &apiErr) || apiErr != denied {
		t.Fatalf("err = %v, want the API error wrapped", err)
	}
	if want := `look up credential "web" by name in project p: not allowed to read project`; err.Error() != want {
		t.Fatalf("err = %q, want %q", err, want)
	}
}
