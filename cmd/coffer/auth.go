package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

// tokenFlags are a command's own --token-file / --token: the token the
// command is about, not the one that authenticates the CLI.
func tokenFlags(what string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "token-file", Usage: "read the " + what + " from `FILE` (- for standard input)"},
		&cli.StringFlag{Name: "token", Usage: "the " + what + " `TOKEN` (prefer --token-file: a flag shows in ps)"},
	}
}

// commandToken reads the token given with the command's own --token or
// --token-file; "" when neither is given.
func commandToken(c *cli.Context) (string, error) {
	switch t, f := c.String("token"), c.String("token-file"); {
	case t != "" && f != "":
		return "", usagef("--token and --token-file do not go together")
	case t != "":
		return checkToken(t, "--token")
	case f != "":
		return readTokenFile(f, "token file", c.App.Reader)
	}
	return "", nil
}

var loginCommand = &cli.Command{
	Name:  "login",
	Usage: "exchange an auth token (cfa_) for a session; its token (cfs_) is printed once",
	Description: `Logs in with an auth-token credential and prints the new session with its
session token, once. Use the session token as --token (or save it in a file
for --token-file or a profile) to act as the credential's user. Without
--token-file or --token, the CLI's own token (global --token, $COFFER_TOKEN,
--token-file or the profile's token file) is used.`,
	Flags: tokenFlags("auth token"),
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("login takes no arguments; pass the auth token with --token-file FILE")
		}
		tok, err := commandToken(c)
		if err != nil {
			return err
		}
		if tok == "" {
			path, err := configPath()
			if err != nil {
				path = ""
			}
			cn, err := resolveConn(globalsOf(c), path, c.App.Reader)
			if err != nil {
				return err
			}
			if tok = cn.token; tok == "" {
				return usagef("login needs an auth token: --token-file FILE or --token TOKEN")
			}
		}
		cl, err := newClientNoToken(c)
		if err != nil {
			return err
		}
		s, err := cl.Login(c.Context, tok)
		if err != nil {
			return err
		}
		return renderSession(c, s)
	},
}

var sessionCommand = group("session", "list and end sessions",
	&cli.Command{
		Name:  "list",
		Usage: "list your sessions (every session, for an admin)",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("session list takes no arguments")
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			all, err := listAll(func(p client.PageQuery) (api.List[api.Session], error) {
				return cl.ListSessions(c.Context, p)
			})
			if err != nil {
				return err
			}
			return render(c, api.List[api.Session]{Items: all}, func(w io.Writer) {
				rows := make([][]string, 0, len(all))
				for _, s := range all {
					rows = append(rows, []string{s.ID, s.User, s.Project, s.Kind, s.CredentialID, ts(s.CreatedAt), tsp(s.ExpiresAt)})
				}
				writeRows(w, []string{"ID", "USER", "PROJECT", "KIND", "CREDENTIAL", "CREATED", "EXPIRES"}, rows)
			})
		},
	},
	&cli.Command{
		Name:      "revoke",
		Usage:     "end a session: its token stops working at once",
		ArgsUsage: "ID",
		Action: withArg("ID", func(c *cli.Context, cl *client.Client, id string) error {
			if err := cl.RevokeSession(c.Context, id); err != nil {
				return err
			}
			return done(c, "session", id, "revoked")
		}),
	},
)

func renderSession(c *cli.Context, s api.Session) error {
	err := render(c, s, func(w io.Writer) {
		fields := []field{
			{"id", s.ID},
			{"kind", s.Kind},
			{"user", s.User},
			{"project", s.Project},
			{"credential", s.CredentialID},
			{"roles", strings.Join(s.Roles, ", ")},
			{"policies", strings.Join(s.Policies, ", ")},
		}
		fields = append(fields, ruleFields(s.AccessRules)...)
		fields = append(fields, field{"session type", s.SessionType}, field{"created", ts(s.CreatedAt)}, field{"expires", tsp(s.ExpiresAt)})
		writeFields(w, fields)
		if s.Token != "" {
			fmt.Fprintln(w)
			writeFields(w, []field{{"token", s.Token}})
		}
	})
	if err == nil && s.Token != "" && c.String("output") == "table" {
		fmt.Fprintln(c.App.ErrWriter, "save this session token now: it is not shown again")
	}
	return err
}

