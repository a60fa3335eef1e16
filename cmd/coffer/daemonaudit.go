//go:build !nodaemon

package main

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"

	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/daemon"
	"github.com/coffer-hsm/coffer/systemd"
)

// openAudit opens the audit log in stateDir/audit: checkpoints signed with
// the HSM signing key, verified with every signing key the daemon has used
// (the JWK set and the public halves of retired keys), every line also
// copied to journal unless it is nil.
//
// budget bounds the log's files (0: keep everything).
func openAudit(ctx context.Context, svc *daemon.Service, stateDir string, log *slog.Logger, journal audit.Journal, budget int64) (*audit.Log, error) {
	if budget == 0 {
		budget = -1 // the audit package's "keep everything"
	}
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
		Logger:       log,
		MaxTotalSize: budget,
	}
	opts.Journal = journal
	return audit.Open(ctx, opts)
}

// deliverCredential hands LoadCredential= requests to the domain, which
// records each one.
func deliverCredential(svc *daemon.Service) systemd.DeliverFunc {
	return func(ctx context.Context, unit, name string) ([]byte, error) {
		d, err := svc.DeliverCredential(ctx, unit, name)
		return d.Payload, err
	}
}

// credentialRefused records a request the LoadCredential= server refused
// itself (a peer that is not systemd, an address naming no unit).
func credentialRefused(svc *daemon.Service) func(systemd.CredentialRefusal) {
	return func(r systemd.CredentialRefusal) {
		var uid *uint32
		if r.HasUID {
			uid = &r.UID
		}
		svc.AuditCredentialRefusal(r.Reason, uid, r.Unit, r.Credential)
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
