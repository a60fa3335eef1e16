// Package k8stest runs a real Kubernetes control plane for end-to-end
// tests: an etcd and a kube-apiserver on 127.0.0.1, on free ports, with
// their data, certificates and logs in the test's temporary directory, and
// kubectl and etcdctl to look at them. Nothing is faked: what a test sees is
// what a cluster of that release does.
//
// The programs come from the directory named by COFFER_K8S_BIN, which
// `make k8s-test` fills with scripts/k8s-tools.sh (kube-apiserver and
// kubectl at the Kubernetes release of test/kube-build, Debian's etcd and
// etcdctl). The rule, for every caller and whatever CI says:
//
//   - COFFER_K8S_BIN unset: the test skips, naming `make k8s-test`. This is
//     how a plain `make test` (CI's too) passes over the Kubernetes tests.
//   - COFFER_K8S_BIN set: the control plane is wanted, so a missing or
//     broken program fails the test. `make k8s-test` always sets it, so in
//     CI a missing binary is a failure, never a skip.
//
// Only tests import this package; the coffer binary does not.
package k8stest

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// BinEnv names the directory holding kube-apiserver, kubectl, etcd and
// etcdctl.
const BinEnv = "COFFER_K8S_BIN"

// Version is the Kubernetes release scripts/k8s-tools.sh builds.
const Version = "v1.37.2"

const (
	// readyTimeout bounds the wait for /readyz (and for etcd's health): a
	// kube-apiserver runs its post-start hooks first, which takes seconds,
	// more on a loaded 2-core machine.
	readyTimeout = 2 * time.Minute
	// stopTimeout bounds a graceful stop before SIGKILL.
	stopTimeout = 30 * time.Second
	// cmdTimeout bounds one kubectl or etcdctl run.
	cmdTimeout = time.Minute
	// serviceCIDR is the service IP range kube-apiserver allocates from.
	// It is bookkeeping only: nothing listens or routes there.
	serviceCIDR = "10.0.0.0/24"
	// DefaultIssuer is the service account token issuer unless
	// Options.ServiceAccountIssuer says otherwise.
	DefaultIssuer = "https://kubernetes.default.svc.cluster.local"
)

// Options are what a test adds to the control plane. The zero value is a
// plain cluster: client certificates and service account tokens signed by a
// generated key, --authorization-mode=Node,RBAC.
type Options struct {
	// TokenWebhookConfig is a kubeconfig-format file for
	// --authentication-token-webhook-config-file (see WebhookKubeconfig).
	// The webhook gets authentication.k8s.io/v1 TokenReviews
	// (kube-apiserver's default is still v1beta1; ExtraArgs may say
	// --authentication-token-webhook-version=v1beta1: the last one wins).
	TokenWebhookConfig string
	// TokenWebhookCacheTTL is --authentication-token-webhook-cache-ttl,
	// passed whenever TokenWebhookConfig is set: zero turns the cache off,
	// which is what most tests want (kube-apiserver's default is 2m).
	TokenWebhookCacheTTL time.Duration

	// AuthorizationWebhookConfig is a kubeconfig-format file for
	// --authorization-webhook-config-file; when set, the authorization
	// mode is Node,Webhook,RBAC and the webhook gets
	// authorization.k8s.io/v1 SubjectAccessReviews (kube-apiserver's
	// default is v1beta1).
	AuthorizationWebhookConfig string
	// AuthorizationWebhookAuthorizedTTL and
	// AuthorizationWebhookUnauthorizedTTL are
	// --authorization-webhook-cache-authorized-ttl and
	// --authorization-webhook-cache-unauthorized-ttl, passed whenever
	// AuthorizationWebhookConfig is set: zero turns the cache off
	// (kube-apiserver's defaults are 5m and 30s).
	AuthorizationWebhookAuthorizedTTL   time.Duration
	AuthorizationWebhookUnauthorizedTTL time.Duration

	// EncryptionProviderConfig is an EncryptionConfiguration file for
	// --encryption-provider-config (see KMSv2EncryptionConfig).
	EncryptionProviderConfig string
	// EncryptionProviderConfigAutomaticReload sets
	// --encryption-provider-config-automatic-reload: the file is read
	// again when it changes, without a restart.
	EncryptionProviderConfigAutomaticReload bool

	// ServiceAccountIssuer is --service-account-issuer (and
	// --api-audiences); DefaultIssuer when empty.
	ServiceAccountIssuer string
	// ServiceAccountSigningEndpoint, when set, is the Unix socket of an
	// external service account signer
	// (--service-account-signing-endpoint); no key is generated then,
	// as the flag excludes --service-account-key-file and
	// --service-account-signing-key-file (its feature gate,
	// ExternalServiceAccountTokenSigner, is GA and on since 1.36). The
	// signer must be serving before Start: kube-apiserver asks it for its
	// keys while starting.
	ServiceAccountSigningEndpoint string

	// ExtraArgs are appended to kube-apiserver's command line, as
	// "--flag=value" strings. For a flag that takes one value and is also
	// set by the options above, the one here wins (it comes last).
	ExtraArgs []string
}

