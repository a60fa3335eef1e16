package daemon

import (
	"context"
	"slices"
	"strings"
	"testing"

	"github.com/coffer-hsm/coffer/kv"
)

// tenancyEnv adds to identityEnv a second project p2 whose admin is erin
// (uid 1010, no role on p1) and a workload web (uid 1011) admitted to p2
// as reader by a system admin.
type tenancyEnv struct {
	*identityEnv
}

func newTenancyEnv(t *testing.T) *tenancyEnv {
	t.Helper()
	e := newIdentityEnv(t)
	ctx := context.Background()
	if _, err := e.svc.CreateProject(ctx, e.grant(t, ActManageProjects, Resource{}), "p2"); err != nil {
		t.Fatal(err)
	}
	for _, u := range []struct {
		name string
		uid  uint32
		role string
	}{{"erin", 1010, "admin"}, {"web", 1011, "reader"}} {
		if _, err := e.svc.CreateUser(ctx, e.grant(t, ActManageUsers, Resource{}), UserInput{Name: u.name, UnixUIDs: []uint32{u.uid}}); err != nil {
			t.Fatal(err)
		}
		if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p2"}), u.name, u.role); err != nil {
			t.Fatal(err)
		}
	}
	return &tenancyEnv{e}
}

// Admission: only a system admin gives a user its first role on a
// project. A project admin changes roles of its own users only, and a user
// outside its project answers exactly like one that does not exist.
func TestAdmissionIsTheSystemAdmins(t *testing.T) {
	e := newTenancyEnv(t)
	ctx := context.Background()
	alice := e.mustAuthorize(t, uidPrincipal(1001), ActManageRoles, Resource{Project: "p1"}) // admin of p1
	tests := []struct {
		name, user, role string
		g                Grant
		want             string
	}{
		{"project admin admits a foreign workload", "web", "reader", alice, CodeNotFound},
		{"project admin admits another project's admin", "erin", "admin", alice, CodeNotFound},
		{"project admin admits a user without any role", "dave", "reader", alice, CodeNotFound},
		{"project admin, no such user", "nobody", "reader", alice, CodeNotFound},
		{"project admin raises its own reader", "carol", "member", alice, ""},
		{"system admin admits", "dave", "reader", e.grant(t, ActManageRoles, Resource{Project: "p1"}), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := e.svc.SetRole(ctx, tt.g, tt.user, tt.role)
			wantCode(t, err, tt.want)
		})
	}
	// Unknown and invisible users answer alike, word for word.
	_, unknown := e.svc.SetRole(ctx, alice, "nobody", "reader")
	_, foreign := e.svc.SetRole(ctx, alice, "erin", "reader")
	if MessageOf(unknown) != `user "nobody" not found` || MessageOf(foreign) != `user "erin" not found` {
		t.Errorf("answers differ: %q / %q", MessageOf(unknown), MessageOf(foreign))
	}
	err := e.svc.RemoveRole(ctx, alice, "erin", "admin")
	if MessageOf(err) != `user "erin" not found` {
		t.Errorf("removing a foreign user's role: %v", err)
	}
	// Nor can a project admin (or member) issue credentials to a foreign
	// user, or learn from trying whether it exists.
	for _, uid := range []uint32{1001, 1002} {
		cg := e.mustAuthorize(t, uidPrincipal(uid), ActCreateCredential, Resource{Project: "p1"})
		_, _, foreign := e.svc.CreateCredential(ctx, cg, CredentialInput{Type: CredOAuth2, User: "web"})
		_, _, unknown := e.svc.CreateCredential(ctx, cg, CredentialInput{Type: CredOAuth2, User: "nobody"})
		wantCode(t, foreign, CodeNotFound)
		if strings.ReplaceAll(MessageOf(unknown), "nobody", "web") != MessageOf(foreign) {
			t.Errorf("uid %d: a foreign user and an unknown one answer differently: %q / %q", uid, MessageOf(foreign), MessageOf(unknown))
		}
	}
	// A system admin is told what is wrong.
	_, _, err = e.svc.CreateCredential(ctx, e.grant(t, ActCreateCredential, Resource{Project: "p1"}), CredentialInput{Type: CredOAuth2, User: "web"})
	wantCode(t, err, CodeUserNotAdmitted)
}

