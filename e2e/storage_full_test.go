package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// defaultFullCycles keeps `make test` short; COFFER_STORAGE_SOAK_CYCLES
// (make storage-soak) asks for more.
const defaultFullCycles = 1

// TestStorageFull puts the state directory on a small tmpfs, fills it
// with another program's file to just above the room coffer keeps free,
// and lets 8 concurrent writers run until they are refused: no crash
// (Badger writes through mappings, where a full tmpfs is a SIGBUS), 507
// store_full answers, status and one journal line saying why, deliveries
// and reads still served, even once the filesystem is filled to ENOSPC;
// then the files go, and writes resume by themselves with every
// acknowledged write there, no restart. Each further cycle (soak) also
// kills the daemon with SIGKILL while full and restarts it.
func TestStorageFull(t *testing.T) {
	requireRoot(t)
	cycles := defaultFullCycles
	if s := os.Getenv("COFFER_STORAGE_SOAK_CYCLES"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("COFFER_STORAGE_SOAK_CYCLES=%q: want a positive number", s)
		}
		cycles = n
	}
	dir := workDir(t)
	state := filepath.Join(dir, ".coffer")
	mountTmpfs(t, state, 192<<20)
	d := startDaemon(t, dir)

	d.mustAPI(t, "POST", "/v1/users", map[string]any{"name": "app", "kind": "workload"}, http.StatusCreated, nil)
	d.setRole(t, "default", "app", "reader")
	tok := d.newCred(t, "default", map[string]any{"type": "access-token", "user": "app"}).Token
	payload, _ := binaryPayload("DELIVERED-WHILE-FULL-")
	bound := d.createSecret(t, "default", "bound", payload, nil)
	d.bind(t, bound.ID, map[string]string{"user": "app", "name": "db"})
	deliver := func(when string) {
		t.Helper()
		if res := d.bearer(t, tok, "GET", "/v1/deliver/db", nil); res.status != http.StatusOK || !bytes.Equal(res.body, payload) {
			t.Errorf("delivery %s: %d %q", when, res.status, res.body)
		}
	}
	acked := map[string]string{bound.ID: "bound"}
	secretPayload := bytes.Repeat([]byte("s"), 2048)

	for cycle := 1; cycle <= cycles; cycle++ {
		reserve := storeStatus(t, d).Store.ReserveBytes
		if reserve < 32<<20 {
			t.Fatalf("status reserve_bytes %d: want the store's reserve (tens of MiB)", reserve)
		}
		// Leave 1 MiB above the reserve: the writers take it.
		ballast(t, filepath.Join(state, "ballast-1"), avail(t, state)-reserve-1<<20)
		start := time.Now()
		got := writers(t, d, 8, secretPayload, "store_full")
		if t.Failed() {
			t.FailNow()
		}
		for id, name := range got {
			acked[id] = name
		}
		t.Logf("cycle %d: %d writes acknowledged in %v until the store was full (reserve %d MiB)", cycle, len(got), time.Since(start).Round(time.Millisecond), reserve>>20)

		// The flush of the memtables the writers filled deletes their
		// preallocated write-ahead logs: room comes back, and rightly
		// ends the full state if it is more than the resume margin.
		// Another program takes that room, so that the store stays just
		// under its reserve for what follows.
		waitFlushed(t, filepath.Join(state, "data"))
		if over := avail(t, state) - storeStatus(t, d).Store.ReserveBytes; over > -2<<20 {
			ballast(t, filepath.Join(state, "ballast-1b"), over+2<<20)
		}
		st := waitStoreState(t, d, "full")
		if st.Store.Healthy || !strings.Contains(st.Store.Error, "free") || st.Store.Since == nil {
			t.Errorf("status while full: %+v, want unhealthy, saying how much is free, and since when", st.Store)
		}
		wantError(t, d.api(t, "POST", "/v1/projects/default/secrets", map[string]any{"display_name": "refused", "payload": b64([]byte("x"))}),
			http.StatusInsufficientStorage, "store_full")
		deliver("while the store is full")
		d.mustAPI(t, "GET", "/v1/secrets/"+bound.ID, nil, http.StatusOK, nil)

		// Another program takes the rest: the filesystem is full. (Not
		// while Badger flushes a memtable the last writes filled: its
		// table, written through a mapping, needs the reserve another
		// program would then take; README, When storage fails.)
		waitFlushed(t, filepath.Join(state, "data"))
		ballast(t, filepath.Join(state, "ballast-2"), -1)
		for i := range 20 {
			deliver(fmt.Sprintf("#%d at ENOSPC", i))
		}
		wantError(t, d.api(t, "POST", "/v1/projects/default/secrets", map[string]any{"display_name": "refused", "payload": b64([]byte("x"))}),
			http.StatusInsufficientStorage, "store_full")

		if cycle > 1 {
			// Soak: a kill -9 while full, then a restart once there is
			// room to replay.
			d.Kill(t)
			os.Remove(filepath.Join(state, "ballast-2"))
			d = startDaemon(t, dir)
			waitStoreState(t, d, "full")
			deliver("after a restart while full")
		}
		for _, b := range []string{"ballast-1", "ballast-1b", "ballast-2"} {
			os.Remove(filepath.Join(state, b))
		}
		waitStoreState(t, d, "ok")
		d.createSecret(t, "default", fmt.Sprintf("after cycle %d", cycle), []byte("room again"), nil)
		checkAcked(t, d, acked)
		if _, err := os.Stat(filepath.Join(state, "data", "kept")); err == nil {
			t.Errorf("cycle %d: the store kept files aside", cycle)
		}
		if cycle == 1 {
			log := d.stderr.String()
			if n := len(logLines(log, "short of room")); n != 1 {
				t.Errorf("%d journal lines saying the store is short of room, want 1:\n%s", n, logTail(log, 30))
			}
			if n := len(logLines(log, "accepts writes again")); n != 1 {
				t.Errorf("%d journal lines saying writes resume, want 1", n)
			}
			if n := len(logLines(log, "requests failed")); n > 3 {
				t.Errorf("%d journal lines about refused requests, want them rate-limited (at most 3)", n)
			}
		}
	}
	noCrashIn(t, "filling the filesystem", d.stderr.String())
}
