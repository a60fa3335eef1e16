package e2e

// Fair share of the API socket's connection slots: one uid holding all the
// connections it can does not keep root or another workload waiting.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The test binary plays the other uids of TestFairShareOneUIDCannotStarve
// (run as them, it acts and exits before TestMain):
//   - fairHoldEnv=socket|N: open N connections, each making one request
//     and kept open, idle, then one in four with half of a second request
//     sent; print what happened ("held=H refused=R unanswered=U") and keep
//     them until stdin closes.
//   - fairGetEnv=socket|path: GET path once on a new connection and print
//     "status=S ms=M body=HEX".
const (
	fairHoldEnv = "COFFER_E2E_FAIR_HOLD"
	fairGetEnv  = "COFFER_E2E_FAIR_GET"
)

func init() {
	if spec := os.Getenv(fairHoldEnv); spec != "" {
		sock, n, _ := strings.Cut(spec, "|")
		count, err := strconv.Atoi(n)
		if err != nil {
			fmt.Fprintln(os.Stderr, "hold:", err)
			os.Exit(2)
		}
		holdConnections(sock, count)
		os.Exit(0)
	}
	if spec := os.Getenv(fairGetEnv); spec != "" {
		sock, path, _ := strings.Cut(spec, "|")
		timedGet(sock, path)
		os.Exit(0)
	}
}

// holdConnections is the holder's part (see fairHoldEnv).
func holdConnections(sock string, n int) {
	var (
		mu                        sync.Mutex
		kept, idle                []net.Conn
		held, refused, unanswered int
		other                     []string
		wg                        sync.WaitGroup
		work                      = make(chan int)
	)
	for range 16 {
		wg.Go(func() {
			for range work {
				c, err := net.DialTimeout("unix", sock, 5*time.Second)
				if err != nil {
					mu.Lock()
					other = append(other, "dial: "+err.Error())
					mu.Unlock()
					continue
				}
				io.WriteString(c, "GET /v1/status HTTP/1.1\r\nHost: coffer\r\n\r\n")
				c.SetReadDeadline(time.Now().Add(time.Second))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				var body []byte
				if err == nil {
					body, err = io.ReadAll(resp.Body)
				}
				c.SetReadDeadline(time.Time{})
				mu.Lock()
				switch {
				case err != nil:
					// Not answered (waiting in the backlog): kept too.
					unanswered++
					kept = append(kept, c)
				case resp.StatusCode == http.StatusTooManyRequests && strings.Contains(string(body), `"error":"too_many_connections"`):
					refused++
					c.Close()
				case resp.Close:
					other = append(other, fmt.Sprintf("%d %s", resp.StatusCode, body))
					c.Close()
				default:
					held++
					kept = append(kept, c)
					idle = append(idle, c)
				}
				mu.Unlock()
			}
		})
	}
	for i := range n {
		work <- i
	}
	close(work)
	wg.Wait()
	// Half of a next request on one in four, sent last: the server's
	// header timeout (5 s) cuts those off, and not before the others
	// measure.
	for i, c := range idle {
		if i%4 == 0 {
			io.WriteString(c, "GET /v1/sta")
		}
	}
	fmt.Printf("held=%d refused=%d unanswered=%d other=%q\n", held, refused, unanswered, other)
	io.Copy(io.Discard, os.Stdin)
	for _, c := range kept {
		c.Close()
	}
}

// timedGet is the victim's part (see fairGetEnv).
func timedGet(sock, path string) {
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	start := time.Now()
	resp, err := c.Get("http://coffer" + path)
	if err != nil {
		fmt.Printf("status=0 ms=%d body= err=%q\n", time.Since(start).Milliseconds(), err.Error())
		return
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	ms := time.Since(start).Milliseconds()
	if err != nil {
		fmt.Printf("status=0 ms=%d body= err=%q\n", ms, err.Error())
		return
	}
	fmt.Printf("status=%d ms=%d body=%s\n", resp.StatusCode, ms, hex.EncodeToString(body))
}

// runAs runs the test binary bin as uid with env and returns its output.
// (It may run outside the test's goroutine: it does not fail the test.)
func runAs(bin string, uid uint32, env ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin)
	cmd.Env = cleanEnv(env...)
	cmd.Dir = os.TempDir()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: uid}}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("run %s as uid %d: %w\n%s", bin, uid, err, errb.String())
	}
	return out.String(), nil
}

