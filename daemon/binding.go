package daemon

import (
	"context"
	"errors"
	"log/slog"
	"regexp"
	"strconv"
	"sync"
	"time"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/kv"
)

const (
	tableBindings = "bindings"
	indexSecret   = "secret"
	indexUnitCred = "unit_credential"
	// A user binding's name is unique per (user, project): two projects
	// that both hold a user never compete for its names, and a delivery
	// name of one project can never be taken, or learnt, by another.
	// user_name (user, name) finds a name's bindings across the user's
	// projects.
	indexUserProjectName = "user_project_name"
	indexUserName        = "user_name"

	// Binding kinds.
	BindUnit = "unit"
	BindUser = "user"

	CodeInvalidBinding = "invalid_binding"

	// MaxDelivery is the most a delivery hands out: systemd refuses
	// credentials over 1 MiB.
	MaxDelivery = 1 << 20
)

// bindingRecord says who may receive a secret's payload: a systemd unit
// under a credential name (LoadCredential=), or a user under a name.
type bindingRecord struct {
	ID         string `json:"id"`
	SecretID   string `json:"secret_id"`
	ProjectID  string `json:"project_id"`
	Kind       string `json:"kind"`
	Unit       string `json:"unit,omitempty"`
	Credential string `json:"credential,omitempty"`
	UserID     string `json:"user_id,omitempty"`
	Name       string `json:"name,omitempty"`
	// OnRotate (unit bindings): what systemd is asked to do to the unit
	// once a rotation of the secret commits; "" (bindings made before it
	// existed) is none.
	OnRotate  string    `json:"on_rotate,omitempty"`
	CreatedAt time.Time `json:"created_at"`
}

// onRotate is the binding's on-rotate action: none for user bindings and
// for unit bindings made before the setting existed.
func (b bindingRecord) onRotate() string {
	if b.Kind != BindUnit {
		return ""
	}
	if b.OnRotate == "" {
		return OnRotateNone
	}
	return b.OnRotate
}

func (b bindingRecord) indexes() []kv.Index {
	ix := []kv.Index{{Name: indexSecret, Value: b.SecretID}}
	if b.Kind == BindUnit {
		ix = append(ix, kv.Index{Name: indexUnitCred, Value: b.Unit + "/" + b.Credential, Unique: true})
	} else {
		ix = append(ix, kv.Index{Name: indexUserProjectName, Value: b.UserID + "/" + b.ProjectID + "/" + b.Name, Unique: true},
			kv.Index{Name: indexUserName, Value: b.UserID + "/" + b.Name},
			kv.Index{Name: indexUser, Value: b.UserID})
	}
	return ix
}

// Binding is the projection of a binding.
type Binding struct {
	ID         string
	SecretID   string
	Kind       string
	Unit       string
	Credential string
	UserID     string
	User       string
	Name       string
	OnRotate   string // unit bindings only: try-restart, restart, reload or none
	CreatedAt  time.Time
}

// BindingInput binds a secret to {Unit, Credential} or {User, Name}.
// OnRotate, for a unit, is one of the OnRotate actions ("": the default,
// try-restart).
type BindingInput struct {
	Unit       string
	Credential string
	User       string
	Name       string
	OnRotate   string
}

// unitRE is a systemd unit name with a suffix that can consume
// credentials; compiled on first use, not at every process start.
var unitRE = sync.OnceValue(func() *regexp.Regexp {
	return regexp.MustCompile(`^[A-Za-z0-9:_.\\-]+(@[A-Za-z0-9:_.\\-]+)?\.(service|socket|mount|swap|timer|path)$`)
})

// maxCredentialName bounds credential names, as systemd does.
const maxCredentialName = 255

// ValidUnit reports whether s is a systemd unit name coffer binds to.
func ValidUnit(s string) bool { return len(s) <= 255 && unitRE().MatchString(s) }

// ValidCredentialName reports whether s is a credential name coffer binds:
// what systemd accepts, kept to a portable set.
func ValidCredentialName(s string) bool { return validKeyName(s, maxCredentialName) }

func (s *Service) bindingView(tx *kv.Txn, b bindingRecord) (Binding, error) {
	v := Binding{ID: b.ID, SecretID: b.SecretID, Kind: b.Kind, Unit: b.Unit, Credential: b.Credential, UserID: b.UserID, Name: b.Name, OnRotate: b.onRotate(), CreatedAt: b.CreatedAt}
	if b.UserID != "" {
		var u userRecord
		if err := tx.Get(tableUsers, b.UserID, &u); err != nil {
			return v, err
		}
		v.User = u.Name
	}
	return v, nil
}

