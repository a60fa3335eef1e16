package daemon

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

// caseVariant is id with the case of its first letter flipped: another
// token id that lowercases to the same Kubernetes user name.
func caseVariant(t *testing.T, id string) string {
	t.Helper()
	for i := range len(id) {
		switch c := id[i]; {
		case c >= 'a' && c <= 'z':
			return id[:i] + strings.ToUpper(id[i:i+1]) + id[i+1:]
		case c >= 'A' && c <= 'Z':
			return id[:i] + strings.ToLower(id[i:i+1]) + id[i+1:]
		}
	}
	t.Skipf("token id %s has no letter", id)
	return ""
}

// clashingTokens makes newToken draw, for its first clashes calls, tokens
// whose id is a case variant of one of ids (in turn), then real ones. It
// returns the number of draws so far.
func clashingTokens(t *testing.T, clashes int, ids ...string) func() int {
	t.Helper()
	draws := 0
	newToken = func(prefix string) (string, ParsedToken, error) {
		plain, tok, err := NewToken(prefix)
		if draws < clashes {
			tok.ID = caseVariant(t, ids[draws%len(ids)])
		}
		draws++
		return plain, tok, err
	}
	t.Cleanup(func() { newToken = NewToken })
	return func() int { return draws }
}

// A token id drawn for a credential (made or rotated) that lowercases like
// another credential's token id is not used: another is drawn, so the two
// credentials keep two Kubernetes user names, each naming its own
// credential in a SubjectAccessReview. Draws that keep clashing end in an
// error, not in a shared name.
func TestK8sLowerIDClashDrawsAnother(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	a, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "a"})
	creds := []Credential{a}
	for _, typ := range []string{CredAccessToken, CredAuthToken, CredOAuth2} {
		draws := clashingTokens(t, 2, a.TokenID)
		b, iss := e.credential(t, "p1", CredentialInput{Type: typ, User: "bob", Name: "b-" + typ})
		if draws() != 3 {
			t.Errorf("%s: %d draws, want 3 (two clashes, then a fresh id)", typ, draws())
		}
		if strings.EqualFold(b.TokenID, a.TokenID) {
			t.Fatalf("%s: token id %s lowercases like %s", typ, b.TokenID, a.TokenID)
		}
		creds = append(creds, b)
		if typ == CredAccessToken {
			r, err := e.svc.ReviewToken(ctx, kubeAPIServer, iss.Token, nil)
			if err != nil || !r.Authenticated || r.Username != K8sUserName(b.TokenID) || r.UID != b.ID {
				t.Fatalf("%s: TokenReview %+v %v", typ, r, err)
			}
		}
	}
	// Each name maps back to its own credential (uid given: another
	// credential's name would get no opinion).
	for _, c := range creds {
		r, err := e.svc.ReviewAccess(ctx, kubeAPIServer, AccessReview{User: K8sUserName(c.TokenID), UID: c.ID, Verb: "get", Path: "/api"})
		if err != nil || r.Denied || !strings.Contains(r.Reason, "credential "+c.Name+" allows it") {
			t.Fatalf("SubjectAccessReview of %s: %+v %v", c.Name, r, err)
		}
	}

	// Rotation draws its new id the same way.
	other, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "other"})
	draws := clashingTokens(t, 1, a.TokenID)
	rot, _, err := e.svc.RotateCredential(ctx, e.grant(t, ActManageCredential, Resource{Credential: other.ID}), CredentialRotate{Grace: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if draws() != 2 || strings.EqualFold(rot.TokenID, a.TokenID) {
		t.Fatalf("rotation: %d draws, token id %s (a's is %s)", draws(), rot.TokenID, a.TokenID)
	}
	// Even the token a rotation retired, in its grace, keeps its name.
	draws = clashingTokens(t, 1, other.TokenID)
	c, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "c"})
	if draws() != 2 || strings.EqualFold(c.TokenID, other.TokenID) {
		t.Fatalf("against a retired token: %d draws, token id %s (retired %s)", draws(), c.TokenID, other.TokenID)
	}

	// Draws that never stop clashing: no credential, an error.
	clashingTokens(t, maxTokenIDDraws, a.TokenID)
	_, _, err = e.svc.CreateCredential(ctx, e.grant(t, ActCreateCredential, Resource{Project: "p1"}), CredentialInput{Type: CredAccessToken, User: "bob", Name: "never"})
	if err == nil {
		t.Fatal("a credential was made although every id drawn clashed")
	}
	newToken = NewToken
	if _, _, err := e.svc.CreateCredential(ctx, e.grant(t, ActCreateCredential, Resource{Project: "p1"}), CredentialInput{Type: CredAccessToken, User: "bob", Name: "never"}); err != nil {
		t.Fatalf("the failed creation left something behind: %v", err)
	}
}

// The user name is the token id in lowercase; a SubjectAccessReview of
// the id in any other case is no coffer user.
func TestK8sUserNameLowercase(t *testing.T) {
	if got := K8sUserName("nFYyVdtg8K1aDujwk3YFh1"); got != "service-account-nfyyvdtg8k1adujwk3yfh1" {
		t.Fatalf("K8sUserName: %s", got)
	}
}

