package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/api"
)

var whoamiCommand = &cli.Command{
	Name:  "whoami",
	Usage: "show who the daemon takes you to be: your connection, your user and roles, your token",
	Description: `Asks the daemon (GET /v1/whoami) who it takes the caller to be: the
connection as the kernel reported it (uid, gid and pid on the socket; CID
over vsock; the VM of a hybrid-vsock socket), whether that makes a system
admin, the user it maps to with its roles, and the bearer token's kind,
credential, project, roles and expiry when one was given (--token-file,
$COFFER_TOKEN). A token sees of its user only its own project.`,
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("whoami takes no arguments")
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		me, err := cl.WhoAmI(c.Context)
		if err != nil {
			return err
		}
		return render(c, me, func(w io.Writer) { writeSelf(w, me) })
	},
}

// writeSelf writes whoami's table.
func writeSelf(w io.Writer, me api.Self) {
	conn := me.Channel
	switch {
	case me.UID != nil:
		conn += fmt.Sprintf(" uid %d gid %d pid %d", *me.UID, derefUint32(me.GID), me.PID)
	case me.CID != nil:
		conn += fmt.Sprintf(" cid %d", *me.CID)
	}
	if me.VM != "" {
		conn += " vm " + me.VM
	}
	as := "nobody: no user is bound to this connection"
	switch {
	case me.SystemAdmin:
		as = "system admin"
	case me.User != nil && me.Token != nil:
		as = "user " + me.User.Name + " (by its token)"
	case me.User != nil:
		as = "user " + me.User.Name
	}
	fields := []field{{"connection", conn}, {"acting as", as}}
	if me.MetricsReader && !me.SystemAdmin {
		fields = append(fields, field{"metrics", "may read"})
	}
	if u := me.User; u != nil {
		roles := make([]string, 0, len(u.Roles))
		for _, r := range u.Roles {
			roles = append(roles, r.Project+":"+r.Role)
		}
		fields = append(fields, field{"user id", u.ID}, field{"kind", u.Kind}, field{"roles", strings.Join(roles, ", ")})
	}
	if t := me.Token; t != nil {
		limits := "restricted (no management writes)"
		if t.Unrestricted {
			limits = "unrestricted"
		}
		if t.AccessRules {
			limits += ", access rules"
		}
		expires := "never"
		if t.ExpiresAt != nil {
			expires = ts(*t.ExpiresAt)
		}
		fields = append(fields,
			field{"token", t.Kind},
			field{"credential", strings.TrimSpace(t.CredentialName + " " + t.CredentialID)},
			field{"project", t.Project},
			field{"token roles", strings.Join(t.Roles, ", ")},
			field{"token limits", limits},
			field{"token expires", expires})
	}
	writeFields(w, fields)
}

func derefUint32(p *uint32) uint32 {
	if p == nil {
		return 0
	}
	return *p
}
