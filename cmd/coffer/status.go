package main

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

var statusCommand = &cli.Command{
	Name:  "status",
	Usage: "show the daemon's version, uptime, HSM and store health; exit 4 when unhealthy",
	Action: func(c *cli.Context) error {
		if c.Args().Present() {
			return usagef("status takes no arguments")
		}
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		st, err := cl.Status(c.Context)
		if err != nil {
			return err
		}
		h, err := cl.Health(c.Context)
		var apiErr *client.APIError
		if errors.As(err, &apiErr) && apiErr.Status == http.StatusNotFound {
			h, err = healthOfStatus(st), nil // a daemon older than GET /v1/health
		}
		if err != nil {
			return err
		}
		if err := render(c, st, func(w io.Writer) {
			health := func(ok bool, msg string) string {
				if ok {
					return "healthy"
				}
				return "UNHEALTHY: " + msg
			}
			store := health(st.Store.Healthy, st.Store.Error)
			if st.Store.Since != nil {
				store += " (since " + ts(*st.Store.Since) + ")"
			}
			fields := []field{
				{"version", st.Version},
				{"started", ts(st.StartedAt)},
				{"uptime", (time.Duration(st.UptimeSeconds) * time.Second).String()},
				{"mode", map[bool]string{true: "dev", false: "production"}[st.Dev]},
				{"hsm", health(st.HSM.Healthy, st.HSM.Error)},
				{"hsm module", st.HSM.Module},
				{"hsm token", st.HSM.TokenLabel},
				{"hsm keys", strings.Join(st.HSM.KeyLabels, ", ")},
				{"hsm kek scheme", st.HSM.Schemes.KEK},
				{"hsm signing", st.HSM.Schemes.Signing},
				{"store", store},
			}
			if st.Counts != (api.Counts{}) { // system admins and metrics readers only
				fields = append(fields,
					field{"projects", fmt.Sprint(st.Counts.Projects)},
					field{"secrets", fmt.Sprint(st.Counts.Secrets)},
					field{"users", fmt.Sprint(st.Counts.Users)},
					field{"credentials", fmt.Sprint(st.Counts.Credentials)})
			}
			writeFields(w, fields)
		}); err != nil {
			return err
		}
		if h.Status != api.HealthOK {
			fmt.Fprintf(c.App.ErrWriter, "coffer: the daemon is unhealthy: %s does not answer\n", strings.Join(h.Failed, ", "))
			return &exitStatus{code: exitUnhealthy}
		}
		return nil
	},
}

// healthOfStatus is what a daemon without GET /v1/health says of its
// health in its status.
func healthOfStatus(st api.Status) api.Health {
	h := api.Health{Status: api.HealthOK}
	if !st.HSM.Healthy {
		h.Failed = append(h.Failed, "hsm")
	}
	if !st.Store.Healthy {
		h.Failed = append(h.Failed, "store")
	}
	if len(h.Failed) > 0 {
		h.Status = api.HealthUnhealthy
	}
	return h
}