// ControlPlane is a running etcd and kube-apiserver, stopped when the test
// that started it ends.
type ControlPlane struct {
	// URL is the kube-apiserver's, https://127.0.0.1:PORT.
	URL string
	// CAPEM is the CA that signed the serving certificate and the admin
	// client certificate; CAFile holds it.
	CAPEM  []byte
	CAFile string
	// AdminKubeconfig is a kubeconfig file that authenticates as an admin
	// (user coffer-admin in group system:masters) by client certificate.
	AdminKubeconfig string
	// AdminCertFile and AdminKeyFile are that client certificate and key.
	AdminCertFile, AdminKeyFile string
	// ServiceAccountIssuer is the issuer of service account tokens.
	ServiceAccountIssuer string
	// ServiceAccountKeyFile is the PEM private key that signs service
	// account tokens (PKCS #8, ECDSA P-256), and ServiceAccountPublicKeyFile
	// its public key; both empty with Options.ServiceAccountSigningEndpoint.
	ServiceAccountKeyFile, ServiceAccountPublicKeyFile string
	// EtcdURL is etcd's client URL, http://127.0.0.1:PORT.
	EtcdURL string
	// Dir is the directory of everything above, and of the logs.
	Dir string

	bin          string
	tokenConfig  string // kubeconfig without credentials, for --token
	apiArgs      []string
	apiPort      int
	etcd, apiSrv *proc
}

// Bin returns the directory of the programs, skipping t when BinEnv is
// unset and failing it when the directory lacks one of them.
func Bin(t testing.TB) string {
	t.Helper()
	dir := os.Getenv(BinEnv)
	if dir == "" {
		t.Skipf("k8stest: %s is unset: run `make k8s-test` for the Kubernetes tests (it builds kube-apiserver %s and sets it)", BinEnv, Version)
	}
	for _, name := range []string{"kube-apiserver", "kubectl", "etcd", "etcdctl"} {
		p := filepath.Join(dir, name)
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("k8stest: %s=%s but %v (scripts/k8s-tools.sh installs it)", BinEnv, dir, err)
		}
		if fi.Mode()&0o111 == 0 {
			t.Fatalf("k8stest: %s is not executable", p)
		}
	}
	return dir
}

// Start runs etcd and kube-apiserver with opts, waits until /readyz
// answers ok to the admin, and stops both when t ends. When t fails, the
// last lines of both logs are logged.
func Start(t testing.TB, opts Options) *ControlPlane {
	t.Helper()
	bin := Bin(t)
	dir := t.TempDir()
	cp := &ControlPlane{bin: bin, Dir: dir}
	// Registered before the processes' own cleanups, so it runs after
	// they are killed, when the logs are complete.
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("k8stest: logs in %s\n%s\n%s", dir, cp.etcd.tail(), cp.apiSrv.tail())
		}
	})
	if err := cp.writePKI(opts); err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	cp.startEtcd(t)
	cp.apiArgs = cp.apiServerArgs(opts)
	cp.startAPIServer(t)
	return cp
}