var tokenCommand = &cli.Command{
	Name:  "token",
	Usage: "get an OAuth2 access token (JWT): client credentials, or token exchange",
	Description: `Runs the OAuth2 client-credentials grant (RFC 6749 §4.4) against the daemon
with the client id and secret of an oauth2 credential, and prints the
access token: a JWT signed by the HSM key, verifiable with the daemon's
/.well-known/jwks.json.

With --subject-token-file it runs RFC 8693 token exchange instead: the
session (cfs_) or access token (cft_), or coffer JWT, in FILE is exchanged
for a JWT with at most its roles, expiring no later than it.

--audience (RFC 8693) and --resource (RFC 8707) name the token's aud: each
must be on the credential's audiences (coffer cred create --audience), or
the daemon answers invalid_target. Without them, aud is the first of the
credential's audiences, or the issuer when it has none.`,
	Flags: []cli.Flag{
		&cli.StringFlag{Name: "client-id", Usage: "the oauth2 credential's client `ID`"},
		&cli.StringFlag{Name: "client-secret-file", Usage: "read the client secret (cfo_) from `FILE` (- for standard input)"},
		&cli.StringFlag{Name: "subject-token-file", Usage: "token exchange: read the token to exchange (cfs_, cft_ or a JWT) from `FILE` (- for standard input)"},
		&cli.StringFlag{Name: "scope", Usage: "requested `SCOPE` (space-separated roles)"},
		&cli.StringFlag{Name: "audience", Usage: "the token's audience `AUD` (RFC 8693)"},
		&cli.StringFlag{Name: "resource", Usage: "the token's resource `URI` (RFC 8707)"},
	},
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("token takes no arguments")
		}
		to := client.TokenTarget{Audience: c.String("audience"), Resource: c.String("resource")}
		exchange := c.String("subject-token-file") != ""
		var tr api.TokenResponse
		switch {
		case exchange && (c.IsSet("client-id") || c.IsSet("client-secret-file")):
			return usagef("'%s' --subject-token-file takes no --client-id or --client-secret-file: the subject token authenticates", c.Command.HelpName)
		case exchange:
			subject, err := readTokenFile(c.String("subject-token-file"), "subject token file", c.App.Reader)
			if err != nil {
				return err
			}
			cl, err := newClientNoToken(c)
			if err != nil {
				return err
			}
			if tr, err = cl.TokenExchange(c.Context, subject, c.String("scope"), to); err != nil {
				return err
			}
		case c.String("client-id") == "" || c.String("client-secret-file") == "":
			return usagef("'%s' needs --client-id ID and --client-secret-file FILE (or --subject-token-file FILE)", c.Command.HelpName)
		default:
			secret, err := readTokenFile(c.String("client-secret-file"), "client secret file", c.App.Reader)
			if err != nil {
				return err
			}
			cl, err := newClientNoToken(c)
			if err != nil {
				return err
			}
			if tr, err = cl.ClientCredentialsFor(c.Context, c.String("client-id"), secret, c.String("scope"), to); err != nil {
				return err
			}
		}
		return render(c, tr, func(w io.Writer) {
			d := time.Duration(tr.ExpiresIn) * time.Second
			writeFields(w, []field{
				{"access token", tr.AccessToken},
				{"type", tr.TokenType},
				{"expires", fmt.Sprintf("%s (in %s)", ts(time.Now().Add(d)), d)},
				{"scope", tr.Scope},
			})
		})
	},
}

