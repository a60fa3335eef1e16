package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/coffer-hsm/coffer/client"
)

// profiler fetches the daemon's runtime profiles into dir (-profile): a
// CPU profile over each measurement window and heap profiles after load.
// A nil profiler does nothing.
type profiler struct {
	dir  string
	logf func(string, ...any)
}

func newProfiler(dir string, logf func(string, ...any)) (*profiler, error) {
	if dir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("-profile: %w", err)
	}
	return &profiler{dir: dir, logf: logf}, nil
}

// cpuDuring records a CPU profile of the daemon on socket from warm after
// now for dur (whole seconds, at least one), named after the scenario and
// client count. Wait on the returned channel after the measurement.
func (p *profiler) cpuDuring(ctx context.Context, socket, name string, c int, warm, dur time.Duration) <-chan struct{} {
	done := make(chan struct{})
	if p == nil {
		close(done)
		return done
	}
	go func() {
		defer close(done)
		select {
		case <-time.After(warm):
		case <-ctx.Done():
			return
		}
		p.fetch(ctx, socket, "profile", dur, fmt.Sprintf("%s-c%d.cpu.pprof", name, c))
	}()
	return done
}

// heap writes the daemon's heap profile (after a collection) and its
// memory figures as text, under the given label.
func (p *profiler) heap(ctx context.Context, socket, label string) {
	if p == nil {
		return
	}
	p.fetch(ctx, socket, "heap", 0, "heap-"+label+".pprof")
	path := filepath.Join(p.dir, "heap-"+label+".txt")
	f, err := os.Create(path)
	if err != nil {
		p.logf("profile: %v", err)
		return
	}
	defer f.Close()
	// The text form ends with the runtime's MemStats: heap in use,
	// idle, released to the OS.
	if err := client.NewClient(socket).ProfileText(ctx, "heap", f); err != nil {
		p.logf("profile heap text: %v", err)
	}
}

func (p *profiler) fetch(ctx context.Context, socket, name string, window time.Duration, file string) {
	path := filepath.Join(p.dir, file)
	f, err := os.Create(path)
	if err != nil {
		p.logf("profile: %v", err)
		return
	}
	defer f.Close()
	if err := client.NewClient(socket).Profile(ctx, name, window, f); err != nil {
		p.logf("profile %s: %v", file, err)
		return
	}
	p.logf("profile: wrote %s", path)
}