// TestFairShareOneUIDCannotStarveOthers: uid 4242 opens 300 connections to
// the API socket (more than the socket's 256) and keeps every one it is
// given, idle after a request or with half a request sent. It gets its
// share (32) and a 429 for each one beyond; meanwhile a workload's
// delivery (uid 4343, bound) and root's status are answered within a
// second. The refusals are logged once, with their count.
func TestFairShareOneUIDCannotStarveOthers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the holder and the workload as other uids")
	}
	t.Parallel()
	pub := publicDir(t)
	helper := filepath.Join(pub, "e2e.test")
	copyFile(t, os.Args[0], helper, 0o755)
	sock := filepath.Join(pub, "c.sock")
	d := startDaemon(t, workDir(t), "--socket", sock, "--socket-mode", "0666")

	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "victim", "kind": "workload", "unix_uids": []int{4343}}, http.StatusCreated, nil)
	d.setRole(t, "default", "victim", "reader")
	payload, _ := binaryPayload("FAIRSHARE-")
	sec := d.createSecret(t, "default", "victim-secret", payload, nil)
	d.bind(t, sec.ID, map[string]string{"user": "victim", "name": "dbpass"})

	type answer struct {
		status int
		took   time.Duration
		body   []byte
		err    string
	}
	deliver := func() answer {
		out, err := runAs(helper, 4343, fairGetEnv+"="+sock+"|/v1/deliver/dbpass")
		if err != nil {
			return answer{err: err.Error()}
		}
		var a answer
		var ms int64
		var hexBody string
		fields := strings.Fields(out)
		for _, f := range fields {
			k, v, _ := strings.Cut(f, "=")
			switch k {
			case "status":
				a.status, _ = strconv.Atoi(v)
			case "ms":
				ms, _ = strconv.ParseInt(v, 10, 64)
			case "body":
				hexBody = v
			}
		}
		if i := strings.Index(out, "err="); i >= 0 {
			a.err = strings.TrimSpace(out[i+4:])
		}
		a.took = time.Duration(ms) * time.Millisecond
		a.body, _ = hex.DecodeString(hexBody)
		return a
	}
	rootStatus := func() answer {
		start := time.Now()
		res, err := d.do("GET", "/v1/status", nil, nil)
		if err != nil {
			return answer{took: time.Since(start), err: err.Error()}
		}
		return answer{status: res.status, took: time.Since(start)}
	}
	before, rootBefore := deliver(), rootStatus()
	if before.status != http.StatusOK || !bytes.Equal(before.body, payload) || rootBefore.status != http.StatusOK {
		t.Fatalf("before the hold: delivery %d %q (%s), root's status %d (%s)", before.status, before.body, before.err, rootBefore.status, rootBefore.err)
	}

	// The holder.
	hold := exec.Command(helper)
	hold.Env = cleanEnv(fairHoldEnv + "=" + sock + "|300")
	hold.Dir = os.TempDir()
	hold.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 4242, Gid: 4242}}
	stdin, err := hold.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := hold.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var holdErr bytes.Buffer
	hold.Stderr = &holdErr
	if err := hold.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		done := make(chan error, 1)
		go func() { done <- hold.Wait() }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			hold.Process.Kill()
			<-done
		}
	}()
	line := make(chan string, 1)
	go func() {
		l, _ := bufio.NewReader(stdout).ReadString('\n')
		line <- l
	}()
	var summary string
	select {
	case summary = <-line:
	case <-time.After(90 * time.Second):
		t.Fatalf("the holder did not finish opening its connections\n%s", holdErr.String())
	}
	var held, refused, unanswered int
	if _, err := fmt.Sscanf(summary, "held=%d refused=%d unanswered=%d", &held, &refused, &unanswered); err != nil {
		t.Fatalf("holder printed %q (%v)\n%s", summary, err, holdErr.String())
	}
	t.Logf("the holder (uid 4242): %s", strings.TrimSpace(summary))

	// While it holds them: the workload and root, within a second.
	var during, rootDuring answer
	var both sync.WaitGroup
	both.Go(func() { during = deliver() })
	both.Go(func() { rootDuring = rootStatus() })
	both.Wait()
	t.Logf("workload's delivery: %s before the hold, %s during it; root's status: %s before, %s during",
		before.took, during.took, rootBefore.took.Round(time.Millisecond), rootDuring.took.Round(time.Millisecond))
	if during.status != http.StatusOK || !bytes.Equal(during.body, payload) || during.took > time.Second {
		t.Errorf("the workload's delivery during the hold: status %d in %s (%s), want 200 with its payload within 1 s", during.status, during.took, during.err)
	}
	if rootDuring.status != http.StatusOK || rootDuring.took > time.Second {
		t.Errorf("root's status during the hold: status %d in %s (%s), want 200 within 1 s", rootDuring.status, rootDuring.took, rootDuring.err)
	}
	if held != 32 || refused != 300-32 || unanswered != 0 {
		t.Errorf("the holder kept %d connections, was refused %d and left unanswered on %d; want 32 (its share), 268 refused with 429 too_many_connections, none unanswered", held, refused, unanswered)
	}

	stdin.Close()
	d.Stop(t)
	log := d.stderr.String()
	lines := logLines(log, "refusing connections", `caller="unix uid=4242 `)
	if len(lines) < 1 || len(lines) > 2 {
		t.Errorf("%d log lines about refusing uid 4242, want one per 10 s (1 or 2)\n%s", len(lines), logTail(log, 20))
	}
	total := 0
	for _, l := range lines {
		if i := strings.Index(l, "refused_since_last_line="); i >= 0 {
			n, _ := strconv.Atoi(strings.Fields(l[i+len("refused_since_last_line="):])[0])
			total += n
		}
	}
	if total < 1 || total > refused {
		t.Errorf("the log lines count %d refusals, the holder saw %d\n%s", total, refused, strings.Join(lines, "\n"))
	}
	if len(logLines(log, "refusing connections", `caller="unix uid=0 `)) > 0 || len(logLines(log, "refusing connections", `caller="unix uid=4343 `)) > 0 {
		t.Errorf("root or the workload was refused\n%s", logTail(log, 20))
	}
}
