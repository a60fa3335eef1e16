package e2e

import (
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
)

// TestProjects covers create, list, get (by name and id), delete, and the
// refusals: duplicate, invalid name, non-empty, default.
func TestProjects(t *testing.T) {
	d := startDaemon(t, workDir(t))

	var def project
	d.mustAPI(t, "GET", "/v1/projects/default", nil, http.StatusOK, &def)
	if def.Name != "default" || def.ID == "" {
		t.Fatalf("default project = %+v", def)
	}

	var p project
	res := d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "team-a.prod_1"}, http.StatusCreated, &p)
	if p.Name != "team-a.prod_1" || p.ID == "" || p.CreatedAt.IsZero() {
		t.Errorf("created project = %+v", p)
	}
	if loc := res.header.Get("Location"); loc != "/v1/projects/team-a.prod_1" && loc != "/v1/projects/"+p.ID {
		t.Errorf("Location = %q", loc)
	}

	for _, ref := range []string{p.Name, p.ID} {
		var got project
		d.mustAPI(t, "GET", "/v1/projects/"+ref, nil, http.StatusOK, &got)
		sameJSON(t, "get project by "+ref, got, p)
	}

	// longest valid name and a one-character one
	long := strings.Repeat("a", 63) + "9"
	for _, name := range []string{long, "z"} {
		d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": name}, http.StatusCreated, nil)
	}

	var l list[project]
	d.mustAPI(t, "GET", "/v1/projects", nil, http.StatusOK, &l)
	names := map[string]bool{}
	for _, it := range l.Items {
		names[it.Name] = true
	}
	for _, n := range []string{"default", "team-a.prod_1", long, "z"} {
		if !names[n] {
			t.Errorf("project list lacks %q: %+v", n, l.Items)
		}
	}
	if len(l.Items) != 4 || l.Next != "" {
		t.Errorf("project list = %d items, next %q; want 4, no next", len(l.Items), l.Next)
	}

	wantError(t, d.api(t, "POST", "/v1/projects", map[string]string{"name": "team-a.prod_1"}), 409, "already_exists")
	wantError(t, d.api(t, "POST", "/v1/projects", map[string]string{"name": "Team A"}), 400, "invalid_name")

	// not empty: refused until its secret is gone
	s := d.createSecret(t, "team-a.prod_1", "blocker", []byte("x"), nil)
	wantError(t, d.api(t, "DELETE", "/v1/projects/team-a.prod_1", nil), 409, "project_not_empty")
	// a revoked secret still blocks
	d.mustAPI(t, "POST", "/v1/secrets/"+s.ID+"/revoke", nil, http.StatusOK, nil)
	wantError(t, d.api(t, "DELETE", "/v1/projects/team-a.prod_1", nil), 409, "project_not_empty")
	d.mustAPI(t, "DELETE", "/v1/secrets/"+s.ID, nil, http.StatusNoContent, nil)
	d.mustAPI(t, "DELETE", "/v1/projects/team-a.prod_1", nil, http.StatusNoContent, nil)
	wantError(t, d.api(t, "GET", "/v1/secrets/"+s.ID, nil), 404, "not_found")
	wantError(t, d.api(t, "POST", "/v1/projects/team-a.prod_1/secrets", `{"display_name":"x","payload":"eA=="}`), 403, "forbidden")

	// delete by id
	d.mustAPI(t, "DELETE", "/v1/projects/"+"z", nil, http.StatusNoContent, nil)
	var longP project
	d.mustAPI(t, "GET", "/v1/projects/"+long, nil, http.StatusOK, &longP)
	d.mustAPI(t, "DELETE", "/v1/projects/"+longP.ID, nil, http.StatusNoContent, nil)

	// default cannot go, by name or id, even when empty
	wantError(t, d.api(t, "DELETE", "/v1/projects/default", nil), 409, "conflict")
	wantError(t, d.api(t, "DELETE", "/v1/projects/"+def.ID, nil), 409, "conflict")

	// a deleted name can be reused
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "team-a.prod_1"}, http.StatusCreated, nil)

	t.Run("cli", func(t *testing.T) {
		r := d.mustCLI(t, "", "project", "create", "cli-proj")
		f := tableFields(t, r.stdout)
		if f["NAME"] != "cli-proj" || f["ID"] == "" || f["CREATED"] == "" {
			t.Errorf("project create table = %v", f)
		}
		r = d.mustCLI(t, "", "-o", "json", "project", "get", "cli-proj")
		var got, want project
		decodeOutput(t, "json", r.stdout, &got)
		d.mustAPI(t, "GET", "/v1/projects/cli-proj", nil, http.StatusOK, &want)
		sameJSON(t, "project get json", got, want)
		r = d.mustCLI(t, "", "-o", "yaml", "project", "get", want.ID)
		decodeOutput(t, "yaml", r.stdout, &got)
		sameJSON(t, "project get yaml by id", got, want)

		r = d.mustCLI(t, "", "project", "list")
		if !regexp.MustCompile(`(?m)^NAME\s+ID\s+CREATED$`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^cli-proj\s+`+want.ID+`\s`).MatchString(r.stdout) ||
			!regexp.MustCompile(`(?m)^default\s`).MatchString(r.stdout) {
			t.Errorf("project list table:\n%s", r.stdout)
		}
		r = d.mustCLI(t, "", "-o", "json", "project", "list")
		var l list[project]
		decodeOutput(t, "json", r.stdout, &l)
		if len(l.Items) != 3 {
			t.Errorf("project list json has %d items, want 3 (default, team-a.prod_1, cli-proj): %s", len(l.Items), r.stdout)
		}

		if r := d.cli(t, "", "project", "create", "cli-proj"); r.code != 1 || !strings.Contains(r.stderr, "(already_exists)") {
			t.Errorf("duplicate: want exit 1 (already_exists)\n%s", r)
		}
		d.createSecret(t, "cli-proj", "blocker", []byte("x"), nil)
		if r := d.cli(t, "", "project", "delete", "cli-proj"); r.code != 1 || !strings.Contains(r.stderr, "(project_not_empty)") {
			t.Errorf("non-empty: want exit 1 (project_not_empty)\n%s", r)
		}
		if out := d.mustCLI(t, "", "project", "delete", "team-a.prod_1").stdout; out != "project team-a.prod_1 deleted\n" {
			t.Errorf("project delete printed %q, want it to say what it deleted", out)
		}
		if r := d.cli(t, "", "project", "get", "team-a.prod_1"); r.code != 1 {
			t.Errorf("get deleted project: want exit 1\n%s", r)
		}
	})
}

// TestPagination walks a project's secrets page by page in creation order.
func TestPagination(t *testing.T) {
	d := startDaemon(t, workDir(t))
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "pages"}, http.StatusCreated, nil)
	// a secret in another project must not show up
	d.createSecret(t, "default", "elsewhere", []byte("x"), nil)
	var ids []string
	for i := range 5 {
		ids = append(ids, d.createSecret(t, "pages", fmt.Sprintf("secret %d", i), []byte("x"), nil).ID)
	}

	var got []string
	after, pages := "", 0
	for {
		path := "/v1/projects/pages/secrets?limit=2"
		if after != "" {
			path += "&after=" + after
		}
		var l list[secret]
		d.mustAPI(t, "GET", path, nil, http.StatusOK, &l)
		pages++
		if len(l.Items) > 2 {
			t.Fatalf("page %d has %d items with limit=2", pages, len(l.Items))
		}
		for _, s := range l.Items {
			got = append(got, s.ID)
			if s.Project != "pages" {
				t.Errorf("secret %s of project %q listed in pages", s.ID, s.Project)
			}
		}
		if l.Next == "" {
			break
		}
		if pages > 5 {
			t.Fatalf("more than 5 pages; next keeps coming: %q", l.Next)
		}
		after = l.Next
	}
	if pages != 3 {
		t.Errorf("walked %d pages, want 3", pages)
	}
	sameJSON(t, "ids in page order", got, ids)

	// a full page ending exactly at the end: next must not point at nothing
	var l list[secret]
	d.mustAPI(t, "GET", "/v1/projects/pages/secrets?limit=5", nil, http.StatusOK, &l)
	if len(l.Items) != 5 || l.Next != "" {
		t.Errorf("limit=5 of 5: %d items, next %q; want 5 and no next", len(l.Items), l.Next)
	}
	d.mustAPI(t, "GET", "/v1/projects/pages/secrets?after="+ids[4], nil, http.StatusOK, &l)
	if len(l.Items) != 0 || l.Next != "" {
		t.Errorf("after the last id: %+v, want an empty page", l)
	}

	t.Run("cursor survives deletion of its secret", func(t *testing.T) {
		var p1 list[secret]
		d.mustAPI(t, "GET", "/v1/projects/pages/secrets?limit=2", nil, http.StatusOK, &p1)
		if p1.Next != ids[1] {
			t.Fatalf("next after 2 = %q, want %s", p1.Next, ids[1])
		}
		extra := d.createSecret(t, "pages", "to delete", []byte("x"), nil)
		d.mustAPI(t, "DELETE", "/v1/secrets/"+extra.ID, nil, http.StatusNoContent, nil)
		var p2 list[secret]
		d.mustAPI(t, "GET", "/v1/projects/pages/secrets?after="+extra.ID, nil, http.StatusOK, &p2)
		if len(p2.Items) != 0 {
			t.Errorf("after a deleted last id: %d items, want 0", len(p2.Items))
		}
	})

	t.Run("cli one page", func(t *testing.T) {
		r := d.mustCLI(t, "", "-o", "json", "secret", "list", "--project", "pages", "--limit", "2", "--after", ids[1])
		var l list[secret]
		decodeOutput(t, "json", r.stdout, &l)
		if len(l.Items) != 2 || l.Items[0].ID != ids[2] || l.Items[1].ID != ids[3] || l.Next == "" {
			t.Errorf("cli --limit 2 --after ids[1] = %s", r.stdout)
		}
		r = d.mustCLI(t, "", "secret", "list", "--project", "pages", "--limit", "2")
		if !strings.Contains(r.stdout, "more: --after "+ids[1]) {
			t.Errorf("table page does not say how to get more:\n%s", r.stdout)
		}
	})

	t.Run("cli without --limit shows all", func(t *testing.T) {
		r := d.mustCLI(t, "", "secret", "list", "--project", "pages")
		var rows []string
		for _, line := range strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")[1:] {
			rows = append(rows, strings.Fields(line)[0])
		}
		sameJSON(t, "cli list ids", rows, ids)
		if strings.Contains(r.stdout, "more:") {
			t.Errorf("full list says there is more:\n%s", r.stdout)
		}
	})

	t.Run("cli without --limit follows next past the server's page size", func(t *testing.T) {
		d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "many"}, http.StatusCreated, nil)
		const n = 105 // the server's default page is 100
		want := make([]string, 0, n)
		for i := range n {
			want = append(want, d.createSecret(t, "many", fmt.Sprintf("m%d", i), []byte("x"), nil).ID)
		}
		var first list[secret]
		d.mustAPI(t, "GET", "/v1/projects/many/secrets", nil, http.StatusOK, &first)
		if first.Next == "" || len(first.Items) >= n {
			t.Logf("server default page returned %d items, next %q", len(first.Items), first.Next)
		}
		r := d.mustCLI(t, "", "-o", "json", "secret", "list", "--project", "many")
		var l list[secret]
		decodeOutput(t, "json", r.stdout, &l)
		var gotIDs []string
		for _, s := range l.Items {
			gotIDs = append(gotIDs, s.ID)
		}
		sameJSON(t, "all 105 ids", gotIDs, want)
		if l.Next != "" {
			t.Errorf("full list has next %q", l.Next)
		}
	})
}
