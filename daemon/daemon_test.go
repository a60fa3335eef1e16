package daemon

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/hsm"
	"github.com/coffer-hsm/coffer/kv"
)

func TestAuthorize(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "x", Payload: []byte("p")})
	missing := newID()
	tests := []struct {
		name string
		p    Principal
		a    Action
		r    Resource
		want string
	}{
		{"status anyone", anonPrincipal, ActReadStatus, Resource{}, ""},
		{"status vsock", vsockGuest, ActReadStatus, Resource{}, ""},
		{"projects root", rootPrincipal, ActManageProjects, Resource{}, ""},
		{"projects user", userPrincipal, ActManageProjects, Resource{}, CodeForbidden},
		{"projects anonymous", anonPrincipal, ActManageProjects, Resource{}, CodeForbidden},
		{"projects vsock", vsockGuest, ActManageProjects, Resource{}, CodeForbidden},
		{"manage default root", rootPrincipal, ActManageProject, Resource{Project: DefaultProject}, ""},
		{"manage default user", userPrincipal, ActManageProject, Resource{Project: DefaultProject}, CodeForbidden},
		{"manage missing project root", rootPrincipal, ActManageProject, Resource{Project: "nope"}, CodeForbidden},
		{"manage missing project user", userPrincipal, ActManageProject, Resource{Project: "nope"}, CodeForbidden},
		{"manage invalid project name", rootPrincipal, ActManageProject, Resource{Project: "../x"}, CodeForbidden},
		{"read project root", rootPrincipal, ActReadProject, Resource{Project: DefaultProject}, ""},
		{"read project anonymous", anonPrincipal, ActReadProject, Resource{Project: DefaultProject}, CodeForbidden},
		{"read secret root", rootPrincipal, ActReadSecret, Resource{Secret: sec.ID}, ""},
		{"read secret user", userPrincipal, ActReadSecret, Resource{Secret: sec.ID}, CodeForbidden},
		{"read missing secret root", rootPrincipal, ActReadSecret, Resource{Secret: missing}, CodeNotFound},
		{"read missing secret user", userPrincipal, ActReadSecret, Resource{Secret: missing}, CodeForbidden},
		{"read malformed secret id root", rootPrincipal, ActReadSecret, Resource{Secret: "a/b"}, CodeNotFound},
		{"manage secret root", rootPrincipal, ActManageSecret, Resource{Secret: sec.ID}, ""},
		{"manage secret vsock", vsockGuest, ActManageSecret, Resource{Secret: sec.ID}, CodeForbidden},
		{"unknown action", rootPrincipal, Action(99), Resource{}, CodeForbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.Authorize(ctx, tt.p, tt.a, tt.r)
			wantCode(t, err, tt.want)
		})
	}
	if !strings.Contains(e.logs.String(), `msg=denied`) {
		t.Error("denials are not logged")
	}
}

