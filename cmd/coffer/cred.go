package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
)

// credProjectFlag is --project for commands that take a credential ID or
// NAME: a name is looked up among that project's credentials.
var credProjectFlag = &cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "`PROJECT` in which a credential NAME is looked up (an ID needs none)", Value: "default"}

const credRefHelp = `CRED is the credential's ID, or its NAME: a name is looked up by listing
the credentials of --project (default "default"), which needs the right to
list them.`

var credCommand = group("cred", "issue workload credentials: auth tokens, OAuth2 clients, access tokens",
	&cli.Command{
		Name:      "create",
		Usage:     "issue a credential; its token or client secret is printed once",
		ArgsUsage: "[NAME]",
		Description: `Issues a credential for --user (default: the caller) in --project. NAME
may be given as the argument or with --name (default: <user>-<type>-<random>);
--type defaults to auth-token. The answer carries the secret once: the token
(auth-token, access-token) or the client secret (oauth2). With -o json or
yaml it is in the "token" or "client_secret" field.

Access rules: without --access-rule, --access-rule-id or --no-access the
credential is not restricted by rules; --no-access gives it an empty list,
which allows nothing. --access-rule takes SERVICE:METHOD:PATH, e.g.
coffer:GET:/v1/status or billing:POST:/invoices/*.

--expire-in takes 600seconds, 45minutes, 7hour, 3days, 2weeks, 6months or a
Go duration (90m), at most two years. The sessions of an auth token's
logins and an OAuth2 client's JWTs last the user's access-token TTL, never
past the credential's expiry. An access token is a static bearer, its own
session: it lasts until --expire-in (without it, until revoked), whatever
the user's TTL, and --one-time and --max-authn do not apply to it.

--rotate CRED rotates an existing credential instead, as 'coffer cred rotate
CRED' does: CRED (an ID, or a NAME looked up in --project, among --user's
credentials when given) is the argument.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "type", Usage: "auth-token, oauth2 or access-token", Value: "auth-token"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "the `USER` it belongs to (default: the caller)"},
			&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "`PROJECT` it acts in", Value: "default"},
			&cli.StringFlag{Name: "name", Usage: "its `NAME`, if not given as the argument (default: <user>-<type>-<random>)"},
			&cli.StringFlag{Name: "description", Usage: "free `TEXT`"},
			&cli.StringSliceFlag{Name: "role", Usage: "a `ROLE` it carries, of those the user has on the project (repeatable)"},
			&cli.StringSliceFlag{Name: "policy", Usage: "attach `POLICY`, the project's or a global one, to its requests (repeatable)"},
			&cli.StringFlag{Name: "inline-policy", Usage: "attach the policy document (JSON or YAML) at `PATH` to its requests; - reads standard input"},
			&cli.StringSliceFlag{Name: "access-rule", Usage: "allow only `SERVICE:METHOD:PATH` (repeatable)"},
			&cli.StringSliceFlag{Name: "access-rule-id", Usage: "allow a saved rule by `ID` (repeatable; see 'coffer access-rule')"},
			&cli.BoolFlag{Name: "no-access", Usage: "an empty rule list: nothing allowed"},
			&cli.StringFlag{Name: "expire-in", Usage: "expire after `DURATION` (3days, 2weeks, 6months, 90m)"},
			&cli.BoolFlag{Name: "one-time", Usage: "usable for one authentication (= --max-authn 1; not for access tokens)"},
			&cli.IntFlag{Name: "max-authn", Usage: "usable for `N` authentications (0: no limit; not for access tokens)"},
			&cli.StringFlag{Name: "session-type", Usage: "client or clientless"},
			&cli.StringSliceFlag{Name: "audience", Usage: "let its JWTs be issued for audience `AUD` (repeatable; the first is the default aud; none: the issuer only)"},
			&cli.BoolFlag{Name: "unrestricted", Usage: "may itself create, rotate and delete credentials (project admins only)"},
			&cli.BoolFlag{Name: "rotate", Usage: "rotate the credential named by the argument instead (= 'coffer cred rotate')"},
		},
		Action: func(c *cli.Context) error {
			if c.Bool("rotate") {
				return credCreateRotate(c)
			}
			in, err := credCreateRequest(c)
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			cr, err := cl.CreateCredential(c.Context, c.String("project"), in)
			if err != nil {
				return err
			}
			return renderCredential(c, cr)
		},
	},
	&cli.Command{
		Name:        "get",
		Usage:       "show a credential (never its secret)",
		ArgsUsage:   "CRED",
		Description: credRefHelp,
		Flags:       []cli.Flag{credProjectFlag},
		Action: func(c *cli.Context) error {
			cl, id, err := credTarget(c)
			if err != nil {
				return err
			}
			cr, err := cl.GetCredential(c.Context, id)
			if err != nil {
				return err
			}
			return renderCredential(c, cr)
		},
	},
	&cli.Command{
		Name:  "list",
		Usage: "list the credentials you own or administer, or a project's with --project",
		Description: `Without --project: your own credentials and those of every project you
are an admin of, in every project (a system admin: all of them; a token:
those of its project it may see). With --project: that project's, for any
role on it.

LAST USED is the last authentication, or the last request made with a
token the credential stands behind (its access token, a login's session,
an OAuth2 JWT), to the second.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "list `PROJECT`'s credentials (default: those you own or administer, in every project)"},
			&cli.StringFlag{Name: "user", Aliases: []string{"u"}, Usage: "only those of `USER`"},
			&cli.StringFlag{Name: "expiring-within", Usage: "only active ones expiring within `DURATION` (7d, 2weeks, 12h)"},
			&cli.BoolFlag{Name: "all-projects", Aliases: []string{"A"}, Usage: "every project you may see (what the list without --project does; says so explicitly)"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("cred list takes no arguments")
			}
			if c.Bool("all-projects") && c.IsSet("project") {
				return usagef("--all-projects and --project do not go together")
			}
			q := client.CredentialQuery{Project: c.String("project"), User: c.String("user")}
			if c.IsSet("expiring-within") {
				var err error
				if q.ExpiringWithin, err = window(c, "expiring-within"); err != nil {
					return err
				}
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			all, err := listAll(func(p client.PageQuery) (api.List[api.Credential], error) {
				q.Page = p
				return cl.ListCredentials(c.Context, q)
			})
			if err != nil {
				return err
			}
			return render(c, api.List[api.Credential]{Items: all}, func(w io.Writer) {
				rows := make([][]string, 0, len(all))
				for _, cr := range all {
					rows = append(rows, []string{cr.ID, cr.Name, cr.Type, cr.User, cr.Project, cr.Status, tsp(cr.ExpiresAt), tsp(cr.LastUsedAt)})
				}
				writeRows(w, []string{"ID", "NAME", "TYPE", "USER", "PROJECT", "STATUS", "EXPIRES", "LAST USED"}, rows)
			})
		},
	},
	&cli.Command{
		Name:      "rotate",
		Usage:     "issue a new token or client secret (printed once); --grace keeps the old one working a while",
		ArgsUsage: "CRED",
		Description: credRefHelp + `

With --grace (e.g. 5m) the previous token or client secret keeps working
for that long, so consumers can switch without downtime.

Rotation starts the authentication count again: a used-up one-time (or
--max-authn) credential, rotated, may authenticate its number of times
more, with the new token. During a grace the old token's authentications
count against the same number; an exhausted credential's old token gets no
grace. An expired credential is not rotated: create a new one.`,
		Flags: []cli.Flag{
			credProjectFlag,
			&cli.StringFlag{Name: "grace", Usage: "the old secret still works for `DURATION` (e.g. 5m)"},
		},
		Action: func(c *cli.Context) error {
			grace := ""
			if c.IsSet("grace") {
				var err error
				if grace, err = window(c, "grace"); err != nil {
					return err
				}
			}
			cl, id, err := credTarget(c)
			if err != nil {
				return err
			}
			cr, err := cl.RotateCredential(c.Context, id, grace)
			if err != nil {
				return err
			}
			return renderRotated(c, cr)
		},
	},
	&cli.Command{
		Name:        "revoke",
		Usage:       "revoke a credential and end its sessions (the record stays)",
		ArgsUsage:   "CRED",
		Description: credRefHelp,
		Flags:       []cli.Flag{credProjectFlag},
		Action: func(c *cli.Context) error {
			cl, id, err := credTarget(c)
			if err != nil {
				return err
			}
			cr, err := cl.RevokeCredential(c.Context, id)
			if err != nil {
				return err
			}
			return renderCredential(c, cr)
		},
	},
	&cli.Command{
		Name:        "delete",
		Usage:       "delete a credential",
		ArgsUsage:   "CRED",
		Description: credRefHelp,
		Flags:       []cli.Flag{credProjectFlag},
		Action: func(c *cli.Context) error {
			cl, id, err := credTarget(c)
			if err != nil {
				return err
			}
			if err := cl.DeleteCredential(c.Context, id); err != nil {
				return err
			}
			return done(c, "credential", id, "deleted")
		},
	},
)

