package e2e

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

// fieldLine is one "KEY   value" row of a table record.
var fieldLine = regexp.MustCompile(`^(\S+(?: \S+)*)\s{2,}(.*)$`)

// tableFields parses a one-record table into KEY -> value.
func tableFields(t *testing.T, out string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, line := range strings.Split(strings.TrimRight(out, "\n"), "\n") {
		sub := fieldLine.FindStringSubmatch(line)
		if sub == nil {
			t.Fatalf("table line %q is not KEY  value; output:\n%s", line, out)
		}
		m[sub[1]] = strings.TrimSpace(sub[2])
	}
	return m
}

// decodeOutput decodes a json or yaml CLI output into out, going through
// JSON so that both use the API's snake_case names.
func decodeOutput(t *testing.T, format, text string, out any) {
	t.Helper()
	b := []byte(text)
	if format == "yaml" {
		var generic any
		if err := yaml.Unmarshal(b, &generic); err != nil {
			t.Fatalf("output is not YAML: %v\n%s", err, text)
		}
		var err error
		if b, err = json.Marshal(generic); err != nil {
			t.Fatalf("YAML output %q does not map to JSON: %v", text, err)
		}
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(out); err != nil {
		t.Fatalf("%s output does not decode: %v\n%s", format, err, text)
	}
}

// sameJSON fails unless a and b encode to the same JSON.
func sameJSON(t *testing.T, what string, got, want any) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Errorf("%s:\n got  %s\n want %s", what, g, w)
	}
}

// secretFromOutput reads a secret record from the CLI output in format and
// checks the table form field by field against the API.
func checkSecretOutput(t *testing.T, format, out string, want secret) {
	t.Helper()
	switch format {
	case "table":
		f := tableFields(t, out)
		exp := map[string]string{
			"ID": want.ID, "PROJECT": want.Project, "DISPLAY NAME": want.DisplayName,
			"VERSION": itoa(want.Version), "STATUS": want.Status,
			"CREATED": want.CreatedAt.UTC().Format(time.RFC3339), "UPDATED": want.UpdatedAt.UTC().Format(time.RFC3339),
		}
		if want.RotatedAt != nil {
			exp["ROTATED"] = want.RotatedAt.UTC().Format(time.RFC3339)
		}
		if want.RevokedAt != nil {
			exp["REVOKED"] = want.RevokedAt.UTC().Format(time.RFC3339)
		}
		if want.ExpiresAt != nil {
			exp["EXPIRES"] = want.ExpiresAt.UTC().Format(time.RFC3339)
		}
		for k, v := range exp {
			if f[k] != v {
				t.Errorf("table %s = %q, want %q\n%s", k, f[k], v, out)
			}
		}
		for k := range f {
			if _, ok := exp[k]; !ok {
				t.Errorf("table has unexpected row %s = %q\n%s", k, f[k], out)
			}
		}
	default:
		var got secret
		decodeOutput(t, format, out, &got)
		sameJSON(t, format+" output vs HTTP", got, want)
	}
}

func itoa(n int) string {
	b, _ := json.Marshal(n)
	return string(b)
}

// noSecretIn fails if any of the secrets appears in text.
func noSecretIn(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s contains secret material %q:\n%s", where, s, text)
		}
	}
}