// startEtcd starts a single-member etcd on two free loopback ports, trying
// again with new ports when another process took one in between.
func (cp *ControlPlane) startEtcd(t testing.TB) {
	t.Helper()
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		client, peer := freePort(t), freePort(t)
		clientURL := "http://127.0.0.1:" + strconv.Itoa(client)
		peerURL := "http://127.0.0.1:" + strconv.Itoa(peer)
		data := filepath.Join(cp.Dir, "etcd-data-"+strconv.Itoa(attempt))
		p, err := startProc(t, filepath.Join(cp.bin, "etcd"), filepath.Join(cp.Dir, "etcd.log"), nil,
			"--name=k8stest",
			"--data-dir="+data,
			"--listen-client-urls="+clientURL,
			"--advertise-client-urls="+clientURL,
			"--listen-peer-urls="+peerURL,
			"--initial-advertise-peer-urls="+peerURL,
			"--initial-cluster=k8stest="+peerURL,
			"--initial-cluster-state=new",
			"--logger=zap",
			"--log-level=warn",
			"--log-outputs=stderr",
		)
		if err != nil {
			t.Fatalf("k8stest: %v", err)
		}
		cp.etcd = p
		cp.EtcdURL = clientURL
		lastErr = waitReady(p, func(ctx context.Context) error {
			_, err := cp.etcdctl(ctx, "endpoint", "health")
			return err
		})
		if lastErr == nil {
			return
		}
		if !p.exited() || !strings.Contains(p.ownLog(), "address already in use") {
			break
		}
	}
	t.Fatalf("k8stest: etcd did not become healthy: %v (its log follows)", lastErr)
}

// apiServerArgs is kube-apiserver's command line without the port.
func (cp *ControlPlane) apiServerArgs(opts Options) []string {
	f := func(name string) string { return filepath.Join(cp.Dir, name) }
	args := []string{
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		// The "kubernetes" Service's endpoints would name 127.0.0.1, which
		// validation refuses; no pod here needs them.
		"--endpoint-reconciler-type=none",
		"--etcd-servers=" + cp.EtcdURL,
		"--tls-cert-file=" + f("serving.crt"),
		"--tls-private-key-file=" + f("serving.key"),
		"--client-ca-file=" + cp.CAFile,
		"--service-cluster-ip-range=" + serviceCIDR,
		"--service-account-issuer=" + cp.ServiceAccountIssuer,
		"--api-audiences=" + cp.ServiceAccountIssuer,
		"--profiling=false",
	}
	if opts.ServiceAccountSigningEndpoint != "" {
		args = append(args, "--service-account-signing-endpoint="+opts.ServiceAccountSigningEndpoint)
	} else {
		args = append(args,
			"--service-account-key-file="+cp.ServiceAccountPublicKeyFile,
			"--service-account-signing-key-file="+cp.ServiceAccountKeyFile)
	}
	if opts.TokenWebhookConfig != "" {
		args = append(args,
			"--authentication-token-webhook-config-file="+opts.TokenWebhookConfig,
			"--authentication-token-webhook-version=v1",
			"--authentication-token-webhook-cache-ttl="+opts.TokenWebhookCacheTTL.String())
	}
	if opts.AuthorizationWebhookConfig != "" {
		args = append(args,
			"--authorization-mode=Node,Webhook,RBAC",
			"--authorization-webhook-config-file="+opts.AuthorizationWebhookConfig,
			"--authorization-webhook-version=v1",
			"--authorization-webhook-cache-authorized-ttl="+opts.AuthorizationWebhookAuthorizedTTL.String(),
			"--authorization-webhook-cache-unauthorized-ttl="+opts.AuthorizationWebhookUnauthorizedTTL.String())
	} else {
		args = append(args, "--authorization-mode=Node,RBAC")
	}
	if opts.EncryptionProviderConfig != "" {
		args = append(args, "--encryption-provider-config="+opts.EncryptionProviderConfig)
		if opts.EncryptionProviderConfigAutomaticReload {
			args = append(args, "--encryption-provider-config-automatic-reload=true")
		}
	}
	return append(args, opts.ExtraArgs...)
}

// startAPIServer starts kube-apiserver on cp.apiPort (a free one when
// zero) and waits for /readyz, trying other ports when the first is
// taken between choosing it and binding it.
func (cp *ControlPlane) startAPIServer(t testing.TB) {
	t.Helper()
	fixed := cp.apiPort != 0
	var lastErr error
	for attempt := 1; attempt <= 3; attempt++ {
		if !fixed {
			cp.apiPort = freePort(t)
		}
		cp.URL = "https://127.0.0.1:" + strconv.Itoa(cp.apiPort)
		args := append([]string{"--secure-port=" + strconv.Itoa(cp.apiPort)}, cp.apiArgs...)
		p, err := startProc(t, filepath.Join(cp.bin, "kube-apiserver"), filepath.Join(cp.Dir, "kube-apiserver.log"), nil, args...)
		if err != nil {
			t.Fatalf("k8stest: %v", err)
		}
		cp.apiSrv = p
		if err := cp.writeKubeconfigs(); err != nil {
			t.Fatalf("k8stest: %v", err)
		}
		lastErr = waitReady(p, cp.readyz)
		if lastErr == nil {
			return
		}
		if fixed || !p.exited() || !strings.Contains(p.ownLog(), "address already in use") {
			break
		}
	}
	t.Fatalf("k8stest: kube-apiserver did not become ready at %s: %v (its log follows)", cp.URL, lastErr)
}