// credCreateRequest builds the request from cred create's flags; every
// mistake is a usage error.
func credCreateRequest(c *cli.Context) (api.CredentialCreateRequest, error) {
	in := api.CredentialCreateRequest{
		Type:         c.String("type"),
		User:         c.String("user"),
		Name:         c.String("name"),
		Description:  c.String("description"),
		Roles:        c.StringSlice("role"),
		Policies:     c.StringSlice("policy"),
		SessionType:  c.String("session-type"),
		Unrestricted: c.Bool("unrestricted"),
		Audiences:    c.StringSlice("audience"),
	}
	if c.IsSet("inline-policy") {
		doc, err := readPolicyDocument(c, c.String("inline-policy"))
		if err != nil {
			return in, err
		}
		in.InlinePolicy = &doc
	}
	switch c.NArg() {
	case 0:
	case 1:
		arg := c.Args().First()
		if in.Name != "" && in.Name != arg {
			return in, usagef("the name is given twice, %q as the argument and %q with --name: give it once", arg, in.Name)
		}
		in.Name = arg
	default:
		return in, usagef("'%s' takes at most one NAME, got %d arguments", c.Command.HelpName, c.NArg())
	}
	switch in.Type {
	case "auth-token", "oauth2", "access-token":
	default:
		return in, usagef("--type must be auth-token, oauth2 or access-token, not %q", in.Type)
	}
	for _, r := range in.Roles {
		if r != "reader" && r != "member" && r != "admin" {
			return in, usagef("unknown --role %q: use reader, member or admin", r)
		}
	}
	switch in.SessionType {
	case "", "client", "clientless":
	default:
		return in, usagef("--session-type must be client or clientless, not %q", in.SessionType)
	}
	rules, err := accessRules(c.StringSlice("access-rule"), c.StringSlice("access-rule-id"), c.Bool("no-access"))
	if err != nil {
		return in, err
	}
	in.AccessRules = rules
	if c.IsSet("expire-in") {
		in.ExpireIn = c.String("expire-in")
		if _, err := api.ParseExpireIn(in.ExpireIn, time.Now()); err != nil {
			return in, usagef("--expire-in%s", strings.TrimPrefix(err.Error(), "expire_in"))
		}
	}
	n := c.Int("max-authn")
	switch {
	case n < 0:
		return in, usagef("--max-authn must be 0 (no limit) or more, not %d", n)
	case in.Type == "access-token" && (c.Bool("one-time") || n > 0):
		return in, usagef("an access-token is its own session: --one-time and --max-authn do not apply")
	case c.Bool("one-time") && n > 1:
		return in, usagef("--one-time means --max-authn 1; it does not go with --max-authn %d", n)
	case c.Bool("one-time"):
		in.OneTime = true
	default:
		in.MaxAuthn = n
	}
	return in, nil
}

