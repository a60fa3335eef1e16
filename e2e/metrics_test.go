package e2e

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/api"
)

// requirePrometheus returns the paths of prometheus and promtool (Debian's
// prometheus package), skipping t without them unless CI=true.
func requirePrometheus(t *testing.T) (prometheus, promtool string) {
	t.Helper()
	var err error
	if prometheus, err = exec.LookPath("prometheus"); err == nil {
		promtool, err = exec.LookPath("promtool")
	}
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("prometheus and promtool are required in CI (make test-deps installs them): %v", err)
		}
		t.Skipf("prometheus or promtool not installed (make test-deps): %v", err)
	}
	return prometheus, promtool
}

// freeLoopbackAddr returns a 127.0.0.1 address with a port free right now.
func freeLoopbackAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// scrape reads http://addr/metrics.
func scrape(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: %d %s", addr, resp.StatusCode, body)
	}
	return string(body)
}

// promtoolCheck runs `promtool check metrics` on an exposition.
func promtoolCheck(t *testing.T, promtool, exposition string) {
	t.Helper()
	cmd := exec.Command(promtool, "check", "metrics")
	cmd.Stdin = strings.NewReader(exposition)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("promtool check metrics: %v\n%s", err, out)
	}
}

// The real Prometheus scrapes the real daemon's loopback listener and
// holds the requests the test made, by route pattern.
func TestMetricsPrometheusScrape(t *testing.T) {
	prom, promtool := requirePrometheus(t)
	dir := workDir(t)
	addr := freeLoopbackAddr(t)
	d := startDaemon(t, dir, "--metrics-listen", addr)

	const statusCalls = 5
	for range statusCalls {
		d.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, nil)
	}
	s := d.createSecret(t, "default", "scraped", []byte("p"), nil)
	d.mustAPI(t, "GET", "/v1/secrets/"+s.ID, nil, http.StatusOK, nil)
	d.mustAPI(t, "GET", "/v1/health", nil, http.StatusOK, nil)

	exp := scrape(t, addr)
	promtoolCheck(t, promtool, exp)
	// The loopback listener serves /metrics and nothing else.
	for _, path := range []string{"/v1/status", "/v1/metrics", "/v1/projects", "/"} {
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on the metrics listener: %d, want 404", path, resp.StatusCode)
		}
	}
	for _, want := range []string{
		`coffer_http_requests_total{channel="unix",route="GET /v1/status",status="200"} ` + strconv.Itoa(statusCalls),
		`coffer_http_requests_total{channel="unix",route="GET /v1/secrets/{id}",status="200"} 1`,
		`coffer_hsm_up 1`, `coffer_store_up 1`, `coffer_audit_up 1`,
		`coffer_hsm_operation_duration_seconds_count{op="seal"}`,
		`coffer_store_size_bytes{part="lsm"}`,
		`coffer_socket_connections{channel="unix"}`,
		`coffer_records{kind="secret"} 1`,
	} {
		if !strings.Contains(exp, want) {
			t.Errorf("the exposition lacks %q", want)
		}
	}

	// Prometheus, with the README's scrape config (scraping every second,
	// at this daemon's port), on a port of its own.
	promDir := filepath.Join(dir, "prometheus")
	if err := os.MkdirAll(promDir, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := readmePromConfig(t)
	for old, repl := range map[string]string{"scrape_interval: 15s": "scrape_interval: 1s", "'127.0.0.1:9464'": "'" + addr + "'"} {
		if !strings.Contains(conf, old) {
			t.Fatalf("the README's scrape config has no %q:\n%s", old, conf)
		}
		conf = strings.ReplaceAll(conf, old, repl)
	}
	confPath := filepath.Join(promDir, "prometheus.yml")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	check := exec.Command(promtool, "check", "config", confPath)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check config: %v\n%s", err, out)
	}
	promAddr := freeLoopbackAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, prom, "--config.file="+confPath, "--storage.tsdb.path="+filepath.Join(promDir, "data"),
		"--web.listen-address="+promAddr, "--log.level=warn")
	var promOut syncBuffer
	cmd.Stdout, cmd.Stderr = &promOut, &promOut
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
	})

	query := func(q string) (float64, bool) {
		resp, err := http.Get("http://" + promAddr + "/api/v1/query?query=" + url.QueryEscape(q))
		if err != nil {
			return 0, false
		}
		defer resp.Body.Close()
		var r struct {
			Status string `json:"status"`
			Data   struct {
				Result []struct {
					Value [2]any `json:"value"`
				} `json:"result"`
			} `json:"data"`
		}
		if json.NewDecoder(resp.Body).Decode(&r) != nil || r.Status != "success" || len(r.Data.Result) != 1 {
			return 0, false
		}
		v, _ := r.Data.Result[0].Value[1].(string)
		f, err := strconv.ParseFloat(v, 64)
		return f, err == nil
	}
	q := `sum(coffer_http_requests_total{job="coffer",route="GET /v1/status",status="200"})`
	deadline := time.Now().Add(60 * time.Second)
	for {
		up, okUp := query(`up{job="coffer"}`)
		n, ok := query(q)
		if okUp && up == 1 && ok && n >= statusCalls {
			t.Logf("prometheus: up=1, %s = %v", q, n)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus has no %s >= %d after 60s (up ok=%v %v, value ok=%v %v)\nprometheus output:\n%s", q, statusCalls, okUp, up, ok, n, promOut.String())
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// readmePromConfig is the README's Prometheus config: its yaml block
// with job_name: coffer.
func readmePromConfig(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, block := range strings.Split(string(b), "```yaml\n")[1:] {
		block, _, _ = strings.Cut(block, "```")
		if strings.Contains(block, "job_name: coffer") {
			return block
		}
	}
	t.Fatal("the README has no yaml block with job_name: coffer")
	return ""
}

// The loopback listener takes loopback addresses only: anything else
// stops the daemon at start-up with a usage error that says why.
func TestMetricsListenRefusesNonLoopback(t *testing.T) {
	requireHSM(t)
	for _, addr := range []string{"0.0.0.0:9464", "192.0.2.1:9464", "localhost9464", "[::]:9464"} {
		t.Run(addr, func(t *testing.T) {
			d := launchDaemon(t, workDir(t), "daemon", "--dev", "--metrics-listen", addr)
			if code := d.waitExit(t); code != 2 {
				t.Errorf("exit %d, want 2 (usage)\nstderr:\n%s", code, d.stderr)
			}
			if !strings.Contains(d.stderr.String(), "--metrics-listen") {
				t.Errorf("stderr does not name --metrics-listen:\n%s", d.stderr)
			}
		})
	}
}

// Health and metrics on the socket: GET /v1/health answers anyone,
// GET /v1/metrics the system admin (the dev caller); coffer status exits
// 0 on a healthy daemon.
func TestMetricsAndHealthOnSocket(t *testing.T) {
	d := startDaemon(t, workDir(t))
	var h api.Health
	d.mustAPI(t, "GET", "/v1/health", nil, http.StatusOK, &h)
	if h.Status != "ok" || len(h.Failed) != 0 {
		t.Errorf("health = %+v, want ok", h)
	}
	res := d.mustAPI(t, "GET", "/v1/metrics", nil, http.StatusOK, nil)
	if ct := res.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain") {
		t.Errorf("Content-Type = %q", ct)
	}
	if !strings.Contains(string(res.body), "coffer_http_requests_total") {
		t.Errorf("GET /v1/metrics lacks the request counters:\n%.2000s", res.body)
	}
	if r := d.cli(t, "", "status"); r.code != 0 || !strings.Contains(r.stdout, "PROJECTS") {
		t.Errorf("coffer status: %s", r)
	}
}

// Nothing a tenant names or sends reaches the metrics: project, user and
// secret names, payloads, key-values, tokens and ids are all absent from
// both expositions after they were used.
func TestMetricsLeakNothing(t *testing.T) {
	_, promtool := requirePrometheus(t)
	addr := freeLoopbackAddr(t)
	dir := workDir(t)
	// From the config file this time.
	cfg := filepath.Join(dir, "coffer.toml")
	if err := os.WriteFile(cfg, []byte("metrics_listen = \""+addr+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDaemon(t, dir, "--config", cfg)

	const (
		proj    = "zebra-quokka-proj"
		user    = "xylophone-user"
		display = "octarine-display-name"
		payload = "PAYLOAD-vermilion-31337"
		kvKey   = "kvkey-ultramarine"
		kvValue = "kvvalue-chartreuse"
	)
	d.mustAPI(t, "POST", "/v1/projects", map[string]any{"name": proj}, http.StatusCreated, nil)
	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": user}, http.StatusCreated, nil)
	d.mustAPI(t, "PUT", "/v1/projects/"+proj+"/roles/"+user+"/admin", nil, http.StatusOK, nil)
	s := d.createSecret(t, proj, display, []byte(payload), map[string]string{kvKey: kvValue})
	var cred api.Credential
	d.mustAPI(t, "POST", "/v1/projects/"+proj+"/credentials", map[string]any{"type": "access-token", "user": user}, http.StatusCreated, &cred)
	if cred.Token == "" {
		t.Fatal("no token issued")
	}
	// Use the token (allowed and refused), and a wrong one.
	for _, tok := range []string{cred.Token, cred.Token + "x"} {
		hdr := http.Header{"Authorization": {"Bearer " + tok}}
		d.send(t, "GET", "/v1/projects/"+proj+"/secrets", hdr, nil)
		d.send(t, "GET", "/v1/secrets/"+s.ID, hdr, nil)
	}
	d.send(t, "GET", "/v1/deliver/"+display, nil, nil)

	socketExp := string(d.mustAPI(t, "GET", "/v1/metrics", nil, http.StatusOK, nil).body)
	tcpExp := scrape(t, addr)
	promtoolCheck(t, promtool, tcpExp)
	secrets := []string{proj, user, display, payload, b64([]byte(payload)), kvKey, kvValue,
		cred.Token, cred.TokenID, cred.ID, cred.Name, cred.UserID, cred.ProjectID, s.ID}
	for name, exp := range map[string]string{"socket": socketExp, "loopback": tcpExp} {
		if !strings.Contains(exp, "coffer_http_requests_total") {
			t.Fatalf("%s exposition has no request counters", name)
		}
		for _, sec := range secrets {
			if sec != "" && strings.Contains(exp, sec) {
				t.Errorf("%s exposition contains %q", name, sec)
			}
		}
	}
}

// uidMonitor is the uid (and, through setpriv, primary gid) of the
// metrics group in TestCountsAndMetricsAsOtherCallers.
const uidMonitor = 4605

// getAs GETs path over h's socket as uid with curl and returns the status
// and body.
func (h *tenantHost) getAs(t *testing.T, uid int, path string) (int, string) {
	t.Helper()
	id := strconv.Itoa(uid)
	out, err := exec.Command("setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "--",
		"curl", "-sS", "-w", "\n%{http_code}", "--unix-socket", h.sock, "http://coffer"+path).Output()
	if err != nil {
		t.Fatalf("uid %d: GET %s: %v\n%s", uid, path, err, out)
	}
	var body, code string
	if i := strings.LastIndexByte(string(out), '\n'); i >= 0 {
		body, code = string(out[:i]), string(out[i+1:])
	}
	n, _ := strconv.Atoi(code)
	return n, body
}

// The status counts and the metrics, tried by every kind of caller of a
// real daemon as real uids: a workload uid, a uid bound to nobody, a
// project admin's uid, restricted and workload tokens get a status
// without counts and 403 on the metrics; the metrics group's uid and the
// system admin get both. Health answers everyone, with nothing in it but
// ok.
func TestCountsAndMetricsAsOtherCallers(t *testing.T) {
	h := newTenantHostArgs(t, "--metrics-group", strconv.Itoa(uidMonitor))
	h.secret(t, uidBetaAdmin, "beta", "BETA-PAYLOAD")
	hasCounts := func(body string) bool {
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(body), &raw); err != nil {
			t.Fatalf("status is not JSON: %v\n%s", err, body)
		}
		_, ok := raw["counts"]
		return ok
	}
	for _, c := range []struct {
		name string
		uid  int
		sees bool
	}{
		{"workload uid", uidWeb, false},
		{"uid bound to nobody", uidStranger, false},
		{"project admin uid", uidBetaAdmin, false},
		{"metrics group", uidMonitor, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := h.must(t, c.uid, "", "status")
			if got := hasCounts(out); got != c.sees {
				t.Errorf("uid %d: coffer -o json status has counts = %v, want %v:\n%s", c.uid, got, c.sees, out)
			}
			code, body := h.getAs(t, c.uid, "/v1/metrics")
			if want := map[bool]int{true: 200, false: 403}[c.sees]; code != want {
				t.Errorf("uid %d: GET /v1/metrics = %d, want %d: %.300s", c.uid, code, want, body)
			}
			if c.sees && !strings.Contains(body, "coffer_http_requests_total") {
				t.Errorf("uid %d: metrics lack the request counters", c.uid)
			}
			if code, body := h.getAs(t, c.uid, "/v1/health"); code != 200 || strings.TrimSpace(body) != `{"status":"ok"}` {
				t.Errorf("uid %d: GET /v1/health = %d %s", c.uid, code, body)
			}
		})
	}
	webTok := h.newCred(t, "beta", map[string]any{"type": "access-token", "user": "web"}).Token
	adminTok := h.newCred(t, "beta", map[string]any{"type": "access-token", "user": "beta-admin"}).Token
	for name, tok := range map[string]string{"workload token": webTok, "restricted admin token": adminTok} {
		t.Run(name, func(t *testing.T) {
			res := h.bearer(t, tok, "GET", "/v1/status", nil)
			if res.status != http.StatusOK || hasCounts(string(res.body)) {
				t.Errorf("GET /v1/status with a %s: %d %s, want 200 without counts", name, res.status, res.body)
			}
			wantError(t, h.bearer(t, tok, "GET", "/v1/metrics", nil), http.StatusForbidden, "forbidden")
		})
	}
	// The refusals are audited denials, like any other.
	deadline := time.Now().Add(10 * time.Second)
	for {
		res := h.mustAPI(t, "GET", "/v1/audit?tail=200", nil, http.StatusOK, nil)
		if strings.Contains(string(res.body), `"metrics.read"`) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no metrics.read denial in the audit log:\n%.3000s", res.body)
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The system admin (the dev daemon's own uid) sees both.
	var st api.Status
	h.mustAPI(t, "GET", "/v1/status", nil, http.StatusOK, &st)
	if st.Counts.Projects != 3 || st.Counts.Secrets != 1 {
		t.Errorf("the admin's counts = %+v, want 3 projects, 1 secret", st.Counts)
	}
	h.mustAPI(t, "GET", "/v1/metrics", nil, http.StatusOK, nil)
}