// Bindings follow roles: a name is scoped by project, so one project can
// neither take nor learn another's delivery names, and a binding delivers
// only while its user holds a role on the secret's project.
func TestDeliveryNamesAreScopedAndFollowRoles(t *testing.T) {
	e := newTenancyEnv(t)
	ctx := context.Background()
	web := uidPrincipal(1011)
	secP1 := e.createSecret(t, "p1", SecretInput{DisplayName: "alpha", Payload: []byte("alpha-payload")})
	secP2 := e.createSecret(t, "p2", SecretInput{DisplayName: "beta", Payload: []byte("beta-payload")})
	alice := e.mustAuthorize(t, uidPrincipal(1001), ActManageBindings, Resource{Secret: secP1.ID})
	erin := e.mustAuthorize(t, uidPrincipal(1010), ActManageBindings, Resource{Secret: secP2.ID})

	// p1's admin cannot bind to web, which p1 was not given.
	_, err := e.svc.CreateBinding(ctx, alice, BindingInput{User: "web", Name: "dbpass"})
	wantCode(t, err, CodeNotFound)
	if _, err := e.svc.CreateBinding(ctx, erin, BindingInput{User: "web", Name: "dbpass"}); err != nil {
		t.Fatalf("p2 binds its own workload: %v", err)
	}
	if d, err := e.svc.Deliver(ctx, web, DeliveryRequest{Name: "dbpass"}); err != nil || string(d.Payload) != "beta-payload" {
		t.Fatalf("web's delivery: %q %v", d.Payload, err)
	}

	// A system admin admits web to p1 too: p1 may bind the same name
	// (no 409 that would reveal p2's binding), and web then names the
	// project it wants.
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "web", "reader"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateBinding(ctx, alice, BindingInput{User: "web", Name: "dbpass"}); err != nil {
		t.Fatalf("p1 binds the same name: %v", err)
	}
	_, err = e.svc.CreateBinding(ctx, alice, BindingInput{User: "web", Name: "dbpass"})
	wantCode(t, err, CodeAlreadyExists)
	_, err = e.svc.Deliver(ctx, web, DeliveryRequest{Name: "dbpass"})
	wantCode(t, err, CodeDeliveryAmbiguous)
	for proj, want := range map[string]string{"p1": "alpha-payload", "p2": "beta-payload"} {
		if d, err := e.svc.Deliver(ctx, web, DeliveryRequest{Name: "dbpass", Project: proj}); err != nil || string(d.Payload) != want {
			t.Errorf("web's delivery from %s: %q %v", proj, d.Payload, err)
		}
	}
	// A token delivers from its own project only.
	_, tok := e.credential(t, "p2", CredentialInput{Type: CredAccessToken, User: "web"})
	if d, err := e.svc.Deliver(ctx, e.bearer(t, tok.Token), DeliveryRequest{Name: "dbpass"}); err != nil || string(d.Payload) != "beta-payload" {
		t.Errorf("web's p2 token: %q %v", d.Payload, err)
	}
	_, err = e.svc.Deliver(ctx, e.bearer(t, tok.Token), DeliveryRequest{Name: "dbpass", Project: "p1"})
	wantCode(t, err, CodeNotFound)

	// Taking web's role on p1 away stops p1's delivery at once, and its
	// binding goes with the role.
	if err := e.svc.RemoveRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "web", "reader"); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Deliver(ctx, web, DeliveryRequest{Name: "dbpass", Project: "p1"})
	wantCode(t, err, CodeNotFound)
	if d, err := e.svc.Deliver(ctx, web, DeliveryRequest{Name: "dbpass"}); err != nil || string(d.Payload) != "beta-payload" {
		t.Errorf("web's delivery after leaving p1: %q %v", d.Payload, err)
	}
	bs, err := e.svc.ListBindings(ctx, e.grant(t, ActReadSecret, Resource{Secret: secP1.ID}))
	if err != nil || len(bs) != 0 {
		t.Errorf("p1's bindings after web left: %+v %v", bs, err)
	}
}