// readyz asks /readyz as the admin.
func (cp *ControlPlane) readyz(ctx context.Context) error {
	c, err := cp.adminClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, cp.URL+"/readyz?verbose", nil)
	if err != nil {
		return err
	}
	res, err := c.Do(req)
	if err != nil {
		return err
	}
	defer res.Body.Close()
	var body bytes.Buffer
	_, _ = body.ReadFrom(res.Body)
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("/readyz: %s: %s", res.Status, lastLines(body.String(), 15))
	}
	return nil
}

// HTTPClient returns a client that trusts the CA and presents the admin
// client certificate.
func (cp *ControlPlane) HTTPClient(t testing.TB) *http.Client {
	t.Helper()
	c, err := cp.adminClient()
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	return c
}

func (cp *ControlPlane) adminClient() (*http.Client, error) {
	cert, err := tls.LoadX509KeyPair(cp.AdminCertFile, cp.AdminKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load admin client certificate: %w", err)
	}
	pool, err := certPool(cp.CAPEM)
	if err != nil {
		return nil, err
	}
	return &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			RootCAs:      pool,
			Certificates: []tls.Certificate{cert},
			MinVersion:   tls.VersionTLS12,
		}},
	}, nil
}

// Restart stops kube-apiserver (SIGTERM, then SIGKILL past a timeout) and
// starts it again on the same port with the same flags, keeping etcd. A
// test changes what the flags point at (an encryption configuration, a
// webhook's kubeconfig) by rewriting those files before Restart.
func (cp *ControlPlane) Restart(t testing.TB) {
	t.Helper()
	if err := cp.apiSrv.stop(stopTimeout); err != nil {
		t.Fatalf("k8stest: stop kube-apiserver: %v", err)
	}
	cp.startAPIServer(t)
}

// APIServerLog returns what kube-apiserver wrote so far (every run of it,
// restarts included).
func (cp *ControlPlane) APIServerLog() string { return cp.apiSrv.log() }

// EtcdLog returns what etcd wrote so far.
func (cp *ControlPlane) EtcdLog() string { return cp.etcd.log() }

// KubectlResult is what one kubectl run printed and returned.
type KubectlResult struct {
	Args           []string
	Stdout, Stderr string
	Code           int
}

func (r KubectlResult) String() string {
	return fmt.Sprintf("kubectl %s -> exit %d\nstdout:\n%s\nstderr:\n%s", strings.Join(r.Args, " "), r.Code, r.Stdout, r.Stderr)
}

// RunKubectl runs kubectl with stdin and args, as the admin when token is
// empty and otherwise with --token=token and no client certificate, and
// returns what happened, whatever the exit code.
func (cp *ControlPlane) RunKubectl(t testing.TB, token, stdin string, args ...string) KubectlResult {
	t.Helper()
	full := []string{"--kubeconfig=" + cp.AdminKubeconfig}
	if token != "" {
		full = []string{"--kubeconfig=" + cp.tokenConfig, "--token=" + token}
	}
	full = append(full, args...)
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(cp.bin, "kubectl"), full...)
	cmd.Env = append(os.Environ(), "KUBECONFIG=", "KUBERC=off", "HOME="+cp.Dir)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	res := KubectlResult{Args: args, Stdout: stdout.String(), Stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		t.Fatalf("k8stest: kubectl %v did not finish within %s\n%s", args, cmdTimeout, res)
	case err == nil:
	case errors.As(err, &ee):
		res.Code = ee.ExitCode()
	default:
		t.Fatalf("k8stest: run kubectl %v: %v", args, err)
	}
	return res
}

// Kubectl runs kubectl as the admin and returns its standard output,
// failing t (with kube-apiserver's last log lines) unless it exits 0.
func (cp *ControlPlane) Kubectl(t testing.TB, args ...string) string {
	t.Helper()
	return cp.mustKubectl(t, "", args...)
}

// KubectlToken runs kubectl with --token=token (no client certificate)
// and returns its standard output, failing t unless it exits 0.
func (cp *ControlPlane) KubectlToken(t testing.TB, token string, args ...string) string {
	t.Helper()
	if token == "" {
		t.Fatal("k8stest: KubectlToken with an empty token")
	}
	return cp.mustKubectl(t, token, args...)
}