func TestAdminGroup(t *testing.T) {
	e := newEnv(t)
	gid := uint32(4242)
	e.svc.adminGID = &gid
	e.svc.groups.lookup = func(uid uint32) ([]uint32, error) {
		if uid == 1001 {
			return []uint32{10, 4242}, nil
		}
		return []uint32{10}, nil
	}
	tests := []struct {
		name string
		p    Principal
		want bool
	}{
		{"root", rootPrincipal, true},
		{"primary group", Principal{Channel: ChannelUnix, HasCred: true, UID: 1000, GID: 4242}, true},
		{"supplementary group", Principal{Channel: ChannelUnix, HasCred: true, UID: 1001, GID: 1001}, true},
		{"other user", Principal{Channel: ChannelUnix, HasCred: true, UID: 1002, GID: 1002}, false},
		{"no credentials", Principal{Channel: ChannelUnix, UID: 0}, false},
		{"vsock", Principal{Channel: ChannelVsock, CID: 0}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := e.svc.isSystemAdmin(tt.p); got != tt.want {
				t.Fatalf("isSystemAdmin = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestZeroGrantAllowsNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var g Grant
	_, err := e.svc.CreateSecret(ctx, g, SecretInput{DisplayName: "x", Payload: []byte("p")})
	wantCode(t, err, CodeForbidden)
	_, err = e.svc.CreateProject(ctx, g, "p1")
	wantCode(t, err, CodeForbidden)
	_, err = e.svc.GetSecret(ctx, g)
	wantCode(t, err, CodeForbidden)
	wantCode(t, e.svc.DeleteSecret(ctx, g), CodeForbidden)
	// A grant for one action does not do another.
	read := e.grant(t, ActReadProject, Resource{Project: DefaultProject})
	_, err = e.svc.CreateSecret(ctx, read, SecretInput{DisplayName: "x", Payload: []byte("p")})
	wantCode(t, err, CodeForbidden)
}

func TestCreateSecretValidation(t *testing.T) {
	e := newEnv(t)
	past := time.Now().Add(-time.Minute)
	future := time.Now().Add(time.Hour)
	tests := []struct {
		name string
		in   SecretInput
		want string
	}{
		{"ok", SecretInput{DisplayName: "Acme AWS provisioner", Payload: []byte("s3cr3t")}, ""},
		{"ok with key values and expiry", SecretInput{DisplayName: "x", Payload: []byte("p"), KeyValues: map[string]string{"role_arn": "arn"}, ExpiresAt: &future}, ""},
		{"empty display name", SecretInput{DisplayName: "", Payload: []byte("p")}, CodeInvalidDisplayName},
		{"whitespace display name", SecretInput{DisplayName: " \t\n", Payload: []byte("p")}, CodeInvalidDisplayName},
		{"control character", SecretInput{DisplayName: "a\x00b", Payload: []byte("p")}, CodeInvalidDisplayName},
		{"long display name", SecretInput{DisplayName: strings.Repeat("a", 257), Payload: []byte("p")}, CodeInvalidDisplayName},
		{"invalid utf8", SecretInput{DisplayName: "\xff", Payload: []byte("p")}, CodeInvalidDisplayName},
		{"empty payload", SecretInput{DisplayName: "x", Payload: nil}, CodeInvalidPayload},
		{"huge payload", SecretInput{DisplayName: "x", Payload: make([]byte, MaxPayload+1)}, CodeInvalidPayload},
		{"bad key", SecretInput{DisplayName: "x", Payload: []byte("p"), KeyValues: map[string]string{"a b": "v"}}, CodeInvalidKeyValues},
		{"empty key", SecretInput{DisplayName: "x", Payload: []byte("p"), KeyValues: map[string]string{"": "v"}}, CodeInvalidKeyValues},
		{"past expiry", SecretInput{DisplayName: "x", Payload: []byte("p"), ExpiresAt: &past}, CodeInvalidExpiry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := countSecrets(t, e)
			g := e.grant(t, ActManageProject, Resource{Project: DefaultProject})
			s, err := e.svc.CreateSecret(context.Background(), g, tt.in)
			wantCode(t, err, tt.want)
			after := countSecrets(t, e)
			if tt.want != "" && after != before {
				t.Fatalf("a refused create wrote a record: %d -> %d", before, after)
			}
			if tt.want == "" && (s.Version != 1 || s.Status != StatusActive || s.Project != DefaultProject) {
				t.Fatalf("projection = %+v", s)
			}
		})
	}
}

func countSecrets(t *testing.T, e *testEnv) int {
	t.Helper()
	var n int
	err := e.store.View(context.Background(), func(tx *kv.Txn) error {
		var err error
		n, err = tx.Count(tableSecrets, kv.Query{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// unsealed returns what the store holds sealed for a secret.
func unsealed(t *testing.T, e *testEnv, id string) (string, map[string]string) {
	t.Helper()
	var rec secretRecord
	var blob sealedRecord
	err := e.store.View(context.Background(), func(tx *kv.Txn) error {
		if err := tx.Get(tableSecrets, id, &rec); err != nil {
			return err
		}
		return tx.Get(tableSealed, id, &blob)
	})
	if err != nil {
		t.Fatal(err)
	}
	plain, payload, kvs, err := e.svc.open(context.Background(), rec, blob)
	if err != nil {
		t.Fatal(err)
	}
	defer clear(plain)
	return string(payload), kvs
}

func TestSecretLifecycle(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	payload := []byte("s3cr3t")
	sec := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "Acme", Payload: payload, KeyValues: map[string]string{"role_arn": "arn:x"}})
	if !bytes.Equal(payload, make([]byte, len(payload))) {
		t.Error("the caller's payload buffer was not zeroed after sealing")
	}
	if p, kvs := unsealed(t, e, sec.ID); p != "s3cr3t" || kvs["role_arn"] != "arn:x" {
		t.Fatalf("sealed content = %q %v", p, kvs)
	}

	manage := e.grant(t, ActManageSecret, Resource{Secret: sec.ID})
	// Rotate without key_values keeps them.
	r1, err := e.svc.RotateSecret(ctx, manage, RotateInput{Payload: []byte("v2")})
	wantCode(t, err, "")
	if r1.Version != 2 || r1.RotatedAt == nil {
		t.Fatalf("after rotate: %+v", r1)
	}
	if p, kvs := unsealed(t, e, sec.ID); p != "v2" || kvs["role_arn"] != "arn:x" {
		t.Fatalf("after rotate sealed content = %q %v", p, kvs)
	}
	// CAS.
	one, two := 1, 2
	_, err = e.svc.RotateSecret(ctx, manage, RotateInput{Payload: []byte("v3"), CAS: &one})
	wantCode(t, err, CodeVersionConflict)
	r2, err := e.svc.RotateSecret(ctx, manage, RotateInput{Payload: []byte("v3"), CAS: &two, KeyValues: map[string]string{}})
	wantCode(t, err, "")
	if r2.Version != 3 {
		t.Fatalf("version = %d", r2.Version)
	}
	if p, kvs := unsealed(t, e, sec.ID); p != "v3" || len(kvs) != 0 {
		t.Fatalf("after clearing key_values: %q %v", p, kvs)
	}
	zero := 0
	_, err = e.svc.RotateSecret(ctx, manage, RotateInput{Payload: []byte("v4"), CAS: &zero})
	wantCode(t, err, CodeInvalidArgument)
	_, err = e.svc.RotateSecret(ctx, manage, RotateInput{})
	wantCode(t, err, CodeInvalidPayload)

	// Revoke destroys the ciphertext; twice is fine; rotate is refused.
	rv, err := e.svc.RevokeSecret(ctx, manage)
	wantCode(t, err, "")
	if rv.Status != StatusRevoked || rv.RevokedAt == nil {
		t.Fatalf("after revoke: %+v", rv)
	}
	err = e.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableSealed, sec.ID, &sealedRecord{}) })
	if !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("sealed record after revoke: %v", err)
	}
	_, err = e.svc.RevokeSecret(ctx, manage)
	wantCode(t, err, "")
	_, err = e.svc.RotateSecret(ctx, manage, RotateInput{Payload: []byte("v5")})
	wantCode(t, err, CodeSecretRevoked)
	got, err := e.svc.GetSecret(ctx, e.grant(t, ActReadSecret, Resource{Secret: sec.ID}))
	wantCode(t, err, "")
	if got.Status != StatusRevoked || got.Version != 3 {
		t.Fatalf("get after revoke: %+v", got)
	}

	wantCode(t, e.svc.DeleteSecret(ctx, manage), "")
	_, err = e.svc.Authorize(ctx, rootPrincipal, ActReadSecret, Resource{Secret: sec.ID})
	wantCode(t, err, CodeNotFound)
	wantCode(t, e.svc.DeleteSecret(ctx, manage), CodeNotFound)
}

func TestExpiredStatus(t *testing.T) {
	e := newEnv(t)
	exp := time.Now().Add(time.Hour)
	sec := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "x", Payload: []byte("p"), ExpiresAt: &exp})
	if sec.Status != StatusActive {
		t.Fatalf("status = %s", sec.Status)
	}
	e.svc.now = func() time.Time { return exp.Add(time.Second) }
	got, err := e.svc.GetSecret(context.Background(), e.grant(t, ActReadSecret, Resource{Secret: sec.ID}))
	wantCode(t, err, "")
	if got.Status != StatusExpired {
		t.Fatalf("status = %s, want expired", got.Status)
	}
}

