package daemon

import (
	"context"
	"fmt"
	"maps"
	"time"

	"github.com/coffer-hsm/coffer/policy"
)

// Channel names the transport a request arrived on.
type Channel string

const (
	ChannelUnix  Channel = "unix"
	ChannelVsock Channel = "vsock"
	// ChannelHybridVsock is Firecracker / Cloud Hypervisor hybrid vsock: the
	// VMM forwards a guest's connection to a per-VM Unix socket on the host,
	// and that socket names the VM.
	ChannelHybridVsock Channel = "hybrid-vsock"
	// ChannelLoadCredential is systemd asking for a unit's credential on
	// the LoadCredential= socket.
	ChannelLoadCredential Channel = "loadcredential"
	// ChannelDaemon is the daemon itself (start-up work, maintenance).
	ChannelDaemon Channel = "daemon"
)

// Principal is who is calling, as the transport saw it when the connection
// was accepted. It is never derived from a request body.
type Principal struct {
	Channel Channel
	// Unix socket peer credentials (SO_PEERCRED). HasCred is false when the
	// transport carries none.
	HasCred bool
	UID     uint32
	GID     uint32
	PID     int32
	// vsock peer context id.
	CID uint32
	// VM is the configured name of the VM a hybrid vsock connection came
	// from (the per-VM socket it arrived on names it).
	VM string
	// Token is set when the request carried a valid bearer token; the
	// request then acts as the token's user, within the token's limits.
	Token *TokenIdentity
}

// TokenIdentity is what a bearer token stands for.
type TokenIdentity struct {
	Kind         string // login, access-token or oauth2 (a JWT)
	SessionID    string
	CredentialID string
	UserID       string
	ProjectID    string
	Roles        []string
	Rules        *RuleSet // nil: unrestricted by rules
	Policies     []string
	Unrestricted bool
	ExpiresAt    *time.Time
	// What the policies look at (policy.go): the ids of the policies
	// attached to the credential, its inline policy, its name and the
	// session type.
	PolicyIDs      []string
	InlinePolicies []policy.Document
	CredentialName string
	SessionType    string
	// CredentialTokenID is the public id of the credential's token as
	// the token was checked (a rotation changes it, and ends the check):
	// the Kubernetes user name of the credential's tokens.
	CredentialTokenID string

	cache *bearerInfo // what the daemon read when it checked the token
	// inline are InlinePolicies compiled when the identity was made (it
	// is cached with its token): an evaluation compiles nothing.
	inline []*policy.Policy
}

// String names the principal for logs.
func (p Principal) String() string {
	switch {
	case p.Token != nil:
		return fmt.Sprintf("%s session=%s (%s)", p.Token.Kind, p.Token.SessionID, p.Channel)
	case p.Channel == ChannelUnix && p.HasCred:
		return fmt.Sprintf("unix uid=%d gid=%d pid=%d", p.UID, p.GID, p.PID)
	case p.Channel == ChannelVsock:
		return fmt.Sprintf("vsock cid=%d", p.CID)
	case p.Channel == ChannelHybridVsock && p.VM != "":
		return fmt.Sprintf("hybrid-vsock vm=%s", p.VM)
	case p.Channel == ChannelDaemon:
		return "the daemon"
	case p.Channel == ChannelLoadCredential:
		return "systemd (LoadCredential=)"
	default:
		return "anonymous (" + string(p.Channel) + ")"
	}
}

type principalKey struct{}

type routeKey struct{}

// WithRoute returns ctx carrying the API route (its pattern) a request
// came by, for the audit log's records of what was refused.
func WithRoute(ctx context.Context, route string) context.Context {
	return context.WithValue(ctx, routeKey{}, route)
}

// routeTarget is the audit target naming ctx's route, or nil.
func routeTarget(ctx context.Context) map[string]string {
	extra, _ := ctx.Value(auditTargetKey{}).(map[string]string)
	r, _ := ctx.Value(routeKey{}).(string)
	if r == "" && extra == nil {
		return nil
	}
	t := make(map[string]string, len(extra)+1)
	maps.Copy(t, extra)
	if r != "" {
		t["route"] = r
	}
	return t
}

type auditTargetKey struct{}

// withAuditTarget returns ctx whose refusals (tokenRefused, admitAuth)
// record t in their target too: /v1/authorize's service, method and path
// when the token itself is refused.
func withAuditTarget(ctx context.Context, t map[string]string) context.Context {
	return context.WithValue(ctx, auditTargetKey{}, t)
}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p Principal) context.Context {
	return context.WithValue(ctx, principalKey{}, p)
}

// PrincipalFrom returns the principal carried by ctx; an anonymous principal
// when there is none.
func PrincipalFrom(ctx context.Context) Principal {
	p, _ := ctx.Value(principalKey{}).(Principal)
	return p
}