func secretBindings(tx *kv.Txn, secretID string) ([]bindingRecord, error) {
	var out []bindingRecord
	err := tx.List(tableBindings, kv.Query{Index: indexSecret, Value: secretID}, func(_ string, decode func(any) error) error {
		var b bindingRecord
		if err := decode(&b); err != nil {
			return err
		}
		out = append(out, b)
		return nil
	})
	return out, err
}

// CreateBinding binds the grant's secret to a unit or a user.
func (s *Service) CreateBinding(ctx context.Context, g Grant, in BindingInput) (Binding, error) {
	if err := g.require(ActManageBindings); err != nil {
		return Binding{}, err
	}
	rec := bindingRecord{ID: newID(), SecretID: g.secretID, ProjectID: g.project.ID, CreatedAt: s.now()}
	switch {
	case in.Unit != "" && in.User == "" && in.Name == "":
		// Unit names are the host's, not a project's: a project admin
		// binding its secret to another tenant's unit would inject content
		// into that service. Only system admins bind units.
		if !g.admin {
			err := Forbidden("only a system admin may bind secrets to systemd units")
			s.recordFailure(g.principal, "binding.create", map[string]string{"secret": g.secretID}, err)
			return Binding{}, err
		}
		if !ValidUnit(in.Unit) {
			return Binding{}, Invalid(CodeInvalidBinding, "unit %q is not a systemd unit name such as nginx.service", in.Unit)
		}
		if !ValidCredentialName(in.Credential) {
			return Binding{}, Invalid(CodeInvalidBinding, "credential must be a credential name such as tls-key (A-Z a-z 0-9 _ . -)")
		}
		if in.OnRotate == "" {
			in.OnRotate = DefaultOnRotate
		}
		if !ValidOnRotate(in.OnRotate) {
			return Binding{}, Invalid(CodeInvalidBinding, "on_rotate must be try-restart, restart, reload or none")
		}
		rec.Kind, rec.Unit, rec.Credential, rec.OnRotate = BindUnit, in.Unit, in.Credential, in.OnRotate
	case in.User != "" && in.Unit == "" && in.Credential == "":
		if in.OnRotate != "" {
			return Binding{}, Invalid(CodeInvalidBinding, "on_rotate is for unit bindings: a user's consumer watches for new versions (GET /v1/deliver/NAME?wait=)")
		}
		if !ValidCredentialName(in.Name) {
			return Binding{}, Invalid(CodeInvalidBinding, "name must be a delivery name such as dbpass (A-Z a-z 0-9 _ . -)")
		}
		rec.Kind, rec.Name = BindUser, in.Name
	default:
		return Binding{}, Invalid(CodeInvalidBinding, "bind to {unit, credential} or to {user, name}")
	}
	var out Binding
	err := s.update(ctx, g.principal, "binding.create", func(tx *kv.Txn, c *change) error {
		// A user binding's name is the project's (tenant data): the audit
		// log names the binding by id. A unit and its credential name are
		// the host's configuration (in its unit files): they are named.
		c.set("project", g.project.ID, "secret", g.secretID, "binding", rec.ID, "unit", rec.Unit, "unit_credential", rec.Credential, "on_rotate", rec.OnRotate)
		var sec secretRecord
		if err := tx.Get(tableSecrets, g.secretID, &sec); err != nil {
			return notFoundAs(err, "secret %s not found", g.secretID)
		}
		if sec.RevokedAt != nil {
			return Conflict(CodeSecretRevoked, "secret %s is revoked", sec.ID)
		}
		if _, err := liveProject(tx, sec.ProjectID); err != nil {
			return err
		}
		if rec.Kind == BindUser {
			// Bindings follow roles: only a user admitted to the project
			// receives its secrets (and Deliver checks it again). To a
			// project admin a user outside the project does not exist.
			u, err := findUser(tx, in.User)
			if err != nil {
				return err
			}
			held, err := roleOf(tx, u.ID, sec.ProjectID)
			if err != nil {
				return err
			}
			if held == RoleNone {
				if !g.admin {
					return userNotFound(in.User)
				}
				return Conflict(CodeUserNotAdmitted, "user %s holds no role on the secret's project: give it one first", u.Name)
			}
			rec.UserID = u.ID
			c.set("user", u.ID)
		}
		if err := tx.Put(tableBindings, rec.ID, rec, rec.indexes()...); err != nil {
			if errors.Is(err, kv.ErrExists) {
				if rec.Kind == BindUnit {
					return newErr(ErrAlreadyExists, CodeAlreadyExists, "%s already receives a secret as credential %s", rec.Unit, rec.Credential)
				}
				return newErr(ErrAlreadyExists, CodeAlreadyExists, "user %s already receives a secret of this project named %s", in.User, rec.Name)
			}
			return err
		}
		var err error
		out, err = s.bindingView(tx, rec)
		return err
	})
	if err != nil {
		return Binding{}, storeErr(err)
	}
	return out, nil
}