var introspectCommand = &cli.Command{
	Name:      "introspect",
	Usage:     "describe a token: active or not, whose, with which roles and rules (RFC 7662)",
	ArgsUsage: "TOKEN|-",
	Description: `Asks the daemon about any coffer token (cfa_, cft_, cfs_, cfo_ or JWT).
Pass - to read the token from standard input (it then stays out of ps).
An inactive token prints "active: no"; with --exit-code it also exits 1.`,
	Flags: []cli.Flag{
		&cli.BoolFlag{Name: "exit-code", Usage: "exit 1 when the token is not active"},
	},
	Action: func(c *cli.Context) error {
		arg, err := oneArg(c, "TOKEN (or - for standard input)")
		if err != nil {
			return err
		}
		var tok string
		if arg == "-" {
			tok, err = readTokenFile("-", "token", c.App.Reader)
		} else {
			tok, err = checkToken(arg, "the TOKEN argument")
		}
		if err != nil {
			return err
		}
		cl, err := newClientNoToken(c)
		if err != nil {
			return err
		}
		in, err := cl.Introspect(c.Context, tok)
		if err != nil {
			return err
		}
		err = render(c, in, func(w io.Writer) {
			if !in.Active {
				writeFields(w, []field{{"active", "no"}})
				return
			}
			fields := []field{
				{"active", "yes"},
				{"token type", in.TokenType},
				{"user", in.Username},
				{"subject", in.Subject},
				{"project", in.Project},
				{"client id", in.ClientID},
				{"scope", in.Scope},
				{"roles", strings.Join(in.Roles, ", ")},
				{"policies", strings.Join(in.Policies, ", ")},
			}
			if in.AccessRules != nil {
				fields = append(fields, ruleFields(in.AccessRules)...)
			}
			fields = append(fields,
				field{"credential", in.CredentialID},
				field{"session", in.SessionID},
				field{"issuer", in.Issuer},
				field{"audience", strings.Join(in.Audience, ", ")},
				field{"issued", unixTS(in.IssuedAt)},
				field{"expires", unixTS(in.ExpiresAt)},
			)
			writeFields(w, fields)
		})
		if err == nil && !in.Active && c.Bool("exit-code") {
			return &exitStatus{code: exitError}
		}
		return err
	},
}

func unixTS(sec int64) string {
	if sec == 0 {
		return ""
	}
	return ts(time.Unix(sec, 0))
}

var authorizeCommand = &cli.Command{
	Name:  "authorize",
	Usage: "ask whether a token may call a service's METHOD PATH",
	Description: `Asks the daemon whether the token (--token-file or --token) may call
--service with --method on --path, and prints the decision and its reason.
It exits 0 whatever the decision, unless --exit-code is given: then a
denial exits 1 (and an error talking to the daemon still exits 1 or 3).`,
	Flags: append(tokenFlags("token to check"),
		&cli.StringFlag{Name: "service", Usage: "the `SERVICE` being called"},
		&cli.StringFlag{Name: "method", Usage: "the HTTP `METHOD` of the call (for --service kubernetes: the Kubernetes verb, get, list...)"},
		&cli.StringFlag{Name: "path", Usage: "the `PATH` of the call"},
		&cli.StringFlag{Name: "audience", Usage: "the service's own `AUDIENCE`: a JWT minted for other audiences only is allowed where one of them asks"},
		&cli.BoolFlag{Name: "exit-code", Usage: "exit 1 when the call is denied"},
		&cli.BoolFlag{Name: "explain", Usage: "also say which policy rules held"},
	),
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("authorize takes no arguments")
		}
		tok, err := commandToken(c)
		if err != nil {
			return err
		}
		if tok == "" {
			return usagef("'%s' needs the token to check: --token-file FILE or --token TOKEN", c.Command.HelpName)
		}
		for _, f := range []string{"service", "method", "path"} {
			if c.String(f) == "" {
				return usagef("'%s' needs --service, --method and --path (--%s is missing)", c.Command.HelpName, f)
			}
		}
		if !strings.HasPrefix(c.String("path"), "/") {
			return usagef("--path %q must start with /", c.String("path"))
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		method := strings.ToUpper(c.String("method"))
		if c.String("service") == "kubernetes" {
			method = strings.ToLower(c.String("method")) // a Kubernetes verb
		}
		d, err := cl.Authorize(c.Context, api.AuthorizeRequest{
			Token: tok, Service: c.String("service"), Method: method, Path: c.String("path"),
			Audience: c.String("audience"), Explain: c.Bool("explain"),
		})
		if err != nil {
			return err
		}
		err = render(c, d, func(w io.Writer) {
			writeFields(w, []field{
				{"decision", map[bool]string{true: "allowed", false: "denied"}[d.Allowed]},
				{"reason", d.Reason},
				{"user", d.User},
				{"project", d.Project},
				{"audience", strings.Join(d.Audience, ", ")},
				{"roles", strings.Join(d.Roles, ", ")},
				{"policies", strings.Join(d.Policies, ", ")},
				{"matched rules", strings.Join(d.Matched, ", ")},
			})
		})
		if err == nil && !d.Allowed && c.Bool("exit-code") {
			return &exitStatus{code: exitError}
		}
		return err
	},
}