// TestUserFlow is the walk-through: create a brokered secret from
// stdin, then get, list, rotate, revoke, delete it and ask for status, in
// every output format, checking the CLI against the raw HTTP API.
func TestUserFlow(t *testing.T) {
	d := startDaemon(t, workDir(t))
	const kv = "role_arn=arn:aws:iam::1:role/x"
	const kvValue = "arn:aws:iam::1:role/x"

	for _, format := range []string{"table", "json", "yaml"} {
		t.Run(format, func(t *testing.T) {
			payload := "s3cr3t-" + format
			newPayload := "n3w-s3cr3t-" + format
			secrets := []string{payload, b64([]byte(payload)), newPayload, b64([]byte(newPayload)), kvValue}
			run := func(stdin string, args ...string) cliResult {
				t.Helper()
				r := d.mustCLI(t, stdin, append([]string{"-o", format}, args...)...)
				noSecretIn(t, "stdout of coffer "+strings.Join(args, " "), r.stdout, secrets...)
				noSecretIn(t, "stderr of coffer "+strings.Join(args, " "), r.stderr, secrets...)
				return r
			}
			get := func(id string) secret {
				t.Helper()
				var s secret
				d.mustAPI(t, "GET", "/v1/secrets/"+id, nil, http.StatusOK, &s)
				return s
			}

			// create
			r := run(payload, "secret", "create", "--project", "default",
				"--display-name", "Acme AWS provisioner", "--payload-file", "-", "--key-value", kv)
			var id string
			if format == "table" {
				id = tableFields(t, r.stdout)["ID"]
			} else {
				var s secret
				decodeOutput(t, format, r.stdout, &s)
				id = s.ID
			}
			if !regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`).MatchString(id) {
				t.Fatalf("create printed id %q, not a UUID:\n%s", id, r.stdout)
			}
			s := get(id)
			if s.Project != "default" || s.DisplayName != "Acme AWS provisioner" || s.Version != 1 || s.Status != "active" {
				t.Errorf("created secret = %+v, want project default, display name, version 1, active", s)
			}
			if s.RotatedAt != nil || s.RevokedAt != nil || s.ExpiresAt != nil {
				t.Errorf("new secret has lifecycle timestamps: %+v", s)
			}
			if s.CreatedAt.Location() != time.UTC || time.Since(s.CreatedAt) > time.Minute || time.Since(s.CreatedAt) < -time.Minute {
				t.Errorf("created_at %v is not a recent UTC time", s.CreatedAt)
			}
			checkSecretOutput(t, format, r.stdout, s)

			// get, with the ID before -o (the global flag) and after the subcommand
			r = run("", "secret", "get", id)
			checkSecretOutput(t, format, r.stdout, s)

			// list
			r = run("", "secret", "list", "--project", "default")
			switch format {
			case "table":
				lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
				if !regexp.MustCompile(`^ID\s+DISPLAY NAME\s+VERSION\s+STATUS\s+UPDATED\s+EXPIRES$`).MatchString(lines[0]) {
					t.Errorf("list header = %q", lines[0])
				}
				if !regexp.MustCompile(`(?m)^` + id + `\s+Acme AWS provisioner\s+1\s+active\s+` + regexp.QuoteMeta(s.UpdatedAt.UTC().Format(time.RFC3339)) + `\s*$`).MatchString(r.stdout) {
					t.Errorf("list has no row for %s:\n%s", id, r.stdout)
				}
			default:
				var l list[secret]
				decodeOutput(t, format, r.stdout, &l)
				var want list[secret]
				d.mustAPI(t, "GET", "/v1/projects/default/secrets", nil, http.StatusOK, &want)
				sameJSON(t, "list vs HTTP", l, want)
			}

			// rotate with a CAS, the ID before the flags
			r = run(newPayload, "secret", "rotate", id, "--payload-file", "-", "--cas", "1")
			s2 := get(id)
			if s2.Version != 2 || s2.Status != "active" || s2.RotatedAt == nil || !s2.CreatedAt.Equal(s.CreatedAt) {
				t.Errorf("after rotate: %+v, want version 2, active, rotated_at set, same created_at", s2)
			}
			checkSecretOutput(t, format, r.stdout, s2)

			// a stale CAS is refused and changes nothing
			bad := d.cli(t, "x", "-o", format, "secret", "rotate", id, "--payload-file", "-", "--cas", "1")
			if bad.code != 1 || !strings.Contains(bad.stderr, "(version_conflict)") {
				t.Errorf("rotate with stale cas: want exit 1 and (version_conflict):\n%s", bad)
			}
			if got := get(id); got.Version != 2 {
				t.Errorf("stale-cas rotate changed the version to %d", got.Version)
			}

			// revoke (twice: idempotent)
			r = run("", "secret", "revoke", id)
			s3 := get(id)
			if s3.Status != "revoked" || s3.RevokedAt == nil || s3.Version != 2 {
				t.Errorf("after revoke: %+v, want revoked, revoked_at set, version 2", s3)
			}
			checkSecretOutput(t, format, r.stdout, s3)
			r = run("", "secret", "revoke", id)
			checkSecretOutput(t, format, r.stdout, s3)

			// a revoked secret cannot be rotated
			bad = d.cli(t, "x", "secret", "rotate", id, "--payload-file", "-")
			if bad.code != 1 || !strings.Contains(bad.stderr, "(secret_revoked)") {
				t.Errorf("rotate revoked: want exit 1 and (secret_revoked):\n%s", bad)
			}

			// delete
			r = run("", "secret", "delete", id)
			if format == "table" && strings.TrimSpace(r.stdout) != "" {
				t.Logf("delete printed %q", r.stdout)
			}
			wantError(t, d.api(t, "GET", "/v1/secrets/"+id, nil), http.StatusNotFound, "not_found")
			bad = d.cli(t, "", "secret", "get", id)
			if bad.code != 1 || !strings.Contains(bad.stderr, "(not_found)") {
				t.Errorf("get deleted: want exit 1 and (not_found):\n%s", bad)
			}

			// status
			r = run("", "status")
			var st status
			d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
			checkStatus(t, st)
			switch format {
			case "table":
				f := tableFields(t, r.stdout)
				for k, v := range map[string]string{
					"MODE": "dev", "HSM": "healthy", "STORE": "healthy", "HSM TOKEN": "coffer-dev",
					"HSM MODULE": softHSMModule, "PROJECTS": itoa(st.Counts.Projects), "SECRETS": itoa(st.Counts.Secrets),
					"HSM KEYS": strings.Join(st.HSM.KeyLabels, ", "), "VERSION": st.Version,
				} {
					if f[k] != v {
						t.Errorf("status table %s = %q, want %q\n%s", k, f[k], v, r.stdout)
					}
				}
			default:
				var got status
				decodeOutput(t, format, r.stdout, &got)
				// uptime moves; everything else must match.
				got.UptimeSeconds, st.UptimeSeconds = 0, 0
				sameJSON(t, "status vs HTTP", got, st)
			}
		})
	}
}

type status struct {
	Version       string    `json:"version"`
	StartedAt     time.Time `json:"started_at"`
	UptimeSeconds int64     `json:"uptime_seconds"`
	Dev           bool      `json:"dev"`
	HSM           struct {
		Module     string   `json:"module"`
		TokenLabel string   `json:"token_label"`
		KeyLabels  []string `json:"key_labels"`
		Healthy    bool     `json:"healthy"`
		Error      string   `json:"error,omitempty"`
		Token      *struct {
			Label        string `json:"label"`
			Manufacturer string `json:"manufacturer"`
			Model        string `json:"model"`
			Serial       string `json:"serial"`
			Library      string `json:"library"`
		} `json:"token,omitempty"`
		Schemes struct {
			KEK           string `json:"kek"`
			KEKReason     string `json:"kek_reason"`
			Signing       string `json:"signing"`
			SigningReason string `json:"signing_reason"`
		} `json:"schemes"`
	} `json:"hsm"`
	Store struct {
		Healthy      bool       `json:"healthy"`
		Error        string     `json:"error,omitempty"`
		State        string     `json:"state"`
		Since        *time.Time `json:"since,omitempty"`
		ReserveBytes int64      `json:"reserve_bytes"`
	} `json:"store"`
	Counts struct {
		Projects    int `json:"projects"`
		Secrets     int `json:"secrets"`
		Users       int `json:"users"`
		Credentials int `json:"credentials"`
	} `json:"counts"`
}

func checkStatus(t *testing.T, st status) {
	t.Helper()
	if !st.Dev || !st.HSM.Healthy || !st.Store.Healthy || st.HSM.TokenLabel != "coffer-dev" || st.HSM.Module != softHSMModule {
		t.Errorf("status = %+v, want dev, healthy HSM (coffer-dev, %s) and store", st, softHSMModule)
	}
	if st.Version == "" || st.StartedAt.IsZero() || st.UptimeSeconds < 0 {
		t.Errorf("status version/started_at/uptime = %q/%v/%d", st.Version, st.StartedAt, st.UptimeSeconds)
	}
	has := map[string]bool{}
	for _, l := range st.HSM.KeyLabels {
		has[l] = true
	}
	if !has["coffer-kek-1"] {
		t.Errorf("status key labels %v lack coffer-kek-1", st.HSM.KeyLabels)
	}
}

// TestStatusCounts checks the counts move with creates and deletes.
func TestStatusCounts(t *testing.T) {
	d := startDaemon(t, workDir(t))
	var st status
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	checkStatus(t, st)
	if st.Counts.Projects != 1 || st.Counts.Secrets != 0 {
		t.Errorf("fresh daemon counts = %+v, want 1 project (default), 0 secrets", st.Counts)
	}
	d.mustAPI(t, "POST", "/v1/projects", map[string]string{"name": "counted"}, http.StatusCreated, nil)
	s := d.createSecret(t, "counted", "one", []byte("x"), nil)
	d.createSecret(t, "default", "two", []byte("y"), nil)
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	if st.Counts.Projects != 2 || st.Counts.Secrets != 2 {
		t.Errorf("counts = %+v, want 2 projects, 2 secrets", st.Counts)
	}
	d.mustAPI(t, "DELETE", "/v1/secrets/"+s.ID, nil, http.StatusNoContent, nil)
	d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	if st.Counts.Secrets != 1 {
		t.Errorf("after delete counts = %+v, want 1 secret", st.Counts)
	}
}

// TestOutputFlagAfterCommand: -o is a global flag; users type it after the
// command as with kubectl or the docker CLI.
func TestOutputFlagAfterCommand(t *testing.T) {
	d := startDaemon(t, workDir(t))
	s := d.createSecret(t, "default", "flag order", []byte("x"), nil)
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"get_ID_-o", []string{"secret", "get", s.ID, "-o", "json"}},
		{"get_-o_ID", []string{"secret", "get", "-o", "json", s.ID}},
		{"list_-o", []string{"secret", "list", "-o", "json"}},
		{"status_-o", []string{"status", "-o", "json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := d.cli(t, "", tc.args...)
			if r.code != 0 || !json.Valid([]byte(r.stdout)) {
				t.Errorf("want exit 0 and JSON:\n%s", r)
			}
		})
	}
}