// A binding made while the user held a role stops delivering the moment
// the role is gone, even if the record were left behind (the check is in
// the delivery's own read, not only in the cascade).
func TestDeliveryChecksTheRoleItself(t *testing.T) {
	e := newTenancyEnv(t)
	ctx := context.Background()
	sec := e.createSecret(t, "p2", SecretInput{DisplayName: "beta", Payload: []byte("beta-payload")})
	erin := e.mustAuthorize(t, uidPrincipal(1010), ActManageBindings, Resource{Secret: sec.ID})
	b, err := e.svc.CreateBinding(ctx, erin, BindingInput{User: "web", Name: "dbpass"})
	if err != nil {
		t.Fatal(err)
	}
	// Remove the role record alone, leaving the binding.
	webID := b.UserID
	p2, err := e.svc.findProject(ctx, "p2")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.svc.store.Update(ctx, func(tx *kv.Txn) error { return tx.Delete(tableRoles, roleID(webID, p2.ID)) }); err != nil {
		t.Fatal(err)
	}
	_, err = e.svc.Deliver(ctx, uidPrincipal(1011), DeliveryRequest{Name: "dbpass"})
	wantCode(t, err, CodeNotFound)
}

// A token that is not unrestricted makes no management write, whatever
// its roles; reads and the secret operations of its roles are fine.
func TestRestrictedTokensMakeNoManagementWrites(t *testing.T) {
	e := newTenancyEnv(t)
	_, restricted := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice"})
	_, unrestricted := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "alice", Unrestricted: true})
	sec := e.createSecret(t, "p1", SecretInput{DisplayName: "x", Payload: []byte("x")})
	type call struct {
		a Action
		r Resource
	}
	writes := map[string]call{
		"set a role":        {ActManageRoles, Resource{Project: "p1"}},
		"bind a secret":     {ActManageBindings, Resource{Secret: sec.ID}},
		"save a rule":       {ActManageRules, Resource{}},
		"issue a cred":      {ActCreateCredential, Resource{Project: "p1"}},
		"manage users":      {ActManageUsers, Resource{}},
		"manage HSM keys":   {ActManageKeys, Resource{}},
		"manage projects":   {ActManageProjects, Resource{}},
		"back up the store": {ActBackup, Resource{}},
	}
	reads := map[string]call{
		"create a secret": {ActManageProject, Resource{Project: "p1"}},
		"rotate a secret": {ActManageSecret, Resource{Secret: sec.ID}},
		"read a secret":   {ActReadSecret, Resource{Secret: sec.ID}},
		"list rules":      {ActReadRules, Resource{}},
		"read project":    {ActReadProject, Resource{Project: "p1"}},
	}
	ctx := context.Background()
	for name, c := range writes {
		t.Run("restricted/"+name, func(t *testing.T) {
			_, err := e.svc.Authorize(ctx, e.bearer(t, restricted.Token), c.a, c.r)
			wantCode(t, err, CodeForbidden)
		})
	}
	for name, c := range reads {
		t.Run("restricted/"+name, func(t *testing.T) {
			_, err := e.svc.Authorize(ctx, e.bearer(t, restricted.Token), c.a, c.r)
			wantCode(t, err, "")
		})
	}
	for _, name := range []string{"set a role", "bind a secret", "save a rule", "issue a cred"} {
		t.Run("unrestricted/"+name, func(t *testing.T) {
			c := writes[name]
			_, err := e.svc.Authorize(ctx, e.bearer(t, unrestricted.Token), c.a, c.r)
			wantCode(t, err, "")
		})
	}
	// Every management action is in the table, and the table says so.
	for a, info := range actions {
		if info.management != a.management() {
			t.Errorf("%s: management() disagrees with the table", a)
		}
	}
}

