package daemon

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
	"github.com/coffer-hsm/coffer/metrics"
)

// The metrics state counts bearer-cache hits and misses, failed
// authentications, records, and what expires within the warning window.
func TestMetricsStateCounters(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	soon := time.Now().Add(time.Hour)
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "carol", ExpiresAt: &soon})
	e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "carol"}) // no expiry
	before := e.svc.MetricsState(ctx)

	for range 3 {
		if _, err := e.svc.Authenticate(ctx, anonPrincipal, iss.Token); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := e.svc.Authenticate(ctx, anonPrincipal, iss.Token+"x"); err == nil {
		t.Fatal("a wrong token authenticated")
	}
	st := e.svc.MetricsState(ctx)
	if hits := st.BearerCacheHits - before.BearerCacheHits; hits < 2 {
		t.Errorf("bearer cache hits +%d, want at least 2 (the second and third check)", hits)
	}
	if misses := st.BearerCacheMisses - before.BearerCacheMisses; misses < 1 {
		t.Errorf("bearer cache misses +%d, want at least 1", misses)
	}
	if n := st.AuthFailures - before.AuthFailures; n != 1 {
		t.Errorf("auth failures +%d, want 1", n)
	}
	if st.ExpiringCredentials != 1 || st.ExpiringSecrets != 0 {
		t.Errorf("expiring = %d credentials, %d secrets; want 1, 0", st.ExpiringCredentials, st.ExpiringSecrets)
	}
	if st.Records["project"] != 2 || st.Records["credential"] != 2 || st.Records["secret"] != 1 {
		t.Errorf("records = %v, want 2 projects (default, p1), 2 credentials, 1 secret", st.Records)
	}
	if !st.HSMUp || !st.StoreUp || st.StoreState != "ok" || !st.AuditUp {
		t.Errorf("health in the state: %+v", st)
	}
	if st.KEKRemaining != 0 {
		t.Errorf("KEK re-wrap remaining = %d, want 0", st.KEKRemaining)
	}
}

// recordingObserver keeps the operations it was told of.
type recordingObserver struct {
	mu      sync.Mutex
	ops     []string
	errs    []string
	commits int
}

func (o *recordingObserver) ObserveHSM(op string, _ time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.ops = append(o.ops, op)
	if err != nil {
		o.errs = append(o.errs, op)
	}
}

func (o *recordingObserver) ObserveCommit(time.Duration, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.commits++
}

// The Observer is told of each HSM operation, failed ones included, and
// of each write transaction.
func TestObserverSeesHSMOperationsAndCommits(t *testing.T) {
	ctx := context.Background()
	store, err := kv.Open(ctx, kv.Options{Dir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), GCInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	keys := newFakeKeys()
	obs := &recordingObserver{}
	svc, err := New(ctx, Config{Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil)), Observer: obs}, keys, store)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	g, err := svc.Authorize(ctx, rootPrincipal, ActManageProject, Resource{Project: "default"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := svc.CreateSecret(ctx, g, SecretInput{DisplayName: "s", Payload: []byte("p")}); err != nil {
		t.Fatal(err)
	}
	keys.setFail(errors.New("token gone"))
	if _, err := svc.CreateSecret(ctx, g, SecretInput{DisplayName: "s2", Payload: []byte("p")}); err == nil {
		t.Fatal("a seal with a failing HSM worked")
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if n := countOf(obs.ops, metrics.OpSeal); n != 2 {
		t.Errorf("seals observed: %d, want 2 (ops %v)", n, obs.ops)
	}
	if !slices.Contains(obs.errs, metrics.OpSeal) {
		t.Errorf("the failed seal was not observed as an error (errors %v)", obs.errs)
	}
	if obs.commits < 1 {
		t.Errorf("commits observed: %d, want at least 1", obs.commits)
	}
}

func countOf(s []string, v string) int {
	n := 0
	for _, x := range s {
		if x == v {
			n++
		}
	}
	return n
}

// Who may read metrics and see counts: system admins and Unix callers in
// the metrics group, never a token, never another channel.
func TestMetricsReaders(t *testing.T) {
	e := newIdentityEnv(t)
	gid := uint32(4343)
	e.svc.metricsGID = &gid
	e.svc.groups.lookup = func(uid uint32) ([]uint32, error) {
		if uid == 1700 {
			return []uint32{4343}, nil // a supplementary member
		}
		return nil, nil
	}
	_, iss := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
	tokenPrincipal, err := e.svc.Authenticate(context.Background(), rootPrincipal, iss.Token)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		p    Principal
		want bool
	}{
		{"root", rootPrincipal, true},
		{"primary group", Principal{Channel: ChannelUnix, HasCred: true, UID: 1600, GID: 4343}, true},
		{"supplementary group", Principal{Channel: ChannelUnix, HasCred: true, UID: 1700, GID: 1700}, true},
		{"a bound user", Principal{Channel: ChannelUnix, HasCred: true, UID: 1001, GID: 1001}, false},
		{"anonymous uid", userPrincipal, false},
		{"vsock guest", vsockGuest, false},
		{"vsock guest claiming the gid", Principal{Channel: ChannelVsock, CID: 42, GID: 4343}, false},
		{"admin's token on root's connection", tokenPrincipal, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := e.svc.Authorize(context.Background(), tt.p, ActReadMetrics, Resource{})
			if (err == nil) != tt.want {
				t.Fatalf("ActReadMetrics: err %v, want allowed=%v", err, tt.want)
			}
			if err == nil {
				if err := e.svc.ReadMetrics(context.Background(), g); err != nil {
					t.Fatal(err)
				}
			}
			g, err = e.svc.Authorize(context.Background(), tt.p, ActReadStatus, Resource{})
			if err != nil {
				return // a token outside its rules; the matrix covers it
			}
			st, err := e.svc.Status(context.Background(), g)
			if err != nil {
				t.Fatal(err)
			}
			if got := st.Counts != (Counts{}); got != tt.want {
				t.Errorf("status counts shown = %v, want %v (%+v)", got, tt.want, st.Counts)
			}
		})
	}
}
