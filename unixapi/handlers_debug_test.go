package unixapi

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/client"
	"github.com/coffer-hsm/coffer/daemon"
)

func TestDebugProfileRequests(t *testing.T) {
	c, _ := serve(t, &fakeBackend{})
	tests := []struct {
		name, path string
		status     int
		code       string
	}{
		{"unknown profile", "/v1/debug/pprof/cmdline", 404, "not_found"},
		{"seconds not a number", "/v1/debug/pprof/profile?seconds=x", 400, "invalid_argument"},
		{"seconds zero", "/v1/debug/pprof/profile?seconds=0", 400, "invalid_argument"},
		{"seconds too long", "/v1/debug/pprof/mutex?seconds=61", 400, "invalid_argument"},
		{"bad debug", "/v1/debug/pprof/heap?debug=3", 400, "invalid_argument"},
		{"goroutine", "/v1/debug/pprof/goroutine", 200, ""},
		{"heap after a collection", "/v1/debug/pprof/heap?gc=1", 200, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, eb, _ := raw(t, c, "GET", tt.path, "")
			if status != tt.status || eb.Error != tt.code {
				t.Fatalf("got %d %+v, want %d %q", status, eb, tt.status, tt.code)
			}
		})
	}
}

// A profile answer is what go tool pprof reads: a gzipped protobuf.
func TestDebugProfileIsAProfile(t *testing.T) {
	c, _ := serve(t, &fakeBackend{})
	for _, name := range []string{"heap", "allocs", "goroutine", "profile"} {
		var buf bytes.Buffer
		if err := c.Profile(context.Background(), name, time.Second, &buf); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		zr, err := gzip.NewReader(&buf)
		if err != nil {
			t.Fatalf("%s: not gzip: %v", name, err)
		}
		if b, err := io.ReadAll(zr); err != nil || len(b) == 0 {
			t.Fatalf("%s: %d bytes, %v", name, len(b), err)
		}
	}
	var text bytes.Buffer
	if err := c.ProfileText(context.Background(), "heap", &text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "# runtime.MemStats") {
		t.Fatalf("heap?debug=1 lacks the memory figures:\n%.300s", text.String())
	}
}

// The runtime has one CPU profiler: of two sampled profiles asked for at
// once, one is recorded and the other refused, not queued or mixed.
func TestDebugProfileOneAtATime(t *testing.T) {
	c, _ := serve(t, &fakeBackend{})
	var wg sync.WaitGroup
	errs := make([]error, 2)
	for i, name := range []string{"profile", "block"} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// 3 s each: the two overlap unless one starts 3 s late.
			errs[i] = c.Profile(context.Background(), name, 3*time.Second, io.Discard)
		}()
	}
	wg.Wait()
	refused := 0
	for _, err := range errs {
		var ae *client.APIError
		switch {
		case err == nil:
		case errors.As(err, &ae) && ae.Status == http.StatusConflict && ae.Code == daemon.CodeConflict:
			refused++
		default:
			t.Fatalf("profile: %v, want success or 409 conflict", err)
		}
	}
	if refused != 1 {
		t.Fatalf("%d of two overlapping profiles refused (%v), want exactly one", refused, errs)
	}
}

func TestDebugProfileNeedsSystemAdmin(t *testing.T) {
	c, _ := serve(t, &fakeBackend{authErr: daemon.Forbidden("no")})
	status, eb, _ := raw(t, c, "GET", "/v1/debug/pprof/heap", "")
	if status != 403 || eb.Error != "forbidden" || !strings.Contains(eb.Message, "system admins") {
		t.Fatalf("got %d %+v, want 403 forbidden naming system admins", status, eb)
	}
}