// A store of schema version 2 (credential tokens without their lowercased
// id index) is migrated at start, in batches: every auth, access and
// OAuth2 token gains the entry, session tokens do not, and the user names
// of credentials made before the migration map back to them.
func TestMigrateTokensLowerIDIndex(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	at, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "at"})
	auth, authIss := e.credential(t, "p1", CredentialInput{Type: CredAuthToken, User: "alice", Name: "auth"})
	oc, _ := e.credential(t, "p1", CredentialInput{Type: CredOAuth2, User: "carol", Name: "oc"})
	if _, _, err := e.svc.Login(WithPrincipal(ctx, anonPrincipal), authIss.Token); err != nil {
		t.Fatal(err)
	}
	const extra = migrateBatch + 10
	// Write the tokens as version 2 did (the owner index only), and go
	// back to version 2.
	if err := e.store.Update(ctx, func(tx *kv.Txn) error {
		for range extra {
			_, tok, err := NewToken(PrefixAuthToken)
			if err != nil {
				return err
			}
			if err := tx.Put(tableTokens, tok.ID, tokenRecord{Prefix: PrefixAuthToken, Owner: newID()}); err != nil {
				return err
			}
		}
		var ids []string
		var recs []tokenRecord
		if err := tx.List(tableTokens, kv.Query{}, func(id string, decode func(any) error) error {
			var rec tokenRecord
			ids = append(ids, id)
			recs = append(recs, rec)
			return decode(&recs[len(recs)-1])
		}); err != nil {
			return err
		}
		for i, id := range ids {
			if err := tx.Put(tableTokens, id, recs[i], kv.Index{Name: indexOwner, Value: recs[i].Owner}); err != nil {
				return err
			}
		}
		return tx.Put(tableSchema, schemaID, schemaRecord{Version: 2})
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Credential{at, auth, oc} {
		if r, err := e.svc.ReviewAccess(ctx, kubeAPIServer, AccessReview{User: K8sUserName(c.TokenID), Groups: []string{"coffer:p1:member"}, Verb: "get", Path: "/api"}); err != nil || !r.Denied {
			t.Fatalf("before the migration, %s's name should map to nothing: %+v %v", c.Name, r, err)
		}
	}
	if err := e.svc.migrate(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.store.View(ctx, func(tx *kv.Txn) error {
		var v schemaRecord
		if err := tx.Get(tableSchema, schemaID, &v); err != nil || v.Version != schemaCurrent {
			return fmt.Errorf("schema %+v %v", v, err)
		}
		return tx.List(tableTokens, kv.Query{}, func(id string, decode func(any) error) error {
			var rec tokenRecord
			if err := decode(&rec); err != nil {
				return err
			}
			got, err := tx.LookupUnique(tableTokens, indexLowerID, strings.ToLower(id))
			switch {
			case lowerIndexed(rec.Prefix) && (err != nil || got != id):
				return fmt.Errorf("%s token %s by its lowercased id: %q %v", rec.Prefix, id, got, err)
			case !lowerIndexed(rec.Prefix) && !errors.Is(err, kv.ErrNotFound):
				return fmt.Errorf("%s token %s indexed by its lowercased id: %q %v", rec.Prefix, id, got, err)
			}
			return nil
		})
	}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []Credential{at, auth, oc} {
		r, err := e.svc.ReviewAccess(ctx, kubeAPIServer, AccessReview{User: K8sUserName(c.TokenID), UID: c.ID, Verb: "get", Path: "/api"})
		if err != nil || r.Denied || !strings.Contains(r.Reason, "credential "+c.Name+" allows it") {
			t.Fatalf("after the migration, %s: %+v %v", c.Name, r, err)
		}
	}
	migrations := 0
	for _, ev := range e.changes(t) {
		if ev.Action == "store.migrate" {
			migrations++
		}
	}
	if migrations < 2 {
		t.Errorf("%d store.migrate changes, want one per batch (at least 2 for %d tokens)", migrations, extra)
	}
}

// Two stored credential token ids that lowercase alike stop the migration
// (naming both) rather than share a user name; the store stays at its
// version.
func TestMigrateTokensLowerIDClash(t *testing.T) {
	e := newIdentityEnv(t)
	ctx := context.Background()
	at, _ := e.credential(t, "p1", CredentialInput{Type: CredAccessToken, User: "bob", Name: "at"})
	twin := caseVariant(t, at.TokenID)
	if err := e.store.Update(ctx, func(tx *kv.Txn) error {
		var rec tokenRecord
		if err := tx.Get(tableTokens, at.TokenID, &rec); err != nil {
			return err
		}
		if err := tx.Put(tableTokens, at.TokenID, rec, kv.Index{Name: indexOwner, Value: rec.Owner}); err != nil {
			return err
		}
		if err := tx.Put(tableTokens, twin, tokenRecord{Prefix: PrefixAuthToken, Owner: newID()}, kv.Index{Name: indexOwner, Value: "x"}); err != nil {
			return err
		}
		return tx.Put(tableSchema, schemaID, schemaRecord{Version: 2})
	}); err != nil {
		t.Fatal(err)
	}
	err := e.svc.migrate(ctx)
	if err == nil || !strings.Contains(err.Error(), at.TokenID) || !strings.Contains(err.Error(), twin) {
		t.Fatalf("migrate: %v, want an error naming %s and %s", err, at.TokenID, twin)
	}
	var v schemaRecord
	if err := e.store.View(ctx, func(tx *kv.Txn) error { return tx.Get(tableSchema, schemaID, &v) }); err != nil || v.Version != 2 {
		t.Fatalf("schema after a failed migration: %+v %v", v, err)
	}
}
