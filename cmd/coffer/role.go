package main

import (
	"io"

	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

var roleCommand = group("role", "give users roles on projects: reader < member < admin",
	&cli.Command{
		Name:      "set",
		Aliases:   []string{"add"},
		Usage:     "give a user a role on a project (admin implies member implies reader)",
		ArgsUsage: "PROJECT USER ROLE",
		Action: func(c *cli.Context) error {
			project, user, role, err := roleArgs(c)
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			pr, err := cl.SetRole(c.Context, project, user, role)
			if err != nil {
				return err
			}
			return render(c, pr, func(w io.Writer) {
				writeFields(w, []field{{"project", pr.Project}, {"user", pr.User}, {"role", pr.Role}})
			})
		},
	},
	&cli.Command{
		Name:      "remove",
		Aliases:   []string{"rm"},
		Usage:     "take a role away; the user's credentials there that need it are deleted",
		ArgsUsage: "PROJECT USER ROLE",
		Action: func(c *cli.Context) error {
			project, user, role, err := roleArgs(c)
			if err != nil {
				return err
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			if err := cl.RemoveRole(c.Context, project, user, role); err != nil {
				return err
			}
			return done(c, "role", role+" of "+user+" in "+project, "removed")
		},
	},
	&cli.Command{
		Name:      "list",
		Usage:     "list the role assignments of a project",
		ArgsUsage: "PROJECT",
		Action: withArg("PROJECT", func(c *cli.Context, cl *client.Client, project string) error {
			l, err := cl.ListRoles(c.Context, project)
			if err != nil {
				return err
			}
			return render(c, l, func(w io.Writer) {
				rows := make([][]string, 0, len(l.Items))
				for _, r := range l.Items {
					rows = append(rows, []string{r.User, r.Role, r.Project})
				}
				writeRows(w, []string{"USER", "ROLE", "PROJECT"}, rows)
			})
		}),
	},
)

func roleArgs(c *cli.Context) (project, user, role string, err error) {
	if c.NArg() != 3 {
		return "", "", "", usagef("'%s' needs PROJECT USER ROLE, got %s", c.Command.HelpName, plural(c.NArg(), "argument"))
	}
	a := c.Args()
	project, user, role = a.Get(0), a.Get(1), a.Get(2)
	switch role {
	case "reader", "member", "admin":
		return project, user, role, nil
	}
	return "", "", "", usagef("unknown role %q: use reader, member or admin", role)
}
