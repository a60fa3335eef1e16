package main

import (
	"io"
	"strings"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

var accessRuleCommand = group("access-rule", "save reusable access rules (service, method, path)",
	&cli.Command{
		Name:  "create",
		Usage: "save an access rule and print its id",
		Description: `A rule allows one method on paths of one service. In --path, * and {name}
match one non-empty segment, ** matches anything (also nothing and '/');
every other character is literal. Service "coffer" restricts calls to
coffer's own API. Use the id with 'coffer cred create --access-rule-id'.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "service", Usage: "the `SERVICE` the rule is for (coffer: coffer's own API)"},
			&cli.StringFlag{Name: "method", Usage: "HTTP `METHOD`: GET, HEAD, POST, PUT, PATCH or DELETE"},
			&cli.StringFlag{Name: "path", Usage: "`PATH` pattern, starting with /"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("access-rule create takes no arguments; use --service, --method and --path")
			}
			for _, f := range []string{"service", "method", "path"} {
				if c.String(f) == "" {
					return usagef("'%s' needs --service, --method and --path (--%s is missing)", c.Command.HelpName, f)
				}
			}
			r, err := checkRule(c.String("service"), c.String("method"), c.String("path"))
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			sr, err := cl.CreateAccessRule(c.Context, r)
			if err != nil {
				return err
			}
			return render(c, sr, func(w io.Writer) {
				writeFields(w, []field{
					{"id", sr.ID}, {"service", sr.Service}, {"method", sr.Method}, {"path", sr.Path}, {"created", ts(sr.CreatedAt)},
				})
			})
		},
	},
	&cli.Command{
		Name:  "list",
		Usage: "list saved access rules",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("access-rule list takes no arguments")
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			all, err := listAll(func(p client.PageQuery) (api.List[api.SavedRule], error) {
				return cl.ListAccessRules(c.Context, p)
			})
			if err != nil {
				return err
			}
			return render(c, api.List[api.SavedRule]{Items: all}, func(w io.Writer) {
				rows := make([][]string, 0, len(all))
				for _, r := range all {
					rows = append(rows, []string{r.ID, r.Service, r.Method, r.Path, ts(r.CreatedAt)})
				}
				writeRows(w, []string{"ID", "SERVICE", "METHOD", "PATH", "CREATED"}, rows)
			})
		},
	},
	&cli.Command{
		Name:      "delete",
		Usage:     "delete a saved rule that no credential uses",
		ArgsUsage: "ID",
		Action: withArg("ID", func(c *cli.Context, cl *client.Client, id string) error {
			if err := cl.DeleteAccessRule(c.Context, id); err != nil {
				return err
			}
			return done(c, "access rule", id, "deleted")
		}),
	},
)

var ruleMethods = []string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}

// parseAccessRule parses --access-rule SERVICE:METHOD:PATH. The path keeps
// any further ':' (it is everything after the second one).
func parseAccessRule(s string) (api.AccessRule, error) {
	parts := strings.SplitN(s, ":", 3)
	if len(parts) != 3 {
		return api.AccessRule{}, usagef("--access-rule %q: want SERVICE:METHOD:PATH, e.g. coffer:GET:/v1/status", s)
	}
	return checkRule(parts[0], parts[1], parts[2])
}

// checkRule checks a rule's parts and upper-cases the method (lower-cases
// it for service kubernetes, whose methods are Kubernetes verbs: get, list,
// watch, create...; the daemon checks them).
func checkRule(service, method, path string) (api.AccessRule, error) {
	if service == "" {
		return api.AccessRule{}, usagef("access rule: the service is empty")
	}
	if service == "kubernetes" {
		if method == "" {
			return api.AccessRule{}, usagef("access rule: the Kubernetes verb is empty")
		}
		if !strings.HasPrefix(path, "/") {
			return api.AccessRule{}, usagef("access rule: path %q must start with /", path)
		}
		return api.AccessRule{Service: service, Method: strings.ToLower(method), Path: path}, nil
	}
	m := strings.ToUpper(method)
	known := false
	for _, x := range ruleMethods {
		known = known || x == m
	}
	if !known {
		return api.AccessRule{}, usagef("access rule: method %q is not one of %s", method, strings.Join(ruleMethods, ", "))
	}
	if !strings.HasPrefix(path, "/") {
		return api.AccessRule{}, usagef("access rule: path %q must start with /", path)
	}
	return api.AccessRule{Service: service, Method: m, Path: path}, nil
}

// ruleLine is a rule as one line: SERVICE METHOD PATH, or the saved rule's
// id when only that is known.
func ruleLine(r api.AccessRule) string {
	if r.Service == "" && r.ID != "" {
		return "rule " + r.ID
	}
	return r.Service + " " + r.Method + " " + r.Path
}

// ruleFields is the "access rules" rows of a record: nil rules are no
// restriction, an empty list allows nothing.
func ruleFields(rules []api.AccessRule) []field {
	switch {
	case rules == nil:
		return []field{{"access rules", "none (not restricted by rules)"}}
	case len(rules) == 0:
		return []field{{"access rules", "empty list: nothing allowed"}}
	}
	out := make([]field, 0, len(rules))
	for i, r := range rules {
		name := ""
		if i == 0 {
			name = "access rules"
		}
		out = append(out, field{name, ruleLine(r)})
	}
	return out
}
