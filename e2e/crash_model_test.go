package e2e

// The crash test's model: what each worker asked the daemon for, what the
// daemon acknowledged (a 2xx answer, read whole), and the one request per
// worker that was in flight when the daemon was killed. That request is a
// "maybe" write: either outcome is allowed, and the check after the restart
// finds out which one happened and asserts it is one of the two.

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"

	"github.com/coffer-hsm/coffer/api"
)

const (
	crashProject   = "crash"
	crashChecker   = "crash-checker"
	maxSecretsEach = 8 // live (active or revoked) secrets per worker
	maxCredsEach   = 3
	crashMaxAuthn  = 1_000_000
)

// version is what one version of a secret holds.
type version struct {
	payload []byte
	kvs     map[string]string
}

// hash names a payload in messages without printing it.
func (v version) hash() string {
	sum := sha256.Sum256(v.payload)
	return hex.EncodeToString(sum[:6])
}

type secretModel struct {
	id, name string
	version  int      // the current version
	current  version  // what it holds
	stale    []string // keys of the version before that the current one lacks
	revoked  bool
	bound    bool // the checker has a binding to it
}

// rotated records that s now holds next as version v.
func (s *secretModel) rotated(v int, next version) {
	s.stale = nil
	for k := range s.current.kvs {
		if _, ok := next.kvs[k]; !ok {
			s.stale = append(s.stale, k)
		}
	}
	s.version, s.current = v, next
}

// bindingName is the checker's delivery name for s.
func (s *secretModel) bindingName() string { return "s-" + s.id }

type credModel struct {
	id, name string
	token    string // the current auth token; "" when its answer was lost
	tokenID  string // the current token's public id; "" when unknown
	previous string // the token the last acknowledged rotation retired
	logins   int    // acknowledged authentications since the last rotation
}

type opKind int

const (
	opCreateSecret opKind = iota
	opRotateSecret
	opRevokeSecret
	opDeleteSecret
	opCreateCred
	opRotateCred
	opDeleteCred
	opLogin
	opSetRole
	opRemoveRole
	numOpKinds
)

var opNames = [numOpKinds]string{"secret create", "secret rotate", "secret revoke", "secret delete",
	"credential create", "credential rotate", "credential delete", "login", "role set", "role remove"}

func (k opKind) String() string { return opNames[k] }

// crashOp is one request of a worker.
type crashOp struct {
	kind         opKind
	method, path string
	bearer       string
	body         any
	want         int
	sec          *secretModel
	cred         *credModel
	name         string  // a create's name: how it is found after a crash
	next         version // what a secret create or rotate writes
	role         string  // what a role change leaves: the new role, "" = none
}

func (o *crashOp) String() string {
	switch {
	case o.sec != nil:
		return fmt.Sprintf("%s of %s (v%d)", o.kind, o.sec.id, o.sec.version)
	case o.cred != nil:
		return fmt.Sprintf("%s of %s (%d logins)", o.kind, o.cred.id, o.cred.logins)
	case o.name != "":
		return fmt.Sprintf("%s %s", o.kind, o.name)
	}
	return fmt.Sprintf("%s %q", o.kind, o.role)
}

// crashWorker drives one goroutine's writes. It owns its records, so its
// expectations never depend on another worker's timing.
type crashWorker struct {
	n        int
	rng      *rand.Rand
	user     string // owns the worker's credentials
	roleUser string // whose role on the project the worker changes
	role     string // roleUser's role, "" = none
	secrets  []*secretModel
	creds    []*credModel
	seq      int
	inflight *crashOp // sent, not answered: a maybe write after the kill

	acked   int             // acknowledged writes, all cycles
	byKind  [numOpKinds]int // acknowledged writes per kind
	gone    []string        // secret ids deleted since the last check
	goneCrd []string        // credential ids deleted since the last check
}

func newCrashWorker(n int, seed uint64) *crashWorker {
	return &crashWorker{
		n:        n,
		rng:      rand.New(rand.NewPCG(seed, uint64(n))),
		user:     fmt.Sprintf("crash-w%d", n),
		roleUser: fmt.Sprintf("crash-r%d", n),
	}
}

