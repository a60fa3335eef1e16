package main

import (
	"io"
	"strings"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

var projectCommand = group("project", "manage projects (system admins)",
	&cli.Command{
		Name:      "create",
		Usage:     "create a project",
		ArgsUsage: "NAME",
		Action: withArg("NAME", func(c *cli.Context, cl *client.Client, name string) error {
			p, err := cl.CreateProject(c.Context, name)
			if err != nil {
				return err
			}
			return renderProject(c, p)
		}),
	},
	&cli.Command{
		Name:      "get",
		Usage:     "show a project",
		ArgsUsage: "NAME|ID",
		Action: withArg("NAME|ID", func(c *cli.Context, cl *client.Client, ref string) error {
			p, err := cl.GetProject(c.Context, ref)
			if err != nil {
				return err
			}
			return renderProject(c, p)
		}),
	},
	&cli.Command{
		Name:  "list",
		Usage: "list projects",
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("project list takes no arguments")
			}
			var all []api.Project
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			page := client.PageQuery{}
			for {
				l, err := cl.ListProjects(c.Context, page)
				if err != nil {
					return err
				}
				all = append(all, l.Items...)
				if l.Next == "" {
					break
				}
				page.After = l.Next
			}
			return render(c, api.List[api.Project]{Items: all}, func(w io.Writer) {
				rows := make([][]string, 0, len(all))
				for _, p := range all {
					rows = append(rows, []string{p.Name, p.ID, ts(p.CreatedAt)})
				}
				writeRows(w, []string{"NAME", "ID", "CREATED"}, rows)
			})
		},
	},
	&cli.Command{
		Name:      "set-policies",
		Usage:     "attach policies to every request in a project, replacing those it had",
		ArgsUsage: "PROJECT [POLICY...]",
		Description: `Names the project's own policies, or global ones; with no POLICY, detaches
them all. The project's admins may.`,
		Action: func(c *cli.Context) error {
			if !c.Args().Present() {
				return usagef("'%s' needs the PROJECT", c.Command.HelpName)
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			p, err := cl.SetProjectPolicies(c.Context, c.Args().First(), c.Args().Tail())
			if err != nil {
				return err
			}
			return renderProject(c, p)
		},
	},
	&cli.Command{
		Name:      "delete",
		Usage:     "delete an empty project",
		ArgsUsage: "NAME|ID",
		Action: withArg("NAME|ID", func(c *cli.Context, cl *client.Client, ref string) error {
			if err := cl.DeleteProject(c.Context, ref); err != nil {
				return err
			}
			return done(c, "project", ref, "deleted")
		}),
	},
)

func renderProject(c *cli.Context, p api.Project) error {
	return render(c, p, func(w io.Writer) {
		writeFields(w, []field{{"name", p.Name}, {"id", p.ID}, {"policies", strings.Join(p.Policies, ", ")}, {"created", ts(p.CreatedAt)}})
	})
}

// oneArg returns the single positional argument of a command.
func oneArg(c *cli.Context, what string) (string, error) {
	switch c.NArg() {
	case 1:
		return c.Args().First(), nil
	case 0:
		return "", usagef("'%s' needs %s", c.Command.HelpName, what)
	}
	return "", usagef("'%s' takes one %s, got %d arguments", c.Command.HelpName, what, c.NArg())
}
