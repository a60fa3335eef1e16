package daemon

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableTokens = "tokens"
	indexOwner  = "owner"
	// indexLowerID holds, unique, the lowercased public id of every
	// credential token (auth token, access token, OAuth2 client secret):
	// the Kubernetes user name of a credential's tokens is its lowercased
	// token id (k8s_review.go), which must name one credential only.
	indexLowerID = "lower_id"
	// maxTokenIDDraws bounds the ids drawn for one credential token when
	// lowercased ids clash (about 2^-67 for one draw in a store of a
	// million tokens: a clash that persists means something else is wrong).
	maxTokenIDDraws = 8
)

// newToken draws a token; tests replace it to force id clashes.
var newToken = NewToken

// lowerIndexed reports whether tokens of prefix carry indexLowerID: the
// tokens a credential is known by, not those of login sessions.
func lowerIndexed(prefix string) bool {
	switch prefix {
	case PrefixAuthToken, PrefixAccessToken, PrefixOAuth2:
		return true
	}
	return false
}

// tokenIndexes are the index entries of the token id of prefix, for owner.
func tokenIndexes(prefix, id, owner string) []kv.Index {
	ix := []kv.Index{{Name: indexOwner, Value: owner}}
	if lowerIndexed(prefix) {
		ix = append(ix, kv.Index{Name: indexLowerID, Value: strings.ToLower(id), Unique: true})
	}
	return ix
}

// tokenRecord is what is stored of an issued token, under its public id:
// the SHA-256 verifier of its secret part and who it belongs to. A rotated
// token keeps working until NotAfter (the rotation's grace).
type tokenRecord struct {
	Prefix   string     `json:"prefix"`
	Verifier []byte     `json:"verifier"`
	Owner    string     `json:"owner"` // credential or session id
	NotAfter *time.Time `json:"not_after,omitempty"`
}

// issueToken makes a token of the given prefix for owner and stores its
// verifier. It returns the plaintext, to be shown once.
//
// A credential token's id must differ, lowercased, from every other
// credential token's (indexLowerID): an id that clashes is not used (two
// credentials never share a Kubernetes user name); another is drawn, up to
// maxTokenIDDraws times. Every token id of a credential, made or rotated,
// comes from here.
func issueToken(tx *kv.Txn, prefix, owner string) (string, ParsedToken, error) {
	for range maxTokenIDDraws {
		plain, tok, err := newToken(prefix)
		if err != nil {
			return "", ParsedToken{}, err
		}
		if lowerIndexed(prefix) {
			if _, err := tx.LookupUnique(tableTokens, indexLowerID, strings.ToLower(tok.ID)); err == nil {
				continue // clash: draw again
			} else if !errors.Is(err, kv.ErrNotFound) {
				return "", ParsedToken{}, err
			}
		}
		rec := tokenRecord{Prefix: prefix, Verifier: tok.Verifier(), Owner: owner}
		if err := tx.Put(tableTokens, tok.ID, rec, tokenIndexes(prefix, tok.ID, owner)...); err != nil {
			return "", ParsedToken{}, err
		}
		return plain, tok, nil
	}
	return "", ParsedToken{}, fmt.Errorf("no token id without a clash after %d draws", maxTokenIDDraws)
}

// errBadToken is any reason a presented token is not accepted. Callers
// answer all of them with the same 401; the reason goes to the log.
type errBadToken struct{ reason string }

func (e *errBadToken) Error() string { return e.reason }

func badToken(reason string) error { return &errBadToken{reason: reason} }

// checkToken finds a parsed token's record and verifies its secret in
// constant time. It refuses tokens of another kind and rotated tokens past
// their grace.
func checkToken(tx *kv.Txn, tok ParsedToken, now time.Time) (tokenRecord, error) {
	var rec tokenRecord
	if err := tx.Get(tableTokens, tok.ID, &rec); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return rec, badToken("unknown token id")
		}
		return rec, err
	}
	if rec.Prefix != tok.Prefix {
		return rec, badToken("token kind does not match")
	}
	if !tok.Matches(rec.Verifier) {
		return rec, badToken("wrong token secret")
	}
	if rec.NotAfter != nil && !now.Before(*rec.NotAfter) {
		return rec, badToken("rotated token past its grace period")
	}
	return rec, nil
}

// retireTokens ends the tokens of owner: at once, or, for its current
// token, after grace. A token already in a grace (the one before the
// current) ends at once: at most two tokens of an owner are ever valid,
// the current one and, within its grace, the one before it. So a rotation
// rewrites at most one token and deletes at most one (plus any expired
// one the sweep has not reached), however many came before.
func retireTokens(tx *kv.Txn, owner string, now time.Time, grace time.Duration) error {
	var ids []string
	var recs []tokenRecord
	err := tx.List(tableTokens, kv.Query{Index: indexOwner, Value: owner}, func(id string, decode func(any) error) error {
		var rec tokenRecord
		if err := decode(&rec); err != nil {
			return err
		}
		ids, recs = append(ids, id), append(recs, rec)
		return nil
	})
	if err != nil {
		return err
	}
	for i, id := range ids {
		rec := recs[i]
		if grace <= 0 || rec.NotAfter != nil {
			if err := tx.Delete(tableTokens, id); err != nil {
				return err
			}
			continue
		}
		until := now.Add(grace)
		rec.NotAfter = &until
		if err := tx.Put(tableTokens, id, rec, tokenIndexes(rec.Prefix, id, owner)...); err != nil {
			return err
		}
	}
	return nil
}