// credCreateRotate is cred create --rotate CRED: cred rotate by another
// spelling. Only --project and --user (which narrows the lookup of a name)
// go with it.
func credCreateRotate(c *cli.Context) error {
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		switch name {
		case "rotate", "project", "user":
			continue
		}
		if c.IsSet(name) {
			return usagef("--rotate rotates an existing credential: --%s does not apply (see 'coffer cred rotate --help')", name)
		}
	}
	switch c.NArg() {
	case 0:
		return usagef("--rotate needs the credential to rotate, by ID or NAME: 'coffer cred create --rotate CRED'")
	case 1:
	default:
		return usagef("--rotate takes one credential ID or NAME, got %d arguments", c.NArg())
	}
	ref := c.Args().First()
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	id, err := credLookup(c, cl, ref, c.String("user"))
	if err != nil {
		return err
	}
	cr, err := cl.RotateCredential(c.Context, id, "")
	if err != nil {
		return err
	}
	return renderRotated(c, cr)
}

// accessRules is the access_rules of a new credential: nil (not restricted
// by rules) when no rule flag is given, an empty list for --no-access.
func accessRules(inline, ids []string, none bool) ([]api.AccessRule, error) {
	if none {
		if len(inline) > 0 || len(ids) > 0 {
			return nil, usagef("--no-access does not go with --access-rule or --access-rule-id")
		}
		return []api.AccessRule{}, nil
	}
	if len(inline) == 0 && len(ids) == 0 {
		return nil, nil
	}
	out := make([]api.AccessRule, 0, len(inline)+len(ids))
	for _, s := range inline {
		r, err := parseAccessRule(s)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	for _, id := range ids {
		if id == "" {
			return nil, usagef("--access-rule-id is empty")
		}
		out = append(out, api.AccessRule{ID: id})
	}
	return out, nil
}

// credTarget is the client and credential id of get, rotate, revoke and
// delete.
func credTarget(c *cli.Context) (*client.Client, string, error) {
	ref, err := oneArg(c, "a credential ID or NAME")
	if err != nil {
		return nil, "", err
	}
	cl, err := newClient(c)
	if err != nil {
		return nil, "", err
	}
	id, err := credLookup(c, cl, ref, "")
	return cl, id, err
}

// credLookup is the id of credential ref (an id, or a name in --project,
// among user's credentials when user is not empty).
func credLookup(c *cli.Context, cl *client.Client, ref, user string) (string, error) {
	project := c.String("project")
	return credentialID(ref, project, func(p client.PageQuery) (api.List[api.Credential], error) {
		return cl.ListCredentials(c.Context, client.CredentialQuery{Project: project, User: user, Page: p})
	})
}

// credentialID returns ref when it is an ID (a UUID in its canonical form);
// otherwise it lists the project's credentials and returns the id of the
// one named ref.
func credentialID(ref, project string, list func(client.PageQuery) (api.List[api.Credential], error)) (string, error) {
	if isUUID(ref) {
		return ref, nil
	}
	all, err := listAll(list)
	if err != nil {
		return "", fmt.Errorf("look up credential %q by name in project %s: %w", ref, project, err)
	}
	var ids []string
	for _, cr := range all {
		if cr.Name == ref {
			ids = append(ids, cr.ID)
		}
	}
	switch len(ids) {
	case 0:
		return "", fmt.Errorf("no credential named %q in project %s (pass its ID, or the project with --project)", ref, project)
	case 1:
		return ids[0], nil
	}
	return "", fmt.Errorf("%d credentials are named %q in project %s: pass one of their IDs (%s)", len(ids), ref, project, strings.Join(ids, ", "))
}

func isUUID(s string) bool {
	_, err := uuid.Parse(s)
	return err == nil && len(s) == 36
}

func renderCredential(c *cli.Context, cr api.Credential) error {
	err := render(c, cr, func(w io.Writer) {
		authn := fmt.Sprintf("%d (no limit)", cr.AuthnCount)
		if cr.MaxAuthn > 0 {
			authn = fmt.Sprintf("%d of %d", cr.AuthnCount, cr.MaxAuthn)
		}
		fields := []field{
			{"id", cr.ID},
			{"name", cr.Name},
			{"description", cr.Description},
			{"type", cr.Type},
			{"user", cr.User},
			{"project", cr.Project},
			{"status", cr.Status},
			{"roles", strings.Join(cr.Roles, ", ")},
			{"policies", strings.Join(cr.Policies, ", ")},
		}
		for i, d := range cr.InlinePolicies {
			for j, r := range d.Rules {
				fields = append(fields, field{fmt.Sprintf("inline policy %d rule %d", i+1, j+1), r.Effect + " if " + oneLine(r.Condition)})
			}
		}
		fields = append(fields, ruleFields(cr.AccessRules)...)
		fields = append(fields, []field{
			{"session type", cr.SessionType},
			{"audiences", strings.Join(cr.Audiences, ", ")},
			{"unrestricted", map[bool]string{true: "yes"}[cr.Unrestricted]},
			{"token id", cr.TokenID},
			{"client id", cr.ClientID},
			{"authentications", authn},
			{"expires", tsp(cr.ExpiresAt)},
			{"last used", tsp(cr.LastUsedAt)},
			{"created", ts(cr.CreatedAt)},
			{"rotated", tsp(cr.RotatedAt)},
			{"revoked", tsp(cr.RevokedAt)},
		}...)
		writeFields(w, fields)
		switch {
		case cr.Token != "":
			fmt.Fprintln(w)
			writeFields(w, []field{{"token", cr.Token}})
		case cr.ClientSecret != "":
			fmt.Fprintln(w)
			writeFields(w, []field{{"client id", cr.ClientID}, {"client secret", cr.ClientSecret}})
		}
	})
	if err != nil {
		return err
	}
	if c.String("output") == "table" {
		switch {
		case cr.Token != "":
			fmt.Fprintln(c.App.ErrWriter, "save this token now: it is not shown again")
		case cr.ClientSecret != "":
			fmt.Fprintln(c.App.ErrWriter, "save this client secret now: it is not shown again")
		}
	}
	return nil
}

// renderRotated shows a rotated credential. Rotation starts the
// authentication count again; for a credential with a limit, the table
// output says so.
func renderRotated(c *cli.Context, cr api.Credential) error {
	if err := renderCredential(c, cr); err != nil {
		return err
	}
	if c.String("output") == "table" && cr.MaxAuthn > 0 {
		fmt.Fprintf(c.App.ErrWriter, "the authentication count starts again: the new token may authenticate %s\n", plural(cr.MaxAuthn-cr.AuthnCount, "time"))
	}
	return nil
}