func (cp *ControlPlane) mustKubectl(t testing.TB, token string, args ...string) string {
	t.Helper()
	r := cp.RunKubectl(t, token, "", args...)
	if r.Code != 0 {
		t.Fatalf("k8stest: want exit 0:\n%s", r)
	}
	return r.Stdout
}

// EtcdGet returns the raw value stored under key in etcd (what
// kube-apiserver wrote: with encryption at rest, the ciphertext), or nil
// when there is no such key. Kubernetes objects live under
// /registry/<resource>/<namespace>/<name>.
func (cp *ControlPlane) EtcdGet(t testing.TB, key string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := cp.etcdctl(ctx, "get", key, "--write-out=json")
	if err != nil {
		t.Fatalf("k8stest: %v", err)
	}
	var res struct {
		KVs []struct {
			Key   []byte `json:"key"` // base64 in etcdctl's JSON, as []byte decodes it
			Value []byte `json:"value"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("k8stest: etcdctl get %s: decode %q: %v", key, out, err)
	}
	for _, kv := range res.KVs {
		if string(kv.Key) == key {
			if kv.Value == nil {
				return []byte{}
			}
			return kv.Value
		}
	}
	return nil
}

// etcdctl runs etcdctl against cp's etcd and returns its standard output.
func (cp *ControlPlane) etcdctl(ctx context.Context, args ...string) ([]byte, error) {
	full := append([]string{"--endpoints=" + cp.EtcdURL, "--dial-timeout=5s", "--command-timeout=20s"}, args...)
	cmd := exec.CommandContext(ctx, filepath.Join(cp.bin, "etcdctl"), full...)
	cmd.Env = append(os.Environ(), "ETCDCTL_API=3")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("etcdctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

// freePort returns a TCP port free on 127.0.0.1 now. Another process may
// take it before it is bound: the callers start again on that error.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("k8stest: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitReady polls ready until it succeeds, the process exits or
// readyTimeout passes.
func waitReady(p *proc, ready func(context.Context) error) error {
	deadline := time.Now().Add(readyTimeout)
	var err error
	for {
		if p.exited() {
			return fmt.Errorf("%s exited: %v", p.name, p.waitErr)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		err = ready(ctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("not ready within %s: %w", readyTimeout, err)
		}
		select {
		case <-p.done:
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// lastLines returns the last n lines of s.
func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// proc is one started program whose output goes to a log file (appended
// to by each run, so a restart keeps the earlier one).
type proc struct {
	name    string
	logPath string
	logFrom int64 // where this run's output starts in the log
	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error // set before done is closed
}

// startProc starts path with args, its output appended to logPath, and
// kills it when t ends.
func startProc(t testing.TB, path, logPath string, env []string, args ...string) (*proc, error) {
	t.Helper()
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open log of %s: %w", filepath.Base(path), err)
	}
	defer logFile.Close()
	from, err := logFile.Seek(0, io.SeekEnd)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", filepath.Base(path), err)
	}
	fmt.Fprintf(logFile, "==== %s %s\n", time.Now().UTC().Format(time.RFC3339), strings.Join(append([]string{path}, args...), " "))
	p := &proc{name: filepath.Base(path), logPath: logPath, logFrom: from, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = logFile, logFile
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(p.kill)
	return p, nil
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for the process to be gone.
func (p *proc) kill() {
	if !p.exited() {
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
	}
	<-p.done
}

// stop sends SIGTERM and waits up to timeout, then kills.
func (p *proc) stop(timeout time.Duration) error {
	if p.exited() {
		return fmt.Errorf("%s had already exited: %v", p.name, p.waitErr)
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("SIGTERM %s: %w", p.name, err)
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		p.kill()
		return fmt.Errorf("%s did not exit within %s of SIGTERM", p.name, timeout)
	}
}

func (p *proc) log() string {
	if p == nil {
		return ""
	}
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return fmt.Sprintf("(read %s: %v)", p.logPath, err)
	}
	return string(b)
}

// ownLog is what this run of the program wrote.
func (p *proc) ownLog() string {
	if l := p.log(); int64(len(l)) >= p.logFrom {
		return l[p.logFrom:]
	}
	return ""
}

// tail is the end of the log, for failure messages.
func (p *proc) tail() string {
	if p == nil {
		return ""
	}
	return fmt.Sprintf("--- last lines of %s (%s):\n%s", p.name, p.logPath, lastLines(p.log(), 60))
}