func TestSealedDataIsBoundToItsRecord(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	a := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "a", Payload: []byte("payload-a")})
	b := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "b", Payload: []byte("payload-b")})
	// Move a's envelope onto b's record.
	err := e.store.Update(ctx, func(tx *kv.Txn) error {
		var blob sealedRecord
		if err := tx.Get(tableSealed, a.ID, &blob); err != nil {
			return err
		}
		return tx.Put(tableSealed, b.ID, blob)
	})
	if err != nil {
		t.Fatal(err)
	}
	var rec secretRecord
	var blob sealedRecord
	e.store.View(ctx, func(tx *kv.Txn) error {
		tx.Get(tableSecrets, b.ID, &rec)
		return tx.Get(tableSealed, b.ID, &blob)
	})
	if _, _, _, err := e.svc.open(ctx, rec, blob); err == nil {
		t.Fatal("a ciphertext moved to another record opened")
	}
	// An old version's envelope does not open as the next version.
	rec.Version++
	blob.Version++
	if _, _, _, err := e.svc.open(ctx, rec, blob); err == nil {
		t.Fatal("a ciphertext opened under another version")
	}
}

func TestHSMFailureIsUnavailableAndWritesNothing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "x", Payload: []byte("p"), KeyValues: map[string]string{"k": "v"}})
	e.keys.setFail(errFakeHSM)
	_, err := e.svc.CreateSecret(ctx, e.grant(t, ActManageProject, Resource{Project: DefaultProject}), SecretInput{DisplayName: "y", Payload: []byte("p")})
	wantCode(t, err, CodeHSMUnavailable)
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("class: %v", err)
	}
	if MessageOf(err) != "the HSM is unavailable" {
		t.Fatalf("message = %q", MessageOf(err))
	}
	_, err = e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte("v2")})
	wantCode(t, err, CodeHSMUnavailable)
	// Metadata reads go on working.
	got, err := e.svc.GetSecret(ctx, e.grant(t, ActReadSecret, Resource{Secret: sec.ID}))
	wantCode(t, err, "")
	if got.Version != 1 {
		t.Fatalf("a failed rotation changed the version: %d", got.Version)
	}
	if n := countSecrets(t, e); n != 1 {
		t.Fatalf("secrets = %d", n)
	}
	st, err := e.svc.Status(ctx, e.grant(t, ActReadStatus, Resource{}))
	wantCode(t, err, "")
	if st.HSM.Healthy || !strings.Contains(st.HSM.Error, "CKR_DEVICE_REMOVED") || !st.Store.Healthy {
		t.Fatalf("status = %+v", st)
	}
}

