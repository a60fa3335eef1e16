package main

import (
	"io"
	"strconv"

	"github.com/coffer-hsm/coffer/client"
	"github.com/urfave/cli/v2"
)

// k8sSignerCommands are the 'coffer k8s' commands of the external
// service-account token signer's keys (system admins).
func k8sSignerCommands() []*cli.Command {
	return []*cli.Command{
		{
			Name:  "sa-keys",
			Usage: "list the Kubernetes service-account signing keys: the current one, and retired ones still published until the tokens they signed expire",
			Action: noArgs("k8s sa-keys", func(c *cli.Context, cl *client.Client) error {
				k, err := cl.K8sSAKeys(c.Context)
				if err != nil {
					return err
				}
				return render(c, k, func(w io.Writer) {
					rows := make([][]string, 0, len(k.Keys))
					for _, v := range k.Keys {
						rows = append(rows, []string{v.Label, strconv.Itoa(v.Version), v.Alg, mark(v.Current), mark(v.Published),
							strconv.FormatUint(v.Signed, 10), tsp(v.RetireAfter), v.Kid})
					}
					writeRows(w, []string{"SA KEY", "VERSION", "ALG", "CURRENT", "PUBLISHED", "SIGNED", "RETIRE AFTER", "KID"}, rows)
				})
			}),
		},
		{
			Name:  "rotate-sa-key",
			Usage: "make a new Kubernetes service-account signing key current; the previous one stays published until every token it signed has expired",
			Action: noArgs("k8s rotate-sa-key", func(c *cli.Context, cl *client.Client) error {
				r, err := cl.RotateK8sSAKey(c.Context)
				if err != nil {
					return err
				}
				return render(c, r, func(w io.Writer) {
					f := []field{{"current", r.Current.Label}, {"kid", r.Current.Kid}, {"alg", r.Current.Alg}}
					if p := r.Previous; p != nil {
						f = append(f, field{"previous", p.Label}, field{"previous kid", p.Kid}, field{"previous published until", tsp(p.RetireAfter)})
					}
					writeFields(w, f)
				})
			}),
		},
	}
}
