package main

import (
	"io"
	"strings"

	"github.com/coffer-hsm/coffer/api"
	"github.com/urfave/cli/v2"
)

// hsmInfoCommand shows the token and the schemes chosen for it, from GET
// /v1/status (its hsm object: the token's description for system admins).
var hsmInfoCommand = &cli.Command{
	Name:  "info",
	Usage: "show the PKCS#11 module and token, and the KEK and signing schemes chosen for its mechanisms, with the reasons",
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("hsm info takes no arguments")
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		st, err := cl.Status(c.Context)
		if err != nil {
			return err
		}
		return render(c, st.HSM, func(w io.Writer) { writeHSMInfo(w, st.HSM) })
	},
}

func writeHSMInfo(w io.Writer, h api.HSMStatus) {
	health := "healthy"
	if !h.Healthy {
		health = "UNHEALTHY: " + h.Error
	}
	fields := []field{
		{"module", h.Module},
		{"token", h.TokenLabel},
	}
	if t := h.Token; t != nil {
		fields = append(fields,
			field{"manufacturer", t.Manufacturer},
			field{"model", t.Model},
			field{"serial", t.Serial},
			field{"library", t.Library},
		)
	}
	fields = append(fields,
		field{"health", health},
		field{"kek scheme", h.Schemes.KEK},
		field{"kek reason", h.Schemes.KEKReason},
		field{"signing scheme", h.Schemes.Signing},
		field{"signing reason", h.Schemes.SigningReason},
		field{"keys", strings.Join(h.KeyLabels, ", ")},
	)
	writeFields(w, fields)
}