func TestProjects(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	admin := e.grant(t, ActManageProjects, Resource{})
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"ok", "team-a", ""},
		{"dots and underscores", "a.b_c-1", ""},
		{"duplicate", "team-a", CodeAlreadyExists},
		{"duplicate default", "default", CodeAlreadyExists},
		{"uppercase", "Team", CodeInvalidName},
		{"empty", "", CodeInvalidName},
		{"leading dash", "-a", CodeInvalidName},
		{"trailing dot", "a.", CodeInvalidName},
		{"slash", "a/b", CodeInvalidName},
		{"too long", strings.Repeat("a", 65), CodeInvalidName},
		{"longest", strings.Repeat("a", 64), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.CreateProject(ctx, admin, tt.in)
			wantCode(t, err, tt.want)
		})
	}
	ps, next, err := e.svc.ListProjects(ctx, admin, Page{})
	wantCode(t, err, "")
	if len(ps) != 4 || next != "" || ps[0].Name != DefaultProject || ps[1].Name != "team-a" {
		t.Fatalf("projects = %+v next=%q", ps, next)
	}
	// By id as well as by name.
	g, err := e.svc.Authorize(ctx, rootPrincipal, ActManageProject, Resource{Project: ps[1].ID})
	wantCode(t, err, "")
	if _, err := e.svc.CreateSecret(ctx, g, SecretInput{DisplayName: "x", Payload: []byte("p")}); err != nil {
		t.Fatal(err)
	}
	wantCode(t, e.svc.DeleteProject(ctx, admin, "team-a"), CodeProjectNotEmpty)
	wantCode(t, e.svc.DeleteProject(ctx, admin, DefaultProject), CodeConflict)
	wantCode(t, e.svc.DeleteProject(ctx, admin, "nope"), CodeNotFound)
	wantCode(t, e.svc.DeleteProject(ctx, admin, "a.b_c-1"), "")
	_, err = e.svc.Authorize(ctx, rootPrincipal, ActReadProject, Resource{Project: "a.b_c-1"})
	wantCode(t, err, CodeForbidden)
	// The name is free again.
	_, err = e.svc.CreateProject(ctx, admin, "a.b_c-1")
	wantCode(t, err, "")
}

