package main

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"path/filepath"
	"strconv"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/systemd"
)

// openAudit opens the audit log in stateDir/audit: checkpoints signed with
// the HSM signing key, verified with every signing key the daemon has used
// (the JWK set and the public halves of retired keys), every line also
// copied to journal unless it is nil.
func openAudit(ctx context.Context, svc *daemon.Service, stateDir string, log *slog.Logger, journal audit.Journal) (*audit.Log, error) {
	opts := audit.Options{
		Dir:    filepath.Join(stateDir, "audit"),
		Signer: audit.SignerFunc(svc.SignAudit),
		Keys: func() (audit.KeySource, error) {
			b, err := json.Marshal(svc.SigningKeyHistory())
			if err != nil {
				return nil, err
			}
			return audit.ParseJWKS(b)
		},
		Logger: log,
	}
	opts.Journal = journal
	return audit.Open(ctx, opts)
}

// loadCredentialPrincipal is who asks on the LoadCredential= socket:
// systemd (its uid was checked before delivery is asked for).
func loadCredentialPrincipal(uid *uint32) *audit.Principal {
	return &audit.Principal{Channel: "loadcredential", UID: uid}
}

// auditedDeliverCredential delivers a LoadCredential= request through svc
// and records the outcome.
func auditedDeliverCredential(svc *daemon.Service, al *audit.Log) systemd.DeliverFunc {
	return func(ctx context.Context, unit, name string) ([]byte, error) {
		d, err := svc.DeliverCredential(ctx, unit, name)
		e := audit.Event{Action: "loadcredential", Principal: loadCredentialPrincipal(nil),
			Target: map[string]string{"unit": unit, "credential": name}}
		var de *daemon.Error
		switch {
		case err == nil:
			e.Outcome = audit.OutcomeOK
			e.Target["secret"], e.Target["version"] = d.SecretID, strconv.Itoa(d.Version)
		case errors.As(err, &de):
			e.Outcome, e.Code = audit.OutcomeFailed, daemon.CodeOf(err)
		default: // unbound, revoked, expired: the daemon's log says which
			e.Outcome, e.Reason = audit.OutcomeDenied, "nothing to deliver"
		}
		al.Record(e)
		return d.Payload, err
	}
}

// auditCredentialRefusal records a request the LoadCredential= server
// refused itself.
func auditCredentialRefusal(al *audit.Log) func(systemd.CredentialRefusal) {
	return func(r systemd.CredentialRefusal) {
		var uid *uint32
		if r.HasUID {
			uid = &r.UID
		}
		e := audit.Event{Action: "loadcredential", Outcome: audit.OutcomeDenied, Reason: r.Reason, Principal: loadCredentialPrincipal(uid)}
		if r.Unit != "" {
			e.Target = map[string]string{"unit": r.Unit, "credential": r.Credential}
		}
		al.Record(e)
	}
}

// daemonEvent is an event of the daemon itself (start, stop, reload).
func daemonEvent(action string, err error) audit.Event {
	e := audit.Event{Action: action, Outcome: audit.OutcomeOK, Principal: &audit.Principal{Channel: "daemon"}}
	if err != nil {
		e.Outcome, e.Reason = audit.OutcomeFailed, err.Error()
	}
	return e
}