// ListBindings lists the grant's secret's bindings.
func (s *Service) ListBindings(ctx context.Context, g Grant) ([]Binding, error) {
	if g.action != ActReadSecret && g.action != ActManageSecret && g.action != ActManageBindings {
		return nil, Forbidden("not authorized to %s", ActReadSecret)
	}
	var out []Binding
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		recs, err := secretBindings(tx, g.secretID)
		if err != nil {
			return err
		}
		for _, r := range recs {
			v, err := s.bindingView(tx, r)
			if err != nil {
				return err
			}
			out = append(out, v)
		}
		return nil
	})
	return out, storeErr(err)
}

// DeleteBinding removes one binding of the grant's secret.
func (s *Service) DeleteBinding(ctx context.Context, g Grant, id string) error {
	if err := g.require(ActManageBindings); err != nil {
		return err
	}
	if !validID(id) {
		return NotFound("binding %q not found", id)
	}
	err := s.update(ctx, g.principal, "binding.delete", func(tx *kv.Txn, c *change) error {
		c.set("project", g.project.ID, "secret", g.secretID, "binding", id)
		var b bindingRecord
		if err := tx.Get(tableBindings, id, &b); err != nil || b.SecretID != g.secretID {
			return notFoundAs(cmpErr(err, kv.ErrNotFound), "binding %q not found", id)
		}
		return tx.Delete(tableBindings, id)
	})
	return storeErr(err)
}

