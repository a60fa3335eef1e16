package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// floodEnv makes the test binary a flooder: floodEnv=socket|seconds sends,
// from 16 connections at once for that long, requests that are all
// refused — bad tokens to /v1/authorize, /oauth2/introspect and as
// bearers, and GET /v1/users, which an anonymous uid may not — and prints
// "requests=N" and the count of each status.
const floodEnv = "COFFER_E2E_FLOOD"

func init() {
	if spec := os.Getenv(floodEnv); spec != "" {
		sock, secs, _ := strings.Cut(spec, "|")
		n, err := strconv.Atoi(secs)
		if err != nil {
			fmt.Fprintln(os.Stderr, "flood:", err)
			os.Exit(2)
		}
		flood(sock, time.Duration(n)*time.Second)
		os.Exit(0)
	}
}

func flood(sock string, d time.Duration) {
	c := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var dl net.Dialer
			return dl.DialContext(ctx, "unix", sock)
		},
		MaxIdleConnsPerHost: 16,
	}}
	bad := "cft_" + strings.Repeat("A", 70)
	reqs := []func() (*http.Request, error){
		func() (*http.Request, error) {
			return http.NewRequest("POST", "http://coffer/v1/authorize", strings.NewReader(`{"token":"`+bad+`","service":"s","method":"GET","path":"/"}`))
		},
		func() (*http.Request, error) {
			r, err := http.NewRequest("POST", "http://coffer/oauth2/introspect", strings.NewReader(url.Values{"token": {bad}}.Encode()))
			if err == nil {
				r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			}
			return r, err
		},
		func() (*http.Request, error) { return http.NewRequest("GET", "http://coffer/v1/users", nil) },
		func() (*http.Request, error) {
			r, err := http.NewRequest("GET", "http://coffer/v1/credentials", nil)
			if err == nil {
				r.Header.Set("Authorization", "Bearer "+bad)
			}
			return r, err
		},
	}
	var mu sync.Mutex
	statuses := map[int]int{}
	var total atomic.Int64
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline); i++ {
				r, err := reqs[i%len(reqs)]()
				if err != nil {
					continue
				}
				resp, err := c.Do(r)
				if err != nil {
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				total.Add(1)
				mu.Lock()
				statuses[resp.StatusCode]++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	fmt.Printf("requests=%d", total.Load())
	for code, n := range statuses {
		fmt.Printf(" %d=%d", code, n)
	}
	fmt.Println()
}

// dirSize is the bytes of the regular files under dir.
func dirSize(t *testing.T, dir string) int64 {
	t.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if e.Type().IsRegular() {
			info, err := e.Info()
			if err != nil {
				return err
			}
			n += info.Size()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// Finding 5: an anonymous uid flooding refused requests costs bytes per
// second, not per request — in the state directory (the audit log) and in
// the daemon's log (the audit journal copy) — and its failed token checks
// run into 429 on every endpoint that checks a token.
func TestAnonymousFloodCostsBytesPerSecond(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to flood as another uid (setpriv)")
	}
	t.Parallel()
	pub := publicDir(t)
	helper := filepath.Join(pub, "e2e.test")
	copyFile(t, os.Args[0], helper, 0o755)
	sock := filepath.Join(pub, "c.sock")
	d := startDaemon(t, workDir(t), "--socket", sock, "--socket-mode", "0666")
	// Let the start-up writes settle, then measure.
	time.Sleep(1500 * time.Millisecond)
	stateBefore, logBefore := dirSize(t, d.stateDir), len(d.stderr.String())

	const uid = "4777"
	cmd := exec.Command("setpriv", "--reuid="+uid, "--regid="+uid, "--clear-groups", "--", helper)
	cmd.Env = cleanEnv(floodEnv + "=" + sock + "|4")
	cmd.Dir = os.TempDir()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("flood: %v\n%s", err, errb.String())
	}
	report := strings.TrimSpace(out.String())
	t.Logf("flood as uid %s for 4 s: %s", uid, report)
	var requests int
	fmt.Sscanf(report, "requests=%d", &requests)
	if requests < 2000 {
		t.Fatalf("the flood sent only %d requests: %s", requests, report)
	}
	if !strings.Contains(report, " 429=") {
		t.Errorf("no 429 in the flood: %s", report)
	}
	// The coalesced denials are written at the end of their interval.
	time.Sleep(2500 * time.Millisecond)
	grownState := dirSize(t, d.stateDir) - stateBefore
	grownLog := int64(len(d.stderr.String()) - logBefore)
	t.Logf("state directory grew %d bytes, the daemon's log %d bytes, for %d requests", grownState, grownLog, requests)
	const limit = 2 << 20
	if grownState > limit || grownLog > limit {
		t.Errorf("a 4-second flood of %d refused requests grew the state directory by %d bytes and the log by %d; want under %d each", requests, grownState, grownLog, limit)
	}
	// Every refusal is still accounted for: coalesced lines say how many
	// they stand for, and nothing was lost.
	var counted uint64
	lost := false
	for _, e := range d.auditEntriesRaw(t) {
		if e.Action == "audit.lost" {
			lost = true
		}
		if e.Outcome == "denied" {
			counted += 1 + e.Count
		}
	}
	if lost {
		t.Errorf("the audit log lost events during the flood")
	}
	if counted < uint64(requests) {
		t.Errorf("the audit log accounts for %d denials, the flood made %d refused requests", counted, requests)
	}
}
