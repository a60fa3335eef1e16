package main

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
)

var (
	unixUIDFlag    = &cli.StringSliceFlag{Name: "unix-uid", Usage: "bind local uid `N`: its processes act as this user on the socket (repeatable)"}
	vsockCIDFlag   = &cli.StringSliceFlag{Name: "vsock-cid", Usage: "bind VM context id `N`: its connections act as this user (repeatable)"}
	vmNameFlag     = &cli.StringSliceFlag{Name: "vm-name", Usage: "bind hybrid-vsock VM `NAME` (a [[vm]] of the daemon's config): its connections act as this user (repeatable)"}
	userPolicyFlag = &cli.StringSliceFlag{Name: "policy", Usage: "attach `POLICY` to every request of the user: a global one by name, a project's as PROJECT/NAME (repeatable)"}
	ttlFlag        = &cli.StringFlag{Name: "access-token-ttl", Usage: "`DURATION` of the sessions its logins make and of its OAuth2 JWTs, e.g. 1h, 30m, 2days (default 1h; access-token credentials last until their --expire-in instead)"}
)

var userCommand = group("user", "manage users and their unix uid, vsock CID and VM bindings (system admins)",
	&cli.Command{
		Name:      "create",
		Usage:     "create a user",
		ArgsUsage: "NAME",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "kind", Usage: "human or workload", Value: "human"},
			unixUIDFlag, vsockCIDFlag, vmNameFlag, ttlFlag, userPolicyFlag,
			&cli.BoolFlag{Name: "disabled", Usage: "create the user disabled"},
		},
		Action: func(c *cli.Context) error {
			name, err := oneArg(c, "NAME")
			if err != nil {
				return err
			}
			in := api.UserCreateRequest{Name: name, Kind: c.String("kind"), Disabled: c.Bool("disabled")}
			if in.Kind != "human" && in.Kind != "workload" {
				return usagef("--kind must be human or workload, not %q", in.Kind)
			}
			if in.UnixUIDs, err = uint32s(c, "unix-uid"); err != nil {
				return err
			}
			if in.VsockCIDs, err = uint32s(c, "vsock-cid"); err != nil {
				return err
			}
			in.VMNames = c.StringSlice("vm-name")
			in.Policies = c.StringSlice("policy")
			if c.IsSet("access-token-ttl") {
				if in.AccessTokenTTL, err = window(c, "access-token-ttl"); err != nil {
					return err
				}
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			u, err := cl.CreateUser(c.Context, in)
			if err != nil {
				return err
			}
			return renderUser(c, u)
		},
	},
	&cli.Command{
		Name:      "get",
		Usage:     "show a user and its roles",
		ArgsUsage: "NAME|ID",
		Action: withArg("NAME|ID", func(c *cli.Context, cl *client.Client, ref string) error {
			u, err := cl.GetUser(c.Context, ref)
			if err != nil {
				return err
			}
			return renderUser(c, u)
		}),
	},
	&cli.Command{
		Name:  "list",
		Usage: "list users",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "project", Aliases: []string{"p"}, Usage: "only users with a role on `PROJECT`"},
		},
		Action: func(c *cli.Context) error {
			if c.Args().Present() {
				return usagef("user list takes no arguments")
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			all, err := listAll(func(p client.PageQuery) (api.List[api.User], error) {
				return cl.ListUsers(c.Context, c.String("project"), p)
			})
			if err != nil {
				return err
			}
			return render(c, api.List[api.User]{Items: all}, func(w io.Writer) {
				rows := make([][]string, 0, len(all))
				for _, u := range all {
					rows = append(rows, []string{u.Name, u.ID, u.Kind, userStatus(u), joinUint32s(u.UnixUIDs), joinUint32s(u.VsockCIDs), u.AccessTokenTTL})
				}
				writeRows(w, []string{"NAME", "ID", "KIND", "STATUS", "UNIX UIDS", "VSOCK CIDS", "TOKEN TTL"}, rows)
			})
		},
	},
	&cli.Command{
		Name:      "update",
		Usage:     "change a user: enable/disable, bindings, token TTL",
		ArgsUsage: "NAME|ID",
		Description: `Changes only what is given. --unix-uid and --vsock-cid replace the whole
list of bindings (give each one you want to keep); --clear-unix-uids and
--clear-vsock-cids remove them all. Disabling a user makes its credentials
and sessions unusable until it is enabled again.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "disable", Usage: "disable the user"},
			&cli.BoolFlag{Name: "enable", Usage: "enable the user"},
			unixUIDFlag,
			&cli.BoolFlag{Name: "clear-unix-uids", Usage: "remove every unix uid binding"},
			vsockCIDFlag,
			&cli.BoolFlag{Name: "clear-vsock-cids", Usage: "remove every vsock CID binding"},
			vmNameFlag,
			&cli.BoolFlag{Name: "clear-vm-names", Usage: "remove every VM name binding"},
			ttlFlag,
			userPolicyFlag,
			&cli.BoolFlag{Name: "clear-policies", Usage: "detach every policy from the user"},
		},
		Action: func(c *cli.Context) error {
			ref, err := oneArg(c, "NAME|ID")
			if err != nil {
				return err
			}
			var p api.UserPatchRequest
			switch {
			case c.Bool("disable") && c.Bool("enable"):
				return usagef("--disable and --enable do not go together")
			case c.Bool("disable"), c.Bool("enable"):
				d := c.Bool("disable")
				p.Disabled = &d
			}
			if p.UnixUIDs, err = replaceList(c, "unix-uid", "clear-unix-uids"); err != nil {
				return err
			}
			if p.VsockCIDs, err = replaceList(c, "vsock-cid", "clear-vsock-cids"); err != nil {
				return err
			}
			switch vms := c.StringSlice("vm-name"); {
			case vms != nil && c.Bool("clear-vm-names"):
				return usagef("--vm-name and --clear-vm-names do not go together")
			case vms != nil:
				p.VMNames = &vms
			case c.Bool("clear-vm-names"):
				p.VMNames = &[]string{}
			}
			if c.IsSet("access-token-ttl") {
				ttl, err := window(c, "access-token-ttl")
				if err != nil {
					return err
				}
				p.AccessTokenTTL = &ttl
			}
			switch pols := c.StringSlice("policy"); {
			case pols != nil && c.Bool("clear-policies"):
				return usagef("--policy and --clear-policies do not go together")
			case pols != nil:
				p.Policies = &pols
			case c.Bool("clear-policies"):
				p.Policies = &[]string{}
			}
			if p.Disabled == nil && p.UnixUIDs == nil && p.VsockCIDs == nil && p.VMNames == nil && p.AccessTokenTTL == nil && p.Policies == nil {
				return usagef("'%s' needs something to change: --disable, --enable, --unix-uid, --clear-unix-uids, --vsock-cid, --clear-vsock-cids, --vm-name, --clear-vm-names, --access-token-ttl, --policy or --clear-policies", c.Command.HelpName)
			}
			cl, err := newClient(c)
			if err != nil {
				return err
			}
			u, err := cl.PatchUser(c.Context, ref, p)
			if err != nil {
				return err
			}
			return renderUser(c, u)
		},
	},
	&cli.Command{
		Name:      "delete",
		Usage:     "delete a user with its credentials and sessions",
		ArgsUsage: "NAME|ID",
		Action: withArg("NAME|ID", func(c *cli.Context, cl *client.Client, ref string) error {
			if err := cl.DeleteUser(c.Context, ref); err != nil {
				return err
			}
			return done(c, "user", ref, "deleted")
		}),
	},
)

func renderUser(c *cli.Context, u api.User) error {
	return render(c, u, func(w io.Writer) {
		roles := make([]string, 0, len(u.Roles))
		for _, r := range u.Roles {
			roles = append(roles, r.Project+":"+r.Role)
		}
		writeFields(w, []field{
			{"name", u.Name},
			{"id", u.ID},
			{"kind", u.Kind},
			{"status", userStatus(u)},
			{"unix uids", joinUint32s(u.UnixUIDs)},
			{"vsock cids", joinUint32s(u.VsockCIDs)},
			{"vm names", strings.Join(u.VMNames, ", ")},
			{"token ttl", u.AccessTokenTTL},
			{"roles", strings.Join(roles, ", ")},
			{"policies", strings.Join(u.Policies, ", ")},
			{"created", ts(u.CreatedAt)},
			{"updated", ts(u.UpdatedAt)},
		})
	})
}

func userStatus(u api.User) string {
	if u.Disabled {
		return "disabled"
	}
	return "enabled"
}

func joinUint32s(ns []uint32) string {
	s := make([]string, 0, len(ns))
	for _, n := range ns {
		s = append(s, strconv.FormatUint(uint64(n), 10))
	}
	return strings.Join(s, ", ")
}

// uint32s parses a repeatable numeric flag; nil when not given.
func uint32s(c *cli.Context, name string) ([]uint32, error) {
	vals := c.StringSlice(name)
	if len(vals) == 0 {
		return nil, nil
	}
	out := make([]uint32, 0, len(vals))
	for _, v := range vals {
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, usagef("--%s takes a number from 0 to %d, not %q", name, uint32(1<<32-1), v)
		}
		out = append(out, uint32(n))
	}
	return out, nil
}

// replaceList is a PATCH list field: nil (unchanged) unless --list or
// --clear is given.
func replaceList(c *cli.Context, list, clearFlag string) (*[]uint32, error) {
	ns, err := uint32s(c, list)
	if err != nil {
		return nil, err
	}
	switch {
	case ns != nil && c.Bool(clearFlag):
		return nil, usagef("--%s and --%s do not go together", list, clearFlag)
	case ns != nil:
		return &ns, nil
	case c.Bool(clearFlag):
		return &[]uint32{}, nil
	}
	return nil, nil
}

// window checks a duration flag ("10m", "7d", "3days") the way the daemon
// parses it, so a typo is a usage error; the text is sent as given.
func window(c *cli.Context, name string) (string, error) {
	v := c.String(name)
	if _, err := api.ParseWindow("--"+name, v, time.Now()); err != nil {
		return "", usagef("%s", strings.TrimSpace(err.Error()))
	}
	return v, nil
}

// listAll reads every page of a list.
func listAll[T any](page func(client.PageQuery) (api.List[T], error)) ([]T, error) {
	var all []T
	var q client.PageQuery
	for {
		l, err := page(q)
		if err != nil {
			return nil, err
		}
		all = append(all, l.Items...)
		if l.Next == "" || l.Next == q.After {
			return all, nil
		}
		q.After = l.Next
	}
}

// plural is n and the noun, pluralised naively.
func plural(n int, noun string) string {
	if n == 1 {
		return fmt.Sprintf("1 %s", noun)
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
