package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/coffer-hsm/coffer/api"
	"github.com/coffer-hsm/coffer/audit"
	"github.com/coffer-hsm/coffer/client"
)

// auditFollowEvery is how often tail -f asks for new entries.
const auditFollowEvery = time.Second

var auditCommand = group("audit", "read and verify the tamper-evident audit log (system admins)",
	&cli.Command{
		Name:  "tail",
		Usage: "print the last entries of the audit log",
		Description: `Prints the last N entries (-o json: one JSON line each, as stored). With -f
it keeps printing new entries until interrupted.`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "n", Usage: "print the last `N` entries (at most 1000)", Value: 20},
			&cli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new entries"},
			&cli.BoolFlag{Name: "ids", Usage: "print ids only: do not look up the names of the secrets, credentials, users and projects an entry is about"},
		},
		Action: auditTail,
	},
	&cli.Command{
		Name:  "verify",
		Usage: "check the hash chain and the HSM signatures of the audit log",
		Description: `Asks the daemon to verify its whole audit log: every line's hash chain and
every checkpoint's signature by the HSM key, and that the log still reaches
the last checkpoint it wrote. Exits 1 and names the first bad entry when the
log was altered.

Offline, without a daemon: --file takes the audit directory (or one file of
it) and --jwks the daemon's JWK set (GET /.well-known/jwks.json, saved while
the daemon ran).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "file", Usage: "verify the audit directory (or one log file) at `PATH` without the daemon"},
			&cli.StringFlag{Name: "jwks", Usage: "`FILE` with the JWK set whose keys signed the checkpoints (with --file)"},
		},
		Action: auditVerify,
	},
)

func auditTail(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("audit tail takes no arguments")
	}
	n := c.Int("n")
	if n < 1 || n > audit.MaxEntries {
		return usagef("-n takes a number from 1 to %d", audit.MaxEntries)
	}
	cl, err := newClient(c)
	if err != nil {
		return err
	}
	page, err := cl.AuditTail(c.Context, n)
	if err != nil {
		return err
	}
	var names *nameResolver
	if !c.Bool("ids") {
		names = newNameResolver(c.Context, cl)
	}
	if err := printEntries(c, page.Entries, names); err != nil {
		return err
	}
	if !c.Bool("follow") {
		return nil
	}
	last := page.LastSeq
	tick := time.NewTicker(auditFollowEvery)
	defer tick.Stop()
	for {
		select {
		case <-c.Context.Done():
			return nil
		case <-tick.C:
		}
		for {
			page, err := cl.AuditEntries(c.Context, last, 0)
			if c.Context.Err() != nil {
				return nil
			}
			if err != nil {
				return err
			}
			if err := printEntries(c, page.Entries, names); err != nil {
				return err
			}
			if len(page.Entries) == 0 {
				break
			}
			var e audit.Entry
			if err := json.Unmarshal(page.Entries[len(page.Entries)-1], &e); err != nil {
				return fmt.Errorf("audit entry: %w", err)
			}
			last = e.Seq
		}
	}
}

// printEntries writes entries: JSON lines as stored (-o json), a YAML
// list, or one line each, with names beside the ids when names is set.
func printEntries(c *cli.Context, entries []json.RawMessage, names *nameResolver) error {
	w := c.App.Writer
	switch c.String("output") {
	case "json":
		for _, raw := range entries {
			if _, err := fmt.Fprintf(w, "%s\n", raw); err != nil {
				return err
			}
		}
		return nil
	case "yaml":
		if len(entries) == 0 {
			return nil
		}
		return render(c, entries, nil)
	}
	for _, raw := range entries {
		var e audit.Entry
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("audit entry: %w", err)
		}
		fmt.Fprintln(w, entryLine(e, names))
	}
	return nil
}

// entryLine is one entry in a line: seq, time, action, outcome, who, what;
// names (nil: none) puts names beside the ids the caller may read.
func entryLine(e audit.Entry, names *nameResolver) string {
	t := e.Time
	if pt, err := time.Parse(time.RFC3339Nano, e.Time); err == nil {
		t = pt.UTC().Format(time.RFC3339)
	}
	if e.Type == audit.TypeCheckpoint {
		return fmt.Sprintf("%-7d %s  checkpoint  signed kid=%s", e.Seq, t, e.KID)
	}
	parts := []string{fmt.Sprintf("%-7d %s  %-18s %-6s", e.Seq, t, e.Action, e.Outcome)}
	if e.Code != "" {
		parts = append(parts, e.Code)
	}
	if e.Count > 0 {
		parts = append(parts, fmt.Sprintf("×%d more", e.Count))
	}
	if e.Change > 0 {
		parts = append(parts, fmt.Sprintf("change %d", e.Change))
	}
	if p := principalString(e.Principal, names); p != "" {
		parts = append(parts, "by "+p)
	}
	keys := make([]string, 0, len(e.Target))
	for k := range e.Target {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		parts = append(parts, k+"="+e.Target[k]+names.label(k, e.Target[k]))
	}
	if e.Reason != "" {
		parts = append(parts, "("+e.Reason+")")
	}
	return strings.Join(parts, " ")
}

func principalString(p *audit.Principal, names *nameResolver) string {
	if p == nil {
		return ""
	}
	out := []string{p.Channel}
	num := func(name string, v *uint32) {
		if v != nil {
			out = append(out, name+"="+strconv.FormatUint(uint64(*v), 10))
		}
	}
	num("uid", p.UID)
	num("cid", p.CID)
	for _, kv := range [][2]string{{"vm", p.VM}, {"token", p.TokenKind}, {"token_id", p.TokenID}, {"user", p.User}, {"session", p.Session}} {
		if kv[1] != "" {
			out = append(out, kv[0]+"="+kv[1]+names.label(kv[0], kv[1]))
		}
	}
	return strings.Join(out, " ")
}

func auditVerify(c *cli.Context) error {
	if c.Args().Present() {
		return usagef("audit verify takes no arguments")
	}
	var rep audit.Report
	switch path, jwks := c.String("file"), c.String("jwks"); {
	case path == "" && jwks != "":
		return usagef("--jwks goes with --file")
	case path != "" && jwks == "":
		return usagef("--file needs --jwks FILE: the keys that signed the checkpoints")
	case path != "":
		var err error
		if rep, err = verifyOffline(c, path, jwks); err != nil {
			return err
		}
	default:
		cl, err := newClient(c)
		if err != nil {
			return err
		}
		if rep, err = cl.AuditVerify(c.Context); err != nil {
			return err
		}
	}
	err := render(c, rep, func(w io.Writer) { writeReport(w, rep) })
	if err == nil && !rep.OK {
		return &exitStatus{code: exitError}
	}
	return err
}

// verifyOffline verifies the audit directory or file at path with the
// keys in the JWK set file jwks.
func verifyOffline(c *cli.Context, path, jwks string) (audit.Report, error) {
	data, err := os.ReadFile(jwks)
	if err != nil {
		return audit.Report{}, fmt.Errorf("read the JWK set: %w", err)
	}
	keys, err := audit.ParseJWKS(data)
	if err != nil {
		return audit.Report{}, err
	}
	st, err := os.Stat(path)
	if err != nil {
		return audit.Report{}, fmt.Errorf("audit log: %w", err)
	}
	if st.IsDir() {
		return audit.VerifyDir(c.Context, path, keys)
	}
	return audit.VerifyFile(c.Context, path, keys)
}

func writeReport(w io.Writer, rep api.AuditReport) {
	if !rep.OK {
		fmt.Fprintf(w, "audit log BROKEN at entry %d: %s\n", rep.FirstBadSeq, rep.Reason)
		fmt.Fprintf(w, "entries %d to %d checked before it; %d checkpoints verified\n", rep.FirstSeq, rep.LastSeq, rep.Checkpoints)
		return
	}
	if rep.Entries == 0 {
		fmt.Fprintln(w, "audit log ok: empty")
		return
	}
	fmt.Fprintf(w, "audit log ok: entries %d to %d, %d checkpoints signed by the HSM key", rep.FirstSeq, rep.LastSeq, rep.Checkpoints)
	if rep.Checkpoints > 0 {
		fmt.Fprintf(w, " (the last at entry %d)", rep.LastCheckpoint)
	}
	fmt.Fprintln(w)
	if rep.Unsigned > 0 {
		fmt.Fprintf(w, "%d entries after the last checkpoint are covered by the hash chain only\n", rep.Unsigned)
	}
	if rep.Pruned > 0 {
		fmt.Fprintf(w, "entries 1 to %d were removed by retention, as signed records in the log say\n", rep.Pruned)
	}
	if rep.LastChange > 0 {
		fmt.Fprintf(w, "the last state change recorded is change %d\n", rep.LastChange)
	}
	for _, n := range rep.Notes {
		fmt.Fprintln(w, "note: "+n)
	}
}

// nameResolver puts names beside the ids of audit entries at display time:
// the audit log keeps ids only. It asks the API as the caller, so a name
// shows only where the caller may read the thing (a secret, credential,
// user or project); one look-up per id, remembered, a refusal or a
// deleted thing included.
type nameResolver struct {
	ctx   context.Context
	get   func(ctx context.Context, kind, id string) (string, error)
	cache map[string]string
}

func newNameResolver(ctx context.Context, cl *client.Client) *nameResolver {
	return &nameResolver{ctx: ctx, cache: map[string]string{}, get: func(ctx context.Context, kind, id string) (string, error) {
		switch kind {
		case "secret":
			s, err := cl.GetSecret(ctx, id)
			return s.DisplayName, err
		case "credential":
			cr, err := cl.GetCredential(ctx, id)
			return cr.Name, err
		case "user":
			u, err := cl.GetUser(ctx, id)
			return u.Name, err
		case "project":
			p, err := cl.GetProject(ctx, id)
			return p.Name, err
		}
		return "", nil
	}}
}

// label is ` "name"` for the id of a secret, credential, user or project
// the caller may read, else "".
func (r *nameResolver) label(kind, id string) string {
	if r == nil || id == "" || !looksLikeUUID(id) {
		return ""
	}
	switch kind {
	case "secret", "credential", "user", "project":
	default:
		return ""
	}
	key := kind + "/" + id
	name, ok := r.cache[key]
	if !ok {
		name, _ = r.get(r.ctx, kind, id) // forbidden or gone: no name
		r.cache[key] = name
	}
	if name == "" {
		return ""
	}
	return "(" + strconv.Quote(name) + ")"
}

// looksLikeUUID: 36 characters of hex digits and dashes.
func looksLikeUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f' || c == '-') {
			return false
		}
	}
	return true
}
