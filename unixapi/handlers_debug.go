package unixapi

import (
	"net/http"
	"runtime"
	"runtime/pprof"
	"strconv"
	"time"

	"github.com/coffer-hsm/coffer/daemon"
)

// maxProfileSeconds bounds a CPU, mutex or block profile request.
const maxProfileSeconds = 60

// debugRoutes serve the Go runtime's profiles to system admins, so that a
// slow or large daemon can be profiled where it runs (go tool pprof reads
// the answers). Profiles hold stacks, counts and sizes, never the contents
// of memory.
func (s *Server) debugRoutes() {
	s.handle("GET /v1/debug/pprof/{profile}", s.debugProfile)
}

// debugProfile is GET /v1/debug/pprof/{profile}:
//
//   - profile?seconds=N: CPU profile over the next N seconds (default 10);
//   - mutex?seconds=N, block?seconds=N: contention sampled over the next N
//     seconds (sampling is off otherwise, as it costs on every lock);
//   - heap, allocs, goroutine, threadcreate: as of now (heap?gc=1 collects
//     first; debug=1 gives text, heap's with the runtime's memory figures).
func (s *Server) debugProfile(w http.ResponseWriter, r *http.Request) error {
	if err := s.systemAdminOnly(r, "profile the daemon"); err != nil {
		return err
	}
	name := r.PathValue("profile")
	q := r.URL.Query()
	debug := 0
	if v := q.Get("debug"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 2 {
			return daemon.Invalid(daemon.CodeInvalidArgument, "debug must be 0, 1 or 2")
		}
		debug = n
	}
	window := func() (time.Duration, error) {
		v := q.Get("seconds")
		if v == "" {
			return 10 * time.Second, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > maxProfileSeconds {
			return 0, daemon.Invalid(daemon.CodeInvalidArgument, "seconds must be a number from 1 to %d", maxProfileSeconds)
		}
		return time.Duration(n) * time.Second, nil
	}
	switch name {
	case "profile", "mutex", "block":
		d, err := window()
		if err != nil {
			return err
		}
		return s.sampledProfile(w, r, name, d, debug)
	case "heap", "allocs", "goroutine", "threadcreate":
		if name == "heap" && q.Get("gc") == "1" {
			runtime.GC()
		}
		w.Header().Set("Content-Type", profileType(debug))
		return pprof.Lookup(name).WriteTo(w, debug)
	}
	return daemon.NotFound("no profile %q; there are profile, heap, allocs, goroutine, threadcreate, mutex and block", name)
}

// sampledProfile records the CPU, mutex or block profile over the next d.
// One at a time: the runtime has one CPU profiler and one sampling rate.
func (s *Server) sampledProfile(w http.ResponseWriter, r *http.Request, name string, d time.Duration, debug int) error {
	if !s.profiling.TryLock() {
		return daemon.Conflict(daemon.CodeConflict, "another profile is being recorded")
	}
	defer s.profiling.Unlock()
	w, r = streaming(w, r, d+10*time.Second)
	wait := func() {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-r.Context().Done():
		}
	}
	switch name {
	case "profile":
		w.Header().Set("Content-Type", profileType(0))
		if err := pprof.StartCPUProfile(w); err != nil {
			return daemon.Conflict(daemon.CodeConflict, "the CPU profiler is busy: %v", err)
		}
		wait()
		pprof.StopCPUProfile()
		return nil
	case "mutex":
		runtime.SetMutexProfileFraction(5)
		wait()
		runtime.SetMutexProfileFraction(0)
	case "block":
		runtime.SetBlockProfileRate(int(10 * time.Microsecond))
		wait()
		runtime.SetBlockProfileRate(0)
	}
	w.Header().Set("Content-Type", profileType(debug))
	return pprof.Lookup(name).WriteTo(w, debug)
}

func profileType(debug int) string {
	if debug > 0 {
		return "text/plain; charset=utf-8"
	}
	return "application/octet-stream"
}