func (w *crashWorker) newName(what string) string {
	w.seq++
	return fmt.Sprintf("w%d-%s-%d", w.n, what, w.seq)
}

// newVersion is a random payload of 1-2 KiB with random key values, or,
// half the time when prev is given, prev's key values (a rotation that
// sends no key_values keeps them).
func (w *crashWorker) newVersion(prev *version) version {
	p := make([]byte, 1024+w.rng.IntN(1025))
	for i := range p {
		p[i] = byte(w.rng.Uint32())
	}
	v := version{payload: p}
	if prev != nil && w.rng.IntN(2) == 0 {
		v.kvs = prev.kvs
		return v
	}
	v.kvs = map[string]string{"worker": strconv.Itoa(w.n)}
	for range 1 + w.rng.IntN(3) {
		v.kvs["k"+strconv.Itoa(w.rng.IntN(1000))] = strconv.FormatUint(w.rng.Uint64(), 16)
	}
	return v
}

func pick[T any](rng *rand.Rand, xs []T) T { return xs[rng.IntN(len(xs))] }

// next chooses the worker's next request from what it owns.
func (w *crashWorker) next() *crashOp {
	var active, revoked []*secretModel
	for _, s := range w.secrets {
		if s.revoked {
			revoked = append(revoked, s)
		} else {
			active = append(active, s)
		}
	}
	var known []*credModel // credentials whose token we hold
	for _, c := range w.creds {
		if c.token != "" {
			known = append(known, c)
		}
	}
	var weights [numOpKinds]int
	if len(w.secrets) < maxSecretsEach {
		weights[opCreateSecret] = 4
	}
	if len(active) > 0 {
		weights[opRotateSecret] = 5
		weights[opRevokeSecret] = 1
	}
	if len(w.secrets) > 0 {
		weights[opDeleteSecret] = 1
		if len(w.secrets) >= maxSecretsEach || len(revoked) > 0 {
			weights[opDeleteSecret] = 3
		}
	}
	if len(w.creds) < maxCredsEach {
		weights[opCreateCred] = 1
	}
	if len(known) > 0 {
		weights[opRotateCred] = 1
		weights[opLogin] = 4
	}
	if len(w.creds) >= maxCredsEach {
		weights[opDeleteCred] = 1
	}
	weights[opSetRole] = 1
	if w.role != "" {
		weights[opRemoveRole] = 1
	}
	total := 0
	for _, x := range weights {
		total += x
	}
	r := w.rng.IntN(total)
	kind := opKind(0)
	for ; r >= weights[kind]; kind++ {
		r -= weights[kind]
	}

	o := &crashOp{kind: kind}
	switch kind {
	case opCreateSecret:
		o.name, o.next = w.newName("secret"), w.newVersion(nil)
		o.method, o.path, o.want = "POST", "/v1/projects/"+crashProject+"/secrets", http.StatusCreated
		o.body = api.SecretCreateRequest{DisplayName: o.name, Payload: b64(o.next.payload), KeyValues: o.next.kvs}
	case opRotateSecret:
		o.sec = pick(w.rng, active)
		o.next = w.newVersion(&o.sec.current)
		cas := o.sec.version
		body := map[string]any{"payload": b64(o.next.payload), "cas": cas}
		if !sameKVs(o.next.kvs, o.sec.current.kvs) {
			body["key_values"] = o.next.kvs
		}
		o.method, o.path, o.want, o.body = "POST", "/v1/secrets/"+o.sec.id+"/rotate", http.StatusOK, body
	case opRevokeSecret:
		o.sec = pick(w.rng, active)
		o.method, o.path, o.want = "POST", "/v1/secrets/"+o.sec.id+"/revoke", http.StatusOK
	case opDeleteSecret:
		o.sec = pick(w.rng, w.secrets)
		if len(revoked) > 0 && w.rng.IntN(2) == 0 {
			o.sec = pick(w.rng, revoked)
		}
		o.method, o.path, o.want = "DELETE", "/v1/secrets/"+o.sec.id, http.StatusNoContent
	case opCreateCred:
		o.name = w.newName("cred")
		o.method, o.path, o.want = "POST", "/v1/projects/"+crashProject+"/credentials", http.StatusCreated
		o.body = map[string]any{"type": "auth-token", "user": w.user, "name": o.name, "max_authn": crashMaxAuthn}
	case opRotateCred:
		o.cred = pick(w.rng, known)
		o.method, o.path, o.want, o.body = "POST", "/v1/credentials/"+o.cred.id+"/rotate", http.StatusOK, map[string]any{}
	case opDeleteCred:
		o.cred = pick(w.rng, w.creds)
		o.method, o.path, o.want = "DELETE", "/v1/credentials/"+o.cred.id, http.StatusNoContent
	case opLogin:
		o.cred = pick(w.rng, known)
		o.method, o.path, o.want, o.bearer = "POST", "/v1/auth/login", http.StatusCreated, o.cred.token
	case opSetRole:
		o.role = pick(w.rng, []string{"reader", "member", "admin"})
		o.method, o.path, o.want = "PUT", "/v1/projects/"+crashProject+"/roles/"+w.roleUser+"/"+o.role, http.StatusOK
	case opRemoveRole:
		o.method, o.path, o.want = "DELETE", "/v1/projects/"+crashProject+"/roles/"+w.roleUser+"/"+w.role, http.StatusNoContent
	}
	return o
}