// A token sees nothing of its user beyond its own project.
func TestTokenSeesItsUserInItsProjectOnly(t *testing.T) {
	e := newTenancyEnv(t)
	ctx := context.Background()
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "web", "member"); err != nil {
		t.Fatal(err)
	}
	_, tok := e.credential(t, "p2", CredentialInput{Type: CredAccessToken, User: "web"})
	g := e.mustAuthorize(t, e.bearer(t, tok.Token), ActReadUser, Resource{User: "web"})
	u, err := e.svc.GetUser(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if len(u.Roles) != 1 || u.Roles[0].Project != "p2" || len(u.UnixUIDs) != 0 {
		t.Errorf("token's own-user read: roles %+v uids %v", u.Roles, u.UnixUIDs)
	}
	// The user itself, by its uid, sees all of it.
	u, err = e.svc.GetUser(ctx, e.mustAuthorize(t, uidPrincipal(1011), ActReadUser, Resource{User: "web"}))
	if err != nil || len(u.Roles) != 2 || !slices.Equal(u.UnixUIDs, []uint32{1011}) {
		t.Errorf("own read by uid: %+v %v", u, err)
	}
}

// A list's cursor is the id of a record the caller was shown, never of
// one in another project; unknown and invisible users answer alike.
func TestListCursorsStayInTheProject(t *testing.T) {
	e := newTenancyEnv(t)
	ctx := context.Background()
	if _, err := e.svc.SetRole(ctx, e.grant(t, ActManageRoles, Resource{Project: "p1"}), "web", "member"); err != nil {
		t.Fatal(err)
	}
	var p2IDs []string
	for range 3 {
		c, _ := e.credential(t, "p2", CredentialInput{Type: CredAccessToken, User: "web"})
		p2IDs = append(p2IDs, c.ID)
	}
	mine, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "web"})
	reader := e.mustAuthorize(t, uidPrincipal(1003), ActReadProject, Resource{Project: "p1"}) // carol
	var seen []string
	page := Page{Limit: 1}
	for i := 0; i < 10; i++ {
		cs, next, err := e.svc.ListCredentials(ctx, reader, CredentialFilter{User: "web"}, page)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range cs {
			seen = append(seen, c.ID)
		}
		if slices.Contains(p2IDs, next) {
			t.Fatalf("cursor %s is a credential of p2", next)
		}
		if next == "" {
			break
		}
		page.After = next
	}
	if !slices.Equal(seen, []string{mine.ID}) {
		t.Errorf("listed %v, want only %s", seen, mine.ID)
	}
	unknown, _, errU := e.svc.ListCredentials(ctx, reader, CredentialFilter{User: "nobody"}, Page{})
	foreign, _, errF := e.svc.ListCredentials(ctx, reader, CredentialFilter{User: "erin"}, Page{})
	if errU != nil || errF != nil || len(unknown) != 0 || len(foreign) != 0 {
		t.Errorf("unknown user: %v %v; foreign user: %v %v", unknown, errU, foreign, errF)
	}
}

// Introspection and /v1/authorize count failures into the same limiter as
// every other token check.
func TestEveryTokenCheckIsRateLimited(t *testing.T) {
	for _, tt := range []struct {
		name  string
		check func(e *tenancyEnv, ctx context.Context) error
	}{
		{"introspect", func(e *tenancyEnv, ctx context.Context) error {
			_, err := e.svc.Introspect(ctx, "cft_garbage")
			return err
		}},
		{"authorize", func(e *tenancyEnv, ctx context.Context) error {
			_, err := e.svc.AuthorizeCall(ctx, Call{Token: "cft_garbage", Service: "svc", Method: "GET", Path: "/"})
			return err
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			e := newTenancyEnv(t)
			ctx := WithPrincipal(context.Background(), uidPrincipal(5555))
			var last error
			for range DefaultAuthFailBurst + 1 {
				last = tt.check(e, ctx)
			}
			wantCode(t, last, CodeRateLimited)
			// Another caller is not held back.
			wantCode(t, tt.check(e, WithPrincipal(context.Background(), uidPrincipal(5556))), "")
		})
	}
}