func TestPagination(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var ids []string
	for i := range 7 {
		ids = append(ids, e.createSecret(t, DefaultProject, SecretInput{DisplayName: fmt.Sprint("s", i), Payload: []byte("p")}).ID)
	}
	g := e.grant(t, ActReadProject, Resource{Project: DefaultProject})
	var got []string
	page := Page{Limit: 3}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("pagination does not end")
		}
		secs, next, err := e.svc.ListSecrets(ctx, g, SecretFilter{}, page)
		wantCode(t, err, "")
		for _, s := range secs {
			got = append(got, s.ID)
		}
		if next == "" {
			break
		}
		page.After = next
	}
	if fmt.Sprint(got) != fmt.Sprint(ids) {
		t.Fatalf("pages = %v\nwant    %v", got, ids)
	}
	for _, p := range []Page{{Limit: -1}, {Limit: maxPageLimit + 1}, {After: "x"}} {
		_, _, err := e.svc.ListSecrets(ctx, g, SecretFilter{}, p)
		wantCode(t, err, CodeInvalidArgument)
	}
	// Another project's secrets do not show.
	admin := e.grant(t, ActManageProjects, Resource{})
	e.svc.CreateProject(ctx, admin, "other")
	secs, _, err := e.svc.ListSecrets(ctx, e.grant(t, ActReadProject, Resource{Project: "other"}), SecretFilter{}, Page{})
	wantCode(t, err, "")
	if len(secs) != 0 {
		t.Fatalf("other project lists %d secrets", len(secs))
	}
}

func TestConcurrentRotationsAllLand(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "x", Payload: []byte("p")})
	g := e.grant(t, ActManageSecret, Resource{Secret: sec.ID})
	const n = 8
	errs := make(chan error, n)
	for i := range n {
		go func() {
			_, err := e.svc.RotateSecret(ctx, g, RotateInput{Payload: []byte(fmt.Sprint("v", i))})
			errs <- err
		}()
	}
	ok := 0
	for range n {
		if err := <-errs; err == nil {
			ok++
		} else if CodeOf(err) != CodeVersionConflict {
			t.Fatalf("rotate: %v", err)
		}
	}
	got, _ := e.svc.GetSecret(ctx, e.grant(t, ActReadSecret, Resource{Secret: sec.ID}))
	if got.Version != 1+ok {
		t.Fatalf("version %d after %d successful rotations", got.Version, ok)
	}
	if p, _ := unsealed(t, e, sec.ID); !strings.HasPrefix(p, "v") {
		t.Fatalf("current version does not open: %q", p)
	}
}

func TestStatus(t *testing.T) {
	e := newEnv(t)
	e.createSecret(t, DefaultProject, SecretInput{DisplayName: "x", Payload: []byte("p")})
	st, err := e.svc.Status(context.Background(), e.grant(t, ActReadStatus, Resource{}))
	wantCode(t, err, "")
	if st.Version != "test" || !st.HSM.Healthy || !st.Store.Healthy || st.Counts.Projects != 1 || st.Counts.Secrets != 1 || st.HSM.TokenLabel != "fake" {
		t.Fatalf("status = %+v", st)
	}
	if st.HSM.Token == nil || st.HSM.Token.Serial != "0001" || st.HSM.Schemes.KEK != hsm.KEKAESGCM || st.HSM.Schemes.KEKWhy == "" {
		t.Fatalf("admin status HSM = %+v, want the token description and the schemes", st.HSM)
	}
	// The token's description is for admins; the schemes are for anyone.
	g, err := e.svc.Authorize(context.Background(), anonPrincipal, ActReadStatus, Resource{})
	wantCode(t, err, "")
	st, err = e.svc.Status(context.Background(), g)
	wantCode(t, err, "")
	if st.HSM.Token != nil || st.HSM.Schemes.Signing != hsm.SignES256 {
		t.Fatalf("anonymous status HSM = %+v, want no token description, the schemes", st.HSM)
	}
}

func TestNothingSecretInStoreOrLogs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	const payload, value = "PAYLOAD-7f3a9c", "KEYVALUE-51be0d"
	sec := e.createSecret(t, DefaultProject, SecretInput{DisplayName: "x", Payload: []byte(payload), KeyValues: map[string]string{"k": value}})
	if _, err := e.svc.RotateSecret(ctx, e.grant(t, ActManageSecret, Resource{Secret: sec.ID}), RotateInput{Payload: []byte(payload + "-2")}); err != nil {
		t.Fatal(err)
	}
	e.svc.Close()
	for _, s := range []string{payload, value} {
		if strings.Contains(e.logs.String(), s) {
			t.Errorf("log contains %q", s)
		}
	}
	filepath.Walk(e.dir, func(path string, fi os.FileInfo, err error) error {
		if err != nil || fi.IsDir() {
			return err
		}
		b, _ := os.ReadFile(path)
		for _, s := range []string{payload, value} {
			if bytes.Contains(b, []byte(s)) {
				t.Errorf("%s contains %q in the clear", path, s)
			}
		}
		return nil
	})
}