func sameKVs(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if bv, ok := b[k]; !ok || bv != v {
			return false
		}
	}
	return true
}

// apply records an acknowledged answer res to o; it returns an error when
// the answer itself is wrong.
func (w *crashWorker) apply(o *crashOp, res apiResp) error {
	w.acked++
	w.byKind[o.kind]++
	switch o.kind {
	case opCreateSecret:
		var s api.Secret
		if err := json.Unmarshal(res.body, &s); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		if s.ID == "" || s.Version != 1 || s.DisplayName != o.name || s.Status != "active" {
			return fmt.Errorf("created %+v, want version 1 of %s, active", s, o.name)
		}
		w.secrets = append(w.secrets, &secretModel{id: s.ID, name: o.name, version: 1, current: o.next})
	case opRotateSecret:
		var s api.Secret
		if err := json.Unmarshal(res.body, &s); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		if s.Version != o.sec.version+1 {
			return fmt.Errorf("rotated to version %d, want %d", s.Version, o.sec.version+1)
		}
		o.sec.rotated(s.Version, o.next)
	case opRevokeSecret:
		o.sec.revoked = true
	case opDeleteSecret:
		w.dropSecret(o.sec)
	case opCreateCred, opRotateCred:
		var c api.Credential
		if err := json.Unmarshal(res.body, &c); err != nil {
			return fmt.Errorf("decode: %w", err)
		}
		if c.Token == "" || c.TokenID == "" {
			return fmt.Errorf("answer without a token")
		}
		if o.kind == opCreateCred {
			w.creds = append(w.creds, &credModel{id: c.ID, name: o.name, token: c.Token, tokenID: c.TokenID})
			break
		}
		// A rotation starts the authentication count again.
		o.cred.previous, o.cred.token, o.cred.tokenID, o.cred.logins = o.cred.token, c.Token, c.TokenID, 0
	case opDeleteCred:
		w.dropCred(o.cred)
	case opLogin:
		o.cred.logins++
	case opSetRole, opRemoveRole:
		w.role = o.role
	}
	return nil
}

func (w *crashWorker) dropSecret(s *secretModel) {
	w.secrets = slices.DeleteFunc(w.secrets, func(x *secretModel) bool { return x == s })
	w.gone = append(w.gone, s.id)
}

func (w *crashWorker) dropCred(c *credModel) {
	w.creds = slices.DeleteFunc(w.creds, func(x *credModel) bool { return x == c })
	w.goneCrd = append(w.goneCrd, c.id)
}