// deleteUserBindingsIn removes a user's bindings to secrets of a project.
func deleteUserBindingsIn(tx *kv.Txn, userID, projectID string) error {
	var doomed []string
	err := tx.List(tableBindings, kv.Query{Index: indexUser, Value: userID}, func(id string, decode func(any) error) error {
		var b bindingRecord
		if err := decode(&b); err != nil {
			return err
		}
		if b.ProjectID == projectID {
			doomed = append(doomed, id)
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, id := range doomed {
		if err := tx.Delete(tableBindings, id); err != nil {
			return err
		}
	}
	return nil
}

// deleteBindingsOf removes every binding of a secret.
func deleteBindingsOf(tx *kv.Txn, secretID string) error {
	recs, err := secretBindings(tx, secretID)
	if err != nil {
		return err
	}
	for _, b := range recs {
		if err := tx.Delete(tableBindings, b.ID); err != nil {
			return err
		}
	}
	return nil
}

// Delivery is a payload handed to its bound consumer. The caller must
// clear Payload once written.
type Delivery struct {
	Payload  []byte `redact:"true"`
	SecretID string
	Version  int
}

// loadCredentialPrincipal is who asks on the LoadCredential= socket:
// systemd (the server checked its uid before asking for a delivery).
var loadCredentialPrincipal = Principal{Channel: ChannelLoadCredential}

// AuditCredentialRefusal records a LoadCredential= request that the
// socket's server refused before asking for a delivery (a peer that is
// not systemd, an address that names no unit).
func (s *Service) AuditCredentialRefusal(reason string, uid *uint32, unit, credential string) {
	p := loadCredentialPrincipal
	if uid != nil {
		p.HasCred, p.UID = true, *uid
	}
	var t map[string]string
	if unit != "" {
		t = map[string]string{"unit": auditValue(unit), "credential": auditValue(credential)}
	}
	s.recordDenial(p, "loadcredential", "", reason, t)
}

// errNoDelivery is every reason a delivery does not happen; callers answer
// all of them alike (404, or zero bytes on the credentials socket) so that
// existence is not revealed. The reason goes to the audit log.
var (
	errNoDelivery   = errors.New("nothing to deliver")
	errRuleRefused  = errors.New("access rules refuse")
	errOtherProject = errors.New("another project")
)

// sealedFor reads, inside the caller's transaction, the secret a binding
// names and its current envelope; why says why there is nothing to
// deliver (revoked, expired, gone).
func (s *Service) sealedFor(tx *kv.Txn, b bindingRecord) (rec secretRecord, blob sealedRecord, why string, err error) {
	if err := tx.Get(tableSecrets, b.SecretID, cachedRecord[secretRecord]{&s.decoded.secrets, &rec}); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return rec, blob, "secret gone", nil
		}
		return rec, blob, "", err
	}
	if st := rec.status(s.now()); st != StatusActive {
		return rec, blob, "secret " + st, nil
	}
	if err := tx.Get(tableSealed, b.SecretID, cachedRecord[sealedRecord]{&s.decoded.sealed, &blob}); err != nil {
		if errors.Is(err, kv.ErrNotFound) {
			return rec, blob, "secret gone", nil
		}
		return rec, blob, "", err
	}
	return rec, sealedCopy(blob), "", nil
}

// unsealDelivery opens a delivery's envelope (one HSM call, outside any
// transaction) and returns a copy of the payload alone, or with key set,
// of that key_values entry alone.
func (s *Service) unsealDelivery(ctx context.Context, rec secretRecord, blob sealedRecord, key string) (Delivery, string, error) {
	plain, payload, kvs, err := s.open(ctx, rec, blob)
	if err != nil {
		return Delivery{}, "", err
	}
	defer clear(plain)
	if key != "" {
		v, ok := kvs[key]
		if !ok {
			return Delivery{}, "no such key", nil
		}
		if len(v) > MaxDelivery {
			return Delivery{}, "payload over the 1 MiB credential limit", nil
		}
		// One copy, which the caller clears (the string itself cannot be).
		return Delivery{Payload: []byte(v), SecretID: rec.ID, Version: rec.Version}, "", nil
	}
	if len(payload) > MaxDelivery {
		return Delivery{}, "payload over the 1 MiB credential limit", nil
	}
	out := make([]byte, len(payload))
	copy(out, payload)
	return Delivery{Payload: out, SecretID: rec.ID, Version: rec.Version}, "", nil
}

// DeliveryRequest names what a consumer asks for: the name it is bound
// under, optionally one key_values entry instead of the payload, and,
// when its user receives the name from more than one project, which
// project's (a token's request is always its own project's).
type DeliveryRequest struct {
	Name    string
	Key     string
	Project string // name or id; "" for the only one
}

// errDeliveryAmbiguous: the name is bound to the caller in several
// projects and the request does not say which.
var errDeliveryAmbiguous = errors.New("bound in several projects")

// userBinding finds the binding the caller's user receives under name,
// in the same read as the roles it depends on: a binding delivers only
// while its user holds a role on the secret's project (bindings follow
// roles), so a role removed, or a user disabled or deleted, stops it at
// once. A token's request looks in the token's project only; a request
// naming a project, in that one; otherwise the name must be bound to the
// user in exactly one project it holds a role on.
func (s *Service) userBinding(tx *kv.Txn, c caller, req DeliveryRequest, b *bindingRecord) error {
	get := func(id string) error {
		if err := tx.Get(tableBindings, id, cachedRecord[bindingRecord]{&s.decoded.bindings, b}); err != nil {
			return err
		}
		held, err := s.roleOn(tx, c, b.ProjectID)
		if err != nil {
			return err
		}
		if held == RoleNone {
			return errNotAdmitted
		}
		return nil
	}
	project := ""
	switch {
	case c.token != nil:
		project = c.token.ProjectID
		if req.Project != "" && req.Project != project {
			p, err := s.findProjectIn(tx, req.Project)
			if err != nil || p.ID != project {
				return errOtherProject
			}
		}
	case req.Project != "":
		p, err := s.findProjectIn(tx, req.Project)
		if errors.Is(err, ErrNotFound) {
			return kv.ErrNotFound
		}
		if err != nil {
			return err
		}
		project = p.ID
	}
	if project != "" {
		id, err := tx.LookupUnique(tableBindings, indexUserProjectName, c.user.ID+"/"+project+"/"+req.Name)
		if err != nil {
			return err
		}
		return get(id)
	}
	var ids []string
	if err := tx.List(tableBindings, kv.Query{Index: indexUserName, Value: c.user.ID + "/" + req.Name}, func(id string, _ func(any) error) error {
		ids = append(ids, id)
		return nil
	}); err != nil {
		return err
	}
	found := ""
	for _, id := range ids {
		switch err := get(id); {
		case errors.Is(err, errNotAdmitted):
			continue
		case err != nil:
			return err
		case found != "":
			return errDeliveryAmbiguous
		}
		found = id
	}
	if found == "" {
		if len(ids) > 0 {
			return errNotAdmitted
		}
		return kv.ErrNotFound
	}
	return get(found)
}

// errNotAdmitted: the binding's user holds no role on its project.
var errNotAdmitted = errors.New("the bound user holds no role on the secret's project")

// deliveryLookup is what one read for a delivery found.
type deliveryLookup struct {
	b    bindingRecord
	c    caller
	rec  secretRecord
	blob sealedRecord
	why  string
}

// lookupDelivery reads, in one transaction, who the caller is, the
// binding it receives req.Name under, and the secret's current envelope
// (Deliver's checks, with nothing unsealed or audited).
func (s *Service) lookupDelivery(ctx context.Context, p Principal, req DeliveryRequest) (deliveryLookup, error) {
	name := req.Name
	var l deliveryLookup
	idGen, polGen := s.idGen.Load(), s.polGen.Load()
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		var err error
		if l.c, err = s.resolveCaller(tx, p); err != nil {
			return err
		}
		c := l.c
		if c.user == nil {
			return errNoDelivery
		}
		if c.token != nil && c.token.Rules != nil {
			if ok, _ := c.token.Rules.Allows("coffer", "GET", "/v1/deliver/"+name); !ok {
				return errRuleRefused
			}
		}
		if err := s.userBinding(tx, c, req, &l.b); err != nil {
			return err
		}
		if l.why, err = s.deliveryPolicies(tx, c, p, l.b.ProjectID, "", "/v1/deliver/"+name, idGen, polGen); err != nil || l.why != "" {
			return err
		}
		l.rec, l.blob, l.why, err = s.sealedFor(tx, l.b)
		return err
	})
	return l, err
}

