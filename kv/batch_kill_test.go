package kv

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
)

const (
	concHelperDirEnv = "COFFER_KV_CONC_HELPER_DIR"
	concWriters      = 16
)

// TestHelperProcessConcurrent is not a test: TestKill9DurabilityConcurrent
// runs the test binary with concHelperDirEnv set, and this writes records
// from concWriters goroutines, so commits are batched, until it is killed.
func TestHelperProcessConcurrent(t *testing.T) {
	dir := os.Getenv(concHelperDirEnv)
	if dir == "" {
		t.Skip("helper process for TestKill9DurabilityConcurrent")
	}
	ctx := context.Background()
	s, err := Open(ctx, Options{Dir: dir, Logger: quietLogger()})
	if err != nil {
		fmt.Println("open failed:", err)
		os.Exit(2)
	}
	var out sync.Mutex
	var wg sync.WaitGroup
	for w := range concWriters {
		wg.Go(func() {
			for i := 0; i < 100000; i++ {
				id := fmt.Sprintf("%02d-%06d", w, i)
				err := s.Update(ctx, func(tx *Txn) error {
					return tx.Put("records", id, user{N: i}, Index{Name: "id", Value: id, Unique: true})
				})
				out.Lock()
				if err != nil {
					fmt.Println("update failed:", err)
					os.Exit(2)
				}
				fmt.Printf("acked %s\n", id)
				out.Unlock()
			}
		})
	}
	wg.Wait()
	os.Exit(3) // never killed: the parent fails
}

// TestKill9DurabilityConcurrent kills a process writing from many goroutines
// and checks that every acknowledged Update survived, and that every record
// that survived has its index entry (a batch is all or nothing).
func TestKill9DurabilityConcurrent(t *testing.T) {
	if testing.Short() {
		t.Skip("spawns a subprocess")
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcessConcurrent$")
	cmd.Env = append(os.Environ(), concHelperDirEnv+"="+dir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	const killAfter = 1000
	var acked []string
	killed := false
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		id, ok := strings.CutPrefix(sc.Text(), "acked ")
		if !ok {
			t.Logf("helper: %s", sc.Text())
			continue
		}
		acked = append(acked, id)
		if !killed && len(acked) >= killAfter {
			if err := cmd.Process.Kill(); err != nil { // SIGKILL
				t.Fatal(err)
			}
			killed = true
		}
	}
	_ = cmd.Wait()
	if !killed {
		t.Fatalf("helper exited (%v) after %d acks before being killed", cmd.ProcessState, len(acked))
	}
	t.Logf("helper killed after %d acknowledged writes", len(acked))

	s := openTest(t, dir)
	for _, id := range acked {
		if _, err := get(t, s, "records", id); err != nil {
			t.Fatalf("acknowledged record %s after kill -9: %v", id, err)
		}
	}
	ids, _ := list(t, s, "records", Query{})
	if len(ids) < len(acked) {
		t.Fatalf("%d records, want >= %d", len(ids), len(acked))
	}
	for _, id := range ids {
		if got, err := lookup(t, s, "records", "id", id); err != nil || got != id {
			t.Fatalf("index of record %s after kill -9: %q, %v", id, got, err)
		}
	}
}