func FuzzDecodePlain(f *testing.F) {
	seed, _ := encodePlain([]byte("payload"), map[string]string{"k": "v"})
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, b []byte) {
		payload, kvs, err := decodePlain(b)
		if err != nil {
			return
		}
		again, err := encodePlain(payload, kvs)
		if err != nil {
			t.Fatal(err)
		}
		p2, kv2, err := decodePlain(again)
		if err != nil || !bytes.Equal(p2, payload) || fmt.Sprint(kv2) != fmt.Sprint(kvs) {
			t.Fatalf("round trip changed %q %v -> %q %v (%v)", payload, kvs, p2, kv2, err)
		}
	})
}

// TestStatusDoesNotQueueBehindARecount holds one caller's recount (the
// count of every record's key, slow on a large or busy store) and checks
// that another caller meanwhile gets the last counts at once, and that
// the caller who recounts sees the write that made the counts stale.
func TestStatusDoesNotQueueBehindARecount(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := e.grant(t, ActReadStatus, Resource{})
	if st, err := e.svc.Status(ctx, g); err != nil || st.Counts.Secrets != 0 {
		t.Fatalf("first status: %+v, %v", st.Counts, err)
	}
	entered, release := make(chan struct{}), make(chan struct{})
	recountHook = func() {
		entered <- struct{}{}
		<-release
	}
	t.Cleanup(func() { recountHook = nil })
	e.createSecret(t, DefaultProject, SecretInput{DisplayName: "x", Payload: []byte("p")})
	counted := make(chan Status, 1)
	go func() {
		st, _ := e.svc.Status(ctx, g)
		counted <- st
	}()
	<-entered
	// Stale again while the recount is under way.
	e.createSecret(t, DefaultProject, SecretInput{DisplayName: "y", Payload: []byte("p")})
	other := make(chan Status, 1)
	go func() {
		st, _ := e.svc.Status(ctx, g)
		other <- st
	}()
	select {
	case st := <-other:
		if st.Counts.Secrets != 0 {
			t.Errorf("a caller during the recount got %d secrets, want the last count (0)", st.Counts.Secrets)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a status call waited for another caller's recount")
	}
	recountHook = nil
	close(release)
	if st := <-counted; st.Counts.Secrets < 1 {
		t.Errorf("the recounting caller got %d secrets, want its own write counted", st.Counts.Secrets)
	}
	if st, err := e.svc.Status(ctx, g); err != nil || st.Counts.Secrets != 2 {
		t.Errorf("status once the recount is over: %+v, %v; want 2 secrets", st.Counts, err)
	}
}

// TestHealthSaysWhenTheHSMCheckHangs: while one caller's HSM check hangs,
// the others are not told the HSM is healthy for longer than probeHung
// (before callers shared the probe, they waited, and an HTTP health
// probe timed out).
func TestHealthSaysWhenTheHSMCheckHangs(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	g := e.grant(t, ActReadHealth, Resource{})
	if h, err := e.svc.Health(ctx, g); err != nil || !h.OK() {
		t.Fatalf("health: %+v, %v", h, err)
	}
	saved := probeHung
	probeHung = 500 * time.Millisecond
	block := make(chan struct{})
	e.keys.blockChecks(block)
	e.svc.probe.mu.Lock()
	e.svc.probe.at = time.Now().Add(-statusProbeEvery) // due
	e.svc.probe.mu.Unlock()
	probing := make(chan struct{})
	go func() {
		defer close(probing)
		e.svc.Health(ctx, g)
	}()
	t.Cleanup(func() {
		close(block)
		<-probing
		probeHung = saved
	})
	for e.svc.probe.checking.Load() == 0 {
		time.Sleep(time.Millisecond)
	}
	if h, _ := e.svc.Health(ctx, g); slices.Contains(h.Failed, PartHSM) {
		t.Errorf("health failed the HSM before its check had hung for %s: %+v", probeHung, h)
	}
	time.Sleep(2 * probeHung)
	if h, _ := e.svc.Health(ctx, g); !slices.Contains(h.Failed, PartHSM) {
		t.Errorf("health while the HSM check hangs: %+v, want the HSM failing", h)
	}
}