// Deliver hands the payload bound to the caller's user under req.Name
// (with req.Key set, that entry of the secret's key_values instead).
// Anyone else — unbound, anonymous, another user, a user no longer
// holding a role on the secret's project — gets a not_found that does not
// say whether the name exists. Every delivery and refusal is audited.
func (s *Service) Deliver(ctx context.Context, p Principal, req DeliveryRequest) (Delivery, error) {
	name, key := req.Name, req.Key
	// The audit log names what was delivered by ids (binding, secret), not
	// by the delivery name or the key_values key, which are the project's.
	target := func() map[string]string {
		t := map[string]string{}
		if key != "" {
			t["one_key"] = "true"
		}
		return t
	}
	refuse := func(reason string) (Delivery, error) {
		s.log.LogAttrs(ctx, slog.LevelDebug, "delivery refused", slog.String("principal", p.String()), slog.String("reason", reason))
		s.recordDenial(p, "deliver", CodeNotFound, reason, target())
		return Delivery{}, NotFound("nothing to deliver under %q", name)
	}
	if !ValidCredentialName(name) {
		return refuse("invalid name")
	}
	if key != "" && !validKeyName(key, maxKeyName) {
		return refuse("invalid key")
	}
	l, err := s.lookupDelivery(ctx, p, req)
	b, c, rec, blob, why := l.b, l.c, l.rec, l.blob, l.why
	switch {
	case errors.Is(err, errNoDelivery):
		return refuse("caller is not a user")
	case errors.Is(err, errRuleRefused):
		return refuse("the token's access rules do not allow it")
	case errors.Is(err, errOtherProject):
		return refuse("the secret is in another project than the token's")
	case errors.Is(err, errNotAdmitted):
		return refuse("the bound user holds no role on the secret's project")
	case errors.Is(err, errDeliveryAmbiguous):
		// Only the bound user gets here, about its own bindings.
		s.recordDenial(p, "deliver", CodeDeliveryAmbiguous, "bound in several projects", target())
		return Delivery{}, Conflict(CodeDeliveryAmbiguous, "%q is bound to you in more than one project: name the project (?project=, --project)", name)
	case errors.Is(err, kv.ErrNotFound):
		return refuse("no binding for this user")
	case err != nil:
		return Delivery{}, storeErr(err)
	}
	if why != "" {
		return refuse(why)
	}
	d, why, err := s.unsealDelivery(ctx, rec, blob, key)
	if err != nil {
		return Delivery{}, err
	}
	if why != "" {
		return refuse(why)
	}
	t := target()
	t["binding"], t["secret"], t["version"] = b.ID, d.SecretID, strconv.Itoa(d.Version)
	s.record(audit.Event{Action: "deliver", Outcome: audit.OutcomeOK, Principal: auditPrincipal(p), Target: t})
	// Debug: the audit log records every delivery (and copies it to the
	// journal unless told not to); at info this line doubled the cost of
	// logging a delivery. Typed attributes: it is checked once per delivery.
	s.log.LogAttrs(ctx, slog.LevelDebug, "delivered", slog.String("principal", p.String()), slog.String("user", c.user.ID),
		slog.String("binding", b.ID), slog.String("secret", d.SecretID), slog.Int("version", d.Version), slog.String("channel", string(p.Channel)))
	return d, nil
}

