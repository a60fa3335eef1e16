package main

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
)

var (
	policyProjectFlag = &cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "the policy is `PROJECT`'s (without it: a global policy)"}
	policyFileFlag    = &cli.StringFlag{Name: "file", Aliases: []string{"f"}, Usage: "the policy document, JSON or YAML, at `PATH` (- reads standard input)"}
)

var policyCommand = group("policy", "manage policies: rules with CEL conditions that narrow what callers may do",
	&cli.Command{
		Name:      "create",
		Usage:     "create a policy from a document",
		ArgsUsage: "NAME",
		Description: `The document has a description and rules, each an effect (allow or deny)
and a CEL condition over request, subject and peer; see the README's
"Policies". A project's admins write its policies; system admins write
the global ones.`,
		Flags: []cli.Flag{policyProjectFlag, policyFileFlag},
		Action: withArg("NAME", func(c *cli.Context, cl *client.Client, name string) error {
			doc, err := readPolicyFile(c)
			if err != nil {
				return err
			}
			p, err := cl.CreatePolicy(c.Context, c.String("project"), api.PolicyRequest{Name: name, Description: doc.Description, Rules: doc.Rules})
			if err != nil {
				return err
			}
			return renderPolicy(c, p)
		}),
	},
	&cli.Command{
		Name:      "update",
		Usage:     "replace a policy's description and rules",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{policyProjectFlag, policyFileFlag},
		Action: withArg("NAME", func(c *cli.Context, cl *client.Client, name string) error {
			doc, err := readPolicyFile(c)
			if err != nil {
				return err
			}
			p, err := cl.UpdatePolicy(c.Context, c.String("project"), name, api.PolicyRequest{Description: doc.Description, Rules: doc.Rules})
			if err != nil {
				return err
			}
			return renderPolicy(c, p)
		}),
	},
	&cli.Command{
		Name:      "get",
		Usage:     "show a policy and what it is attached to",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{policyProjectFlag},
		Action: withArg("NAME", func(c *cli.Context, cl *client.Client, name string) error {
			p, err := cl.GetPolicy(c.Context, c.String("project"), name)
			if err != nil {
				return err
			}
			return renderPolicy(c, p)
		}),
	},
	&cli.Command{
		Name:  "list",
		Usage: "list a project's policies (without --project: the global ones)",
		Flags: []cli.Flag{policyProjectFlag},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("policy list takes no arguments")
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			l, err := cl.ListPolicies(c.Context, c.String("project"))
			if err != nil {
				return err
			}
			return render(c, l, func(w io.Writer) {
				rows := make([][]string, 0, len(l.Items))
				for _, p := range l.Items {
					rows = append(rows, []string{p.Name, strconv.Itoa(len(p.Rules)), p.Description, ts(p.UpdatedAt)})
				}
				writeRows(w, []string{"NAME", "RULES", "DESCRIPTION", "UPDATED"}, rows)
			})
		},
	},
	&cli.Command{
		Name:      "delete",
		Usage:     "delete a policy attached to nothing",
		ArgsUsage: "NAME",
		Flags:     []cli.Flag{policyProjectFlag},
		Action: withArg("NAME", func(c *cli.Context, cl *client.Client, name string) error {
			if err := cl.DeletePolicy(c.Context, c.String("project"), name); err != nil {
				return err
			}
			return done(c, "policy", name, "deleted")
		}),
	},
	&cli.Command{
		Name:  "check",
		Usage: "check a policy document as the daemon would, without it",
		Description: `Reads the document (--file), checks its shape and compiles its conditions
with the daemon's own CEL environment: type errors and conditions too
costly are reported with their rule, line and column.`,
		Flags: []cli.Flag{policyFileFlag},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("policy check takes no arguments")
			}
			doc, err := readPolicyFile(c)
			if err != nil {
				return err
			}
			if err := checkPolicy(doc); err != nil {
				return err
			}
			unit := "rules"
			if len(doc.Rules) == 1 {
				unit = "rule"
			}
			_, err = fmt.Fprintf(c.App.Writer, "%d %s: the policy compiles\n", len(doc.Rules), unit)
			return err
		},
	},
)

// readPolicyFile reads and parses the document of --file.
func readPolicyFile(c *cli.Context) (api.PolicyDocument, error) {
	return readPolicyDocument(c, c.String("file"))
}

// readPolicyDocument reads and parses the document at path (- standard
// input); every mistake is a usage error.
func readPolicyDocument(c *cli.Context, path string) (api.PolicyDocument, error) {
	if path == "" {
		return api.PolicyDocument{}, usagef("'%s' needs the policy document: --file PATH (- for standard input)", c.Command.HelpName)
	}
	var data []byte
	var err error
	if path == "-" {
		data, err = io.ReadAll(io.LimitReader(c.App.Reader, api.MaxPolicyDocumentBytes+1))
	} else {
		data, err = os.ReadFile(path)
	}
	if err != nil {
		return api.PolicyDocument{}, usagef("reading the policy document: %v", err)
	}
	doc, err := api.ParsePolicyDocument(data)
	if err != nil {
		return api.PolicyDocument{}, usagef("%s: %v", path, err)
	}
	return doc, nil
}

func renderPolicy(c *cli.Context, p api.Policy) error {
	return render(c, p, func(w io.Writer) {
		scope := p.Project
		if scope == "" {
			scope = "(global)"
		}
		fields := []field{{"name", p.Name}, {"id", p.ID}, {"project", scope}, {"description", p.Description}}
		for i, r := range p.Rules {
			fields = append(fields, field{fmt.Sprintf("rule %d", i+1), r.Effect + " if " + oneLine(r.Condition)})
		}
		if p.UsedBy != nil {
			fields = append(fields,
				field{"used by projects", strings.Join(p.UsedBy.Projects, ", ")},
				field{"used by users", strings.Join(p.UsedBy.Users, ", ")},
				field{"used by credentials", strings.Join(p.UsedBy.Credentials, ", ")})
		}
		fields = append(fields, field{"created", ts(p.CreatedAt)}, field{"updated", ts(p.UpdatedAt)})
		writeFields(w, fields)
	})
}

// oneLine folds a condition written over several lines into one.
func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