// DeliverCredential hands the payload bound to a systemd unit under a
// credential name (the LoadCredential= socket). Unbound pairs get
// errNoDelivery; every attempt is audited.
func (s *Service) DeliverCredential(ctx context.Context, unit, credential string) (Delivery, error) {
	target := func() map[string]string {
		return map[string]string{"unit": auditValue(unit), "credential": auditValue(credential)}
	}
	refuse := func(reason string) (Delivery, error) {
		// Only systemd asks here, rarely: a line per refusal tells the
		// operator why a unit got no credential. Unit and credential
		// names are the host's configuration.
		s.log.LogAttrs(ctx, slog.LevelWarn, "LoadCredential refused", slog.String("unit", auditValue(unit)),
			slog.String("credential", auditValue(credential)), slog.String("reason", reason))
		// Only systemd reaches this socket: each unit and credential
		// refused keeps a line of its own.
		s.record(audit.Event{Action: "loadcredential", Outcome: audit.OutcomeDenied, Reason: reason, Principal: auditPrincipal(loadCredentialPrincipal),
			Target: target(), Distinct: unit + "/" + credential})
		return Delivery{}, errNoDelivery
	}
	if !ValidUnit(unit) || !ValidCredentialName(credential) {
		return refuse("invalid unit or credential name")
	}
	var b bindingRecord
	var rec secretRecord
	var blob sealedRecord
	var why string
	idGen, polGen := s.idGen.Load(), s.polGen.Load()
	err := s.store.View(ctx, func(tx *kv.Txn) error {
		id, err := tx.LookupUnique(tableBindings, indexUnitCred, unit+"/"+credential)
		if err != nil {
			return err
		}
		if err := tx.Get(tableBindings, id, cachedRecord[bindingRecord]{&s.decoded.bindings, &b}); err != nil {
			return err
		}
		if why, err = s.deliveryPolicies(tx, caller{}, loadCredentialPrincipal, b.ProjectID, unit, "/v1/deliver/"+credential, idGen, polGen); err != nil || why != "" {
			return err
		}
		rec, blob, why, err = s.sealedFor(tx, b)
		return err
	})
	if errors.Is(err, kv.ErrNotFound) {
		return refuse("not bound")
	}
	if err != nil {
		err = storeErr(err)
		s.recordFailure(loadCredentialPrincipal, "loadcredential", target(), err)
		return Delivery{}, err
	}
	if why != "" {
		return refuse(why)
	}
	d, why, err := s.unsealDelivery(ctx, rec, blob, "")
	if err != nil {
		s.recordFailure(loadCredentialPrincipal, "loadcredential", target(), err)
		return Delivery{}, err
	}
	if why != "" {
		return refuse(why)
	}
	t := target()
	t["binding"], t["secret"], t["version"] = b.ID, d.SecretID, strconv.Itoa(d.Version)
	s.record(audit.Event{Action: "loadcredential", Outcome: audit.OutcomeOK, Principal: auditPrincipal(loadCredentialPrincipal), Target: t})
	s.log.LogAttrs(ctx, slog.LevelInfo, "LoadCredential delivered", slog.String("binding", b.ID), slog.String("secret", d.SecretID), slog.Int("version", d.Version))
	return d, nil
}
